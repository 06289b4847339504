"""`engine serve` (issue 15, first part) end to end on loopback: a real uvicorn server in a thread, httpx as the
client, tiny models. Every endpoint, the error paths, determinism, the ePaper palettes, the bounded queue."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from engine.generators import create_generator
from engine.serve.palette import PALETTES
from engine.serve.service import Prompts
from serve_support import TINY_SG2, Server, free_port

REPO = Path(__file__).resolve().parents[1]
@pytest.fixture(scope="module")
def sg():
    s = Server(create_generator("stylegan2", size=64, device=torch.device("cpu"), options=dict(TINY_SG2)))
    yield s
    s.close()


def wait_until(cond, timeout=20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def png(resp) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(resp.content)).convert("RGB"))


def test_generate_is_deterministic_and_palettes_hold_only_panel_colours(sg):
    with httpx.Client(base_url=sg.url, timeout=60) as c:
        assert c.get("/health").json()["ok"] is True
        a = c.post("/generate", json={"seed": 7, "psi": 0.7})
        b = c.post("/generate", json={"seed": 7, "psi": 0.7})
        other = c.post("/generate", json={"seed": 8})
        assert png(a).shape == (64, 64, 3) and a.content == b.content and a.content != other.content
        assert a.headers["x-seed"] == "7"
        for name in PALETTES:
            img = png(c.post(f"/generate?palette={name}&panel=120x90", json={"seed": 7}))
            assert img.shape == (90, 120, 3)
            assert {tuple(p) for p in img.reshape(-1, 3)} <= set(PALETTES[name].output)
        assert png(c.post("/generate", json={"seed": 7, "size": "96x54"})).shape == (54, 96, 3)
        meta = c.post("/generate?format=json", json={"seed": 9}).json()
        assert meta["seed"] == 9 and meta["seconds"] > 0
        assert png(c.get(meta["image"])).shape == (64, 64, 3)
        assert png(c.get("/latest?palette=bw")).shape == (448, 600, 3)
        new = c.post("/generate/new")
        assert png(new).shape == (64, 64, 3) and "x-seed" in new.headers
        m = c.get("/metrics").json()
        assert m["images_served"] >= 8 and m["queue_length"] == 0 and m["mean_latency_seconds"] > 0
        assert "/generate" in c.get("/openapi.json").json()["paths"] and c.get("/docs").status_code == 200


def test_bad_input_is_a_clear_4xx_and_never_reaches_the_queue(sg):
    with httpx.Client(base_url=sg.url, timeout=60) as c:
        served = c.get("/metrics").json()["images_served"]
        cases = [
            (c.post("/generate?palette=sepia", json={}), 422, "unknown palette 'sepia'"),
            (c.post("/generate?palette=bw&panel=9x", json={}), 422, "WIDTHxHEIGHT"),
            (c.post("/generate?panel=600x448", json={}), 422, "panel= goes with palette="),
            (c.post("/generate", json={"size": "99999x10"}), 422, "WIDTHxHEIGHT"),
            (c.post("/generate", json={"steps": 9}), 422, "less than or equal to 4"),
            (c.post("/generate", json={"seed": -1}), 422, "greater than or equal to 0"),
            (c.post("/generate", json={"colour": "red"}), 422, "Extra inputs are not permitted"),
            (c.post("/generate", content=b"not json", headers={"content-type": "application/json"}), 422, "JSON"),
            (c.post("/generate", content=b"x" * 100_000, headers={"content-type": "application/json"}), 413, "at most"),
            (c.get("/images/99999.png"), 404, "no image 99999"),
        ]
        for resp, status, text in cases:
            assert resp.status_code == status and text in resp.text, (resp.status_code, resp.text)
        assert c.get("/metrics").json()["images_served"] == served


def test_token_and_a_full_queue():
    gen = create_generator("stylegan2", size=64, device=torch.device("cpu"), options=dict(TINY_SG2))
    s = Server(gen, token="s3cret", queue_length=1)
    try:
        release = threading.Event()
        real = s.service.render
        s.service.render = lambda req: (release.wait(30), real(req))[1]  # hold the worker: the queue fills
        auth = {"Authorization": "Bearer s3cret"}
        with httpx.Client(base_url=s.url, timeout=60) as c:
            assert c.get("/health").status_code == 200  # open: the frame checks the server is up
            assert c.post("/generate", json={}).status_code == 401
            assert c.post("/generate", json={}, headers={"Authorization": "Bearer nope"}).status_code == 401
            results = {}

            def send(i):
                results[i] = httpx.post(f"{s.url}/generate", json={"seed": i}, headers=auth, timeout=60)

            threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
                time.sleep(0.3)
            full = [r for r in results.values() if r.status_code == 429]
            assert full and all("Retry-After" in r.headers for r in full) and "queue is full" in full[0].text
            release.set()
            for t in threads:
                t.join(60)
            assert sum(r.status_code == 200 for r in results.values()) == 2  # the one rendering and the one queued
            assert c.get("/metrics", headers=auth).json()["images_served"] == 2
    finally:
        s.close()


def test_concurrent_requests_are_all_answered_in_the_order_they_came(sg):
    """Six frames ask while the worker is busy: each gets its own picture (its seed), and the queue serves them first
    come, first served (the image ids follow the order of arrival)."""
    release, busy = threading.Event(), threading.Event()
    real = sg.service.render
    sg.service.render = lambda req: (busy.set(), release.wait(30), real(req))[2]
    try:
        results = {}

        def send(i):
            results[i] = httpx.post(f"{sg.url}/generate", json={"seed": 1000 + i}, timeout=60)

        threads = []
        for i in range(6):
            threads.append(threading.Thread(target=send, args=(i,)))
            threads[-1].start()
            # The next one leaves only once this one is in: the first is taken by the (held) worker, the rest wait.
            assert wait_until(lambda: busy.is_set() and sg.service.queue_length() == i), (i, sg.service.queue_length())
        release.set()
        for t in threads:
            t.join(60)
    finally:
        sg.service.render = real
    assert all(results[i].status_code == 200 for i in range(6))
    assert [int(results[i].headers["x-seed"]) for i in range(6)] == [1000 + i for i in range(6)]
    ids = [int(results[i].headers["x-image-id"]) for i in range(6)]
    assert ids == sorted(ids) and len(set(ids)) == 6


def test_auto_mode_makes_pictures_on_its_own(sg):
    with httpx.Client(base_url=sg.url, timeout=60) as c:
        before = c.get("/metrics").json()["images_served"]
        assert c.post("/auto", json={"on": True, "interval_seconds": 5}).json()["on"] is True
        deadline = time.monotonic() + 30
        while c.get("/metrics").json()["images_served"] == before and time.monotonic() < deadline:
            time.sleep(0.5)
        assert c.get("/metrics").json()["images_served"] > before
        assert c.post("/auto", json={"on": False}).json()["on"] is False
        assert c.post("/auto", json={"on": True, "interval_seconds": 1}).status_code == 422  # at least 5 s


def test_diffusion_same_prompt_and_seed_same_image(tmp_path):
    from tiny_diffusion import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    s = Server(create_generator(f"diffusion:{model}", device=torch.device("cpu")))
    try:
        with httpx.Client(base_url=s.url, timeout=120) as c:
            body = {"prompt": "a red house by the sea", "seed": 5, "steps": 2}
            a, b = c.post("/generate", json=body), c.post("/generate", json=body)
            other = c.post("/generate", json={**body, "prompt": "a fox in the snow"})
            assert png(a).shape == (64, 64, 3) and a.content == b.content and a.content != other.content
            assert a.headers["x-prompt"] == "a red house by the sea"
            new = c.post("/generate/new?format=json").json()
            assert new["prompt"].count(",") == 2  # subject, style, modifier from the prompt file
    finally:
        s.close()


def test_cli_starts_and_refuses_bad_options(tmp_path):
    p = subprocess.run([sys.executable, "-m", "engine", "serve", "--prompts", str(tmp_path / "none.toml")], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "none.toml: no such file" in p.stderr
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--size", "64", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "engine serve: stylegan2" in line and f":{port}/docs" in line, line
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert png(httpx.post(f"http://127.0.0.1:{port}/generate", json={"seed": 1}, timeout=60)).shape[2] == 3
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_transcribe_hears_the_prompt_words_with_the_grammar(tmp_path):
    pytest.importorskip("pocketsphinx")
    from engine.serve.transcribe import choose

    wav = tmp_path / "say.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "paint a red house by the sea"], check=True)  # 22050 Hz mono
    prompts = Prompts.load(None)
    recogniser, why = choose("auto", vocabulary=prompts.vocabulary())
    assert "restricted to" in why
    gen = create_generator("stylegan2", size=64, device=torch.device("cpu"), options=dict(TINY_SG2))
    s = Server(gen, recogniser=recogniser, note=why)
    try:
        with httpx.Client(base_url=s.url, timeout=60) as c:
            heard = c.post("/transcribe", content=wav.read_bytes(), headers={"content-type": "audio/wav"}).json()
            assert {"paint", "red", "house", "sea"} <= set(heard["text"].split()), heard
            # The same words as a 48 kHz stereo recording (what a USB microphone gives): resampled, still heard.
            import wave

            with wave.open(str(wav)) as w:
                x = np.frombuffer(w.readframes(w.getnframes()), "<i2")
            t = np.arange(int(len(x) * 48000 / 22050)) * (22050 / 48000)
            y = np.interp(t, np.arange(len(x)), x).astype("<i2")
            buf = io.BytesIO()
            with wave.open(buf, "wb") as w:
                w.setnchannels(2), w.setsampwidth(2), w.setframerate(48000)
                w.writeframes(np.repeat(y, 2).tobytes())
            heard = c.post("/transcribe", content=buf.getvalue(), headers={"content-type": "audio/wav"}).json()
            assert {"red", "house", "sea"} <= set(heard["text"].split()), heard
            bad = c.post("/transcribe", content=b"RIFF nonsense", headers={"content-type": "audio/wav"})
            assert bad.status_code == 422 and "not a PCM WAV" in bad.text
            big = c.post("/transcribe", content=b"0" * (11 * 1024 * 1024), headers={"content-type": "audio/wav"})
            assert big.status_code == 413
    finally:
        s.close()
    off = Server(create_generator("stylegan2", size=64, device=torch.device("cpu"), options=dict(TINY_SG2)),
                 note="no speech recogniser: pocketsphinx is not installed: pip install pocketsphinx")
    try:
        r = httpx.post(f"{off.url}/transcribe", content=wav.read_bytes(), timeout=30)
        assert r.status_code == 503 and "pip install pocketsphinx" in r.text
    finally:
        off.close()
