"""Issue 15's scale-out, end to end: `engine triton` serving a tiny StyleGAN2 on PyTriton's bundled tritonserver (on
the CPU), and `engine serve --triton URL` in front of it, over loopback.

The Triton side runs from .venv-triton (made from the system's own python3 by .ci/install-triton: PyTriton's stub
embeds the system libpython); ENGINE_TRITON_PYTHON names another interpreter. CI makes it, so there a missing one
fails; elsewhere it skips with the command that makes it."""

from __future__ import annotations

import concurrent.futures
import io
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import UsageError
from engine.generators import create_generator
from engine.serve.service import LocalRenderer, Request
from engine.serve.triton import TritonRenderer, decode_requests, encode_request
from serve_support import Server, free_port

REPO = Path(__file__).resolve().parents[1]


def triton_python() -> str:
    py = os.environ.get("ENGINE_TRITON_PYTHON") or str(REPO / ".venv-triton" / "bin" / "python")
    ok = Path(py).exists() and subprocess.run([py, "-c", "import pytriton, engine"], capture_output=True).returncode == 0
    if not ok:
        why = f"no Triton environment at {py} (bash .ci/install-triton makes it)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return py


def metric(text: str, name: str) -> float:
    m = re.search(rf'^{name}\{{model="engine",version="1"\}} (\S+)$', text, re.M)
    assert m, f"{name} not in Triton's metrics"
    return float(m.group(1))


