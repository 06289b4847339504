"""Show controls on a running engine over real UDP: freeze, blackout, live fps and live network swap (a file, a set
list, a bad file), with the frame times measured on the render thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import diffusers  # noqa: F401  (loaded at collection, before any GL context: Triton's LLVM after Mesa's crashes)
import numpy as np
import pytest
import torch
from pythonosc.udp_client import SimpleUDPClient

from engine.clock import FrameTime
from engine.control import Controller
from engine.control.osc import OscServer
from engine.generators import create_generator
from engine.generators.base import Generator
from engine.loop import Engine, RunOptions
from engine.params import ParamStore

CPU = torch.device("cpu")
TINY = dict(channel_base=512, channel_max=16, calibrate=False)


class Counting(Generator):
    """The real generator, with its calls counted (freeze must not call it)."""

    def __init__(self, inner: Generator):
        super().__init__(inner.height, inner.width, inner.device)
        self.inner, self.name, self.calls = inner, inner.name, 0

    def __call__(self, snap, when, source=None):
        self.calls += 1
        return self.inner(snap, when, source)

    def close(self):
        self.inner.close()


class Probe(Controller):
    """On the render thread after each frame: when it ended, the output's pixels and which generator ran."""

    def __init__(self, engine_ref: list):
        self.engine_ref = engine_ref
        self.frames: list[tuple[float, int, bytes, int]] = []
        self.lock = threading.Lock()

    def after_frame(self, when: FrameTime, frame_stats) -> None:
        e = self.engine_ref[0]
        pixels = e.pipeline.output.texture.read()
        with self.lock:
            self.frames.append((time.monotonic(), when.index, pixels, id(e.generator)))

    def snapshot(self):
        with self.lock:
            return list(self.frames)


