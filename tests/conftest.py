"""Shared fixtures. GL tests use a real OpenGL context: Mesa's llvmpipe through EGL on CI, the NVIDIA driver on a
GPU machine. GPU-only tests are marked `gpu` and skip cleanly without CUDA."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks are all overhead: on a shared 2-core machine two intra-op threads wait on each other (measured
    here: the tiny UNet 38 ms with 1 thread, 1.6 s with 2 while other jobs ran). Modules that run tiny models ask for it with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