class TritonProcess:
    """`engine triton` in the Triton environment, on free loopback ports, until it is ready."""

    def __init__(self, generator: str, cache: Path, *extra: str):
        py = triton_python()
        http, grpc, metrics = free_port(), free_port(), free_port()
        env = dict(os.environ, ENGINE_CACHE_DIR=str(cache))
        env.pop("VIRTUAL_ENV", None)
        self.proc = subprocess.Popen(
            [py, "-m", "engine", "triton", "--generator", generator, "--max-batch", "8", "--queue-delay-ms", "100",
             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--threads", "1", *extra],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{http}"
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if urllib.request.urlopen(f"{self.url}/v2/models/engine/ready", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.proc.kill()
        pytest.fail(f"engine triton did not become ready: {self.proc.communicate()[0][-3000:]}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    t = TritonProcess("stylegan2", tmp_path_factory.mktemp("cache"), "--size", "64")
    yield t.url, t.metrics_url, t.proc
    t.close()


def test_the_wire_format_round_trips():
    reqs = [Request(prompt="a red fox", negative_prompt="blur", seed=3, psi=0.5, steps=2, guidance=1.5),
            Request(seed=2**32 - 1)]
    batch = {k: np.concatenate([encode_request(r)[k] for r in reqs]) for k in encode_request(reqs[0])}
    assert decode_requests(batch) == reqs


def test_serve_through_triton_batches_and_matches_local_rendering(triton):
    url, metrics_url, proc = triton
    renderer = TritonRenderer(url, concurrency=8)
    assert renderer.describe()["size"] == [64, 64]
    local = LocalRenderer(create_generator("stylegan2", output=(64, 64), device=torch.device("cpu")))
    before = urllib.request.urlopen(metrics_url).read().decode()
    s = Server(renderer, queue_length=32)
    try:
        with httpx.Client(base_url=s.url, timeout=120) as c:
            health = c.get("/health").json()
            assert health["generator"] == "triton:engine" and health["size"] == [64, 64]

            # Sixteen frames ask at once: each gets its own picture (its seed), and Triton merged them into batches.
            def ask(seed):
                r = httpx.post(f"{s.url}/generate", json={"seed": seed, "psi": 0.7}, timeout=120)
                assert r.status_code == 200, r.text
                return int(r.headers["X-Seed"]), np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))

            with concurrent.futures.ThreadPoolExecutor(16) as ex:
                answers = list(ex.map(ask, range(100, 116)))
            assert [seed for seed, _ in answers] == list(range(100, 116))
            # Same seed -> the same image as this process renders it; batched on Triton or alone here (bit-exact on
            # the CPU; on a GPU a different GEMM batch may move a value by one level).
            for seed, rgb in answers[:3]:
                mine = local.render_batch([Request(seed=seed, psi=0.7)])[0].rgb
                assert np.abs(rgb.astype(int) - mine.astype(int)).max() <= 1
            assert len({rgb.tobytes() for _, rgb in answers}) == 16

            # The ePaper path works through Triton as through a local generator.
            r = c.post("/generate?palette=bw&panel=80x48", json={"seed": 5})
            img = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
            assert img.shape == (48, 80, 3) and set(np.unique(img)) <= {0, 255}
            new = c.post("/generate/new?format=json").json()
            assert new["prompt"] is None and new["seed"] >= 0  # StyleGAN: the picture is the seed's, as when local
            assert c.get("/metrics").json()["images_served"] == 18
    finally:
        s.close()
    after = urllib.request.urlopen(metrics_url).read().decode()
    inferences = metric(after, "nv_inference_count") - metric(before, "nv_inference_count")
    executions = metric(after, "nv_inference_exec_count") - metric(before, "nv_inference_exec_count")
    assert inferences == 18
    assert executions < 16, f"Triton ran {executions:g} executions for 18 requests: no dynamic batching"
    assert proc.poll() is None


def test_a_bad_triton_address_is_one_clear_line(triton):
    url, _, _ = triton
    with pytest.raises(UsageError, match="no Triton server answers there"):
        TritonRenderer(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UsageError, match="no ready model 'nope'"):
        TritonRenderer(url, model="nope")
    with pytest.raises(UsageError, match="give Triton's HTTP address"):
        TritonRenderer("http://a b")


def test_engine_triton_refuses_an_interpreter_the_stub_cannot_embed():
    """PyTriton's stub embeds the system libpython: from another Python build engine triton says so at once (one
    line, what to do) instead of failing inside Triton. Checked in the Triton environment against a pretend version:
    the real ldd and libpython probe, a different running Python."""
    py = triton_python()
    code = ("from engine.serve.triton import check_stub_python; check_stub_python(); "
            "check_stub_python(running='3.11.99')")
    r = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "this environment runs Python 3.11.99" in last and "bash .ci/install-triton" in last, r.stderr


def test_diffusion_through_triton_carries_prompts_both_ways(tmp_path):
    """A tiny diffusion model on Triton: the request's prompt goes in as BYTES, the prompt used comes back, and the
    picture is the one this process renders for the same prompt and seed."""
    from tiny_diffusion import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    t = TritonProcess(f"diffusion:{model}", tmp_path / "cache")
    try:
        renderer = TritonRenderer(t.url, concurrency=2)
        req = Request(prompt="a red house by the sea", seed=5, steps=2)
        remote = renderer.render_batch([req])[0]
        assert remote.prompt == "a red house by the sea"
        assert renderer.render_batch([Request(seed=5)])[0].prompt  # no prompt: the engine's default prompt, named
        local = LocalRenderer(create_generator(f"diffusion:{model}", device=torch.device("cpu"))).render_batch([req])[0]
        assert np.abs(remote.rgb.astype(int) - local.rgb.astype(int)).max() <= 1
        other = renderer.render_batch([Request(prompt="a fox in the snow", seed=5, steps=2)])[0]
        assert not np.array_equal(other.rgb, remote.rgb)
    finally:
        t.close()


def test_engine_serve_with_triton_refuses_local_generator_options_and_a_dead_address():
    r = subprocess.run([sys.executable, "-m", "engine", "serve", "--triton", "http://127.0.0.1:1", "--generator", "diffusion:",
                        "--transcribe", "none"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--generator with --triton" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "engine", "serve", "--triton", f"127.0.0.1:{free_port()}", "--transcribe", "none"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no Triton server answers there" in r.stderr and "engine triton --generator" in r.stderr, r.stderr


def test_stylegan_renders_a_batch_of_stills_as_each_alone():
    """Generator.stills (what a merged Triton batch calls): one batched pass for several seeds and psi values, the
    same pixels as one render each; snapshots that differ in more than seed and psi fall back to one call each."""
    import dataclasses

    from engine.serve.service import params_for

    g = create_generator("stylegan2", size=64, device=torch.device("cpu"), options=dict(channel_base=512, channel_max=16, calibrate=False))
    snaps = [params_for(Request(seed=s, psi=p), s) for s, p in ((1, 0.7), (2, 1.0), (3, -0.5), (1, 0.7))]
    with torch.inference_mode():
        batch = g.stills(snaps)
        alone = torch.cat([g.stills([s]) for s in snaps])
    assert batch.shape == (4, 3, 64, 64)
    assert torch.allclose(batch, alone, atol=1e-5) and torch.equal(batch[0], batch[3])
    mixed = [snaps[0], dataclasses.replace(snaps[1], latent=dataclasses.replace(snaps[1].latent, noise_mode="none"))]
    with torch.inference_mode():
        assert torch.allclose(g.stills(mixed), torch.cat([g.stills([s]) for s in mixed]), atol=1e-5)


def test_engine_triton_refuses_a_taken_port_and_a_bad_model_name_in_one_line():
    import socket

    py = triton_python()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([py, "-m", "engine", "triton", "--http-port", str(port)], capture_output=True, text=True,
                           timeout=120, cwd=REPO)
    assert r.returncode == 2 and f"--http-port {port}: cannot listen there" in r.stderr, r.stderr
    r = subprocess.run([py, "-m", "engine", "triton", "--model", "a b"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and "--model 'a b'" in r.stderr, r.stderr


def test_triton_going_away_is_a_503_to_retry_and_serve_keeps_running(tmp_path):
    t = TritonProcess("stylegan2", tmp_path / "cache", "--size", "64")
    s = Server(TritonRenderer(t.url, concurrency=2))
    try:
        with httpx.Client(base_url=s.url, timeout=120) as c:
            assert c.post("/generate", json={"seed": 1}).status_code == 200
            t.proc.kill()
            t.proc.wait(30)
            r = c.post("/generate", json={"seed": 2})
            assert r.status_code == 503 and r.headers["retry-after"] and "cannot be reached" in r.json()["detail"], r.text
            assert c.get("/health").status_code == 200  # the front end is still up
    finally:
        s.close()
        t.close()