class Show:
    def __init__(self, fps=10.0, size=64, spec="stylegan2", **run):
        self.store = ParamStore()
        self.osc = OscServer("127.0.0.1", 0)
        ref: list = []
        self.probe = Probe(ref)
        options = dict(TINY) if spec == "stylegan2" else {}
        gen = Counting(create_generator(spec, size=size, device=CPU, options=options))
        self.gen = gen
        opts = RunOptions(size=run.pop("output", None), sinks=["null"], fps=fps, clock="wall", quiet=True, **run)
        self.engine = Engine(opts, self.store, [self.osc, self.probe], generator=gen)
        ref.append(self.engine)
        # Setup and frames on one thread: the GL context is current on the thread that made it.
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(60) and self.error is None, self.error
        self.client = SimpleUDPClient("127.0.0.1", self.osc.port)

    def _run(self):
        try:
            self.engine.setup()
        except BaseException as e:
            self.error = e
            raise
        finally:
            self.ready.set()
        try:
            self.engine.run()
        finally:
            self.engine.close()

    def send(self, address, *args):
        self.client.send_message(address, list(args) if len(args) != 1 else args[0])

    def wait(self, cond, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            time.sleep(0.02)
        return False

    def frames_after(self, t0):
        return [f for f in self.probe.snapshot() if f[0] > t0]

    def close(self):
        self.engine.stop_event.set()
        self.thread.join(30)


@pytest.fixture
def show():
    shows = []

    def make(**kw):
        s = Show(**kw)
        shows.append(s)
        return s

    yield make
    for s in shows:
        s.close()


def test_freeze_holds_the_frame_without_calling_the_generator_and_resumes(show):
    s = show(fps=20.0)
    assert s.wait(lambda: len(s.probe.snapshot()) >= 5)
    s.send("/engine/output/freeze", 1)
    assert s.wait(lambda: s.engine.stats.counters["frozen_frames"] >= 2)
    calls = s.gen.calls
    t0 = time.monotonic()
    time.sleep(0.6)
    held = s.frames_after(t0)
    assert len(held) >= 8, "sinks must keep getting frames at the show rate while frozen"
    assert s.gen.calls == calls, "the generator ran while frozen"
    assert len({f[2] for f in held}) == 1, "the held frame changed"
    s.send("/engine/output/freeze", 0)
    assert s.wait(lambda: s.gen.calls > calls + 3)
    assert len({f[2] for f in s.frames_after(time.monotonic() - 0.1)}) >= 1
    # The generator's clock paused with the show: it resumes where it stopped, not ~0.6 s further on.
    assert s.engine._paused >= 0.5


def test_blackout_fades_to_black_and_back_and_opacity_is_a_master(show):
    s = show(fps=20.0)
    s.send("/engine/output/fade_seconds", 0.3)
    assert s.wait(lambda: len(s.probe.snapshot()) >= 3)
    s.send("/engine/output/blackout", 1)
    time.sleep(0.8)
    last = np.frombuffer(s.probe.snapshot()[-1][2], np.uint8).reshape(64, 64, 4)
    assert last[..., :3].max() == 0, "blackout should reach black after fade_seconds"
    levels = [np.frombuffer(f[2], np.uint8)[0::4].mean() for f in s.frames_after(time.monotonic() - 0.8)]
    assert any(0 < v for v in levels[:3]), "a fade, not a cut"
    s.send("/engine/output/blackout", 0)
    s.send("/engine/output/opacity", 0.5)
    time.sleep(0.8)
    s.send("/engine/output/freeze", 1)
    time.sleep(0.3)
    half = np.frombuffer(s.probe.snapshot()[-1][2], np.uint8).reshape(64, 64, 4)[..., :3].astype(int)
    s.send("/engine/output/opacity", 1.0)
    time.sleep(0.3)
    full = np.frombuffer(s.probe.snapshot()[-1][2], np.uint8).reshape(64, 64, 4)[..., :3].astype(int)
    assert full.max() > 0 and np.abs(half - full / 2).max() <= 1.5  # the held frame at half level


def test_output_fps_paces_the_show_live(show):
    s = show(fps=20.0)
    assert s.wait(lambda: len(s.probe.snapshot()) >= 10)
    s.send("/engine/output/fps", 5.0)
    time.sleep(0.5)
    t0 = time.monotonic()
    time.sleep(2.0)
    got = s.frames_after(t0)
    assert 8 <= len(got) <= 12, len(got)  # ~5 fps
    s.send("/engine/output/fps", 20.0)
    time.sleep(0.5)
    t0 = time.monotonic()
    time.sleep(1.0)
    assert 16 <= len(s.frames_after(t0)) <= 23


def _save_network(path: Path, init_seed: int, size: int = 64) -> Path:
    g = create_generator("stylegan2", size=size, device=CPU, options=dict(TINY, init_seed=init_seed))
    g.save(path)
    return path


def _gaps(frames):
    return [b[0] - a[0] for a, b in zip(frames, frames[1:])]


def test_live_network_swap_crossfades_without_a_frame_gap(show, tmp_path, caplog):
    net_b = _save_network(tmp_path / "b.safetensors", init_seed=5)
    fps = 10.0
    s = show(fps=fps)
    s.send("/engine/stylegan/swap_seconds", 1.0)
    assert s.wait(lambda: len(s.probe.snapshot()) >= 5)
    first = s.probe.snapshot()[-1][3]
    t0 = time.monotonic()
    s.send("/engine/stylegan/network", str(net_b))
    assert s.wait(lambda: s.engine.swap.swaps == 1), s.engine.swap.stats()
    time.sleep(0.3)
    during = s.frames_after(t0 - 0.2)
    assert s.probe.snapshot()[-1][3] != first, "the new network did not take over"
    # The show never stopped: no frame gap beyond two frame periods while loading and crossfading.
    assert max(_gaps(during)) <= 2.0 / fps, _gaps(during)
    # A crossfade, not a cut: consecutive frames change gradually as the new network comes in.
    assert s.engine.swap.stats()["failures"] == 0 and s.engine.swap.last_load_seconds is not None

    # A bad file: one log line, the show goes on with the current network.
    bad = tmp_path / "broken.pkl"
    bad.write_bytes(b"not a pickle at all")
    current = s.probe.snapshot()[-1][3]
    t1 = time.monotonic()
    s.send("/engine/stylegan/network", str(bad))
    assert s.wait(lambda: s.engine.swap.failures == 1)
    time.sleep(0.4)
    after = s.frames_after(t1)
    assert len(after) >= 3 and all(f[3] == current for f in after)
    assert "broken.pkl" in (s.engine.swap.last_error or "")
    s.send("/engine/stylegan/network", str(tmp_path / "missing.safetensors"))
    assert s.wait(lambda: s.engine.swap.failures == 2)
    assert "not found" in s.engine.swap.last_error


def test_set_list_swaps_by_index_and_the_wrong_family_is_refused(show, tmp_path):
    sets = tmp_path / "set"
    sets.mkdir()
    _save_network(sets / "01-first.safetensors", init_seed=1)
    _save_network(sets / "02-second.safetensors", init_seed=2)
    (sets / "notes.txt").write_text("not a network")
    s = show(fps=10.0)
    s.send("/engine/stylegan/swap_seconds", 0.0)
    s.send("/engine/stylegan/set_list", str(sets))
    assert s.wait(lambda: len(s.probe.snapshot()) >= 3)
    s.send("/engine/stylegan/network_index", 1)
    assert s.wait(lambda: s.engine.swap.swaps == 1)
    s.send("/engine/stylegan/network_index", 2)  # modulo the list: the first again
    assert s.wait(lambda: s.engine.swap.swaps == 2)
    s.send("/engine/diffusion/model", str(tmp_path))
    assert s.wait(lambda: s.engine.swap.failures == 1)
    assert "the show runs a stylegan generator" in s.engine.swap.last_error
    t = time.monotonic()
    assert s.wait(lambda: len(s.frames_after(t)) >= 2)  # still rendering


def test_diffusion_model_swap_over_udp(show, tmp_path):
    from tiny_diffusion import save_tiny_model

    a = save_tiny_model(tmp_path / "a")
    b = save_tiny_model(tmp_path / "b", seed=1)
    s = show(fps=8.0, spec=f"diffusion:{a}")
    s.send("/engine/diffusion/swap_seconds", 0.5)
    assert s.wait(lambda: len(s.probe.snapshot()) >= 3)
    first = s.probe.snapshot()[-1][3]
    t0 = time.monotonic()
    s.send("/engine/diffusion/model", str(b))
    assert s.wait(lambda: s.engine.swap.swaps == 1, timeout=60), s.engine.swap.stats()
    assert s.probe.snapshot()[-1][3] != first
    assert max(_gaps(s.frames_after(t0))) <= 2.0 / 8.0 + 0.05, _gaps(s.frames_after(t0))
    s.send("/engine/diffusion/model", str(tmp_path / "nowhere"))
    assert s.wait(lambda: s.engine.swap.failures == 1)
    s.send("/engine/stylegan/network", str(tmp_path / "x.pkl"))
    assert s.wait(lambda: s.engine.swap.failures == 2)
    assert "the show runs a diffusion generator" in s.engine.swap.last_error
