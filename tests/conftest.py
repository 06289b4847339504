"""Shared fixtures. GL tests use a real OpenGL context: Mesa's llvmpipe through EGL on CI, the NVIDIA driver on a
GPU machine. GPU-only tests are marked `gpu` and skip cleanly without CUDA."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


@pytest.fixture(scope="session")
def gl():
    from engine.gl import GL

    ctx = GL.headless()
    yield ctx
    ctx.release()


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
