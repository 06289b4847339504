"""Live network swap (seed 003's load button): a new network loads on a background thread while the current one
keeps rendering, then the two images crossfade and the new network takes over.

Requests are live parameters (engine.params):
    stylegan.network PATH          a StyleGAN network file
    stylegan.network_index N       entry N of the stylegan.set_list folder (name order, modulo its length)
    diffusion.model MODEL          a local diffusers folder or a hub id in the local Hugging Face cache
A change of one of them is a request; the starting values are not (the show starts with --generator). The latest
request wins: one arriving while another loads is started when that one finishes, and the finished one is dropped.

A request that cannot be served (a missing file, a broken pickle, a folder that is not a model, the wrong family for
the running generator) is one log line; the show goes on with the network it has.

The crossfade is a blend of the two images (lerp over swap_seconds of generator time): the two networks may differ
in architecture, resolution and training, so their weights cannot in general be blended (stylegan.blend_file does
that for networks of one architecture). During the crossfade both networks render each frame.

The builder (given by the loop) makes the new generator at the frame's size and applies the show's backend, on the
loader thread; a warm-up frame is rendered there too, so the first frame on the render thread is not a slow one.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from engine.clock import FrameTime
from engine.control.ratelimit import LogLimiter
from engine.errors import EngineError
from engine.generators import STYLEGAN_SUFFIXES, Generator
from engine.params import Params
from engine.paths import user_path

log = logging.getLogger("engine.swap")

Builder = Callable[[str], Generator]


def family(generator: Generator) -> str:
    """'diffusion' or 'stylegan': which swap requests a running generator takes."""
    return "diffusion" if generator.name == "diffusion" else "stylegan"


def set_list_entry(folder: str, index: int) -> Path:
    """Entry `index` (modulo the count) of a folder of network files, in name order. EngineError when the folder
    is missing or holds no network."""
    if not folder:
        raise EngineError("stylegan.network_index needs stylegan.set_list, a folder of network files")
    path = user_path(folder, "stylegan.set_list")
    if not path.is_dir():
        raise EngineError(f"set list {path} is not a folder")
    networks = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in STYLEGAN_SUFFIXES)
    if not networks:
        raise EngineError(f"set list {path} holds no network file ({', '.join(STYLEGAN_SUFFIXES)})")
    return networks[index % len(networks)]


class NetworkSwap:
    """Watches the swap requests in each frame's snapshot, loads on a thread, crossfades, hands the new generator
    over. Used by the render loop only (one thread); the loader thread only builds and reports back."""

    def __init__(self, current: Generator, build: Builder, start: Params):
        self.family = family(current)
        self.build = build
        self._seen = self._requests(start)  # the starting values are not requests
        self._lock = threading.Lock()
        self._loading: str | None = None  # the spec being built on the loader thread
        self._pending: str | None = None  # the latest request while one loads
        self._done: tuple[str, Generator | None, str | None, float] | None = None  # (spec, generator, error, seconds)
        self._thread: threading.Thread | None = None
        self.incoming: Generator | None = None
        self.incoming_spec = ""
        self._fade_start = 0.0
        self.swaps = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_load_seconds: float | None = None
        self._log = LogLimiter(log, interval=2.0)

    # -- requests -------------------------------------------------------------------------------------------------
    @staticmethod
    def _requests(snap: Params) -> tuple[str, str, int, str]:
        s = snap.stylegan
        return (s.network, s.set_list, s.network_index, snap.diffusion.model)

    def poll(self, snap: Params) -> None:
        """Once per frame, on the render thread: turn a changed request parameter into a load."""
        now = self._requests(snap)
        if now == self._seen:
            return
        before, self._seen = self._seen, now
        network, set_list, index, model = now
        try:
            if model != before[3] and model:
                self._check_family("diffusion", f"diffusion.model {model}")
                spec = f"diffusion:{model}"
            elif index >= 0 and (index != before[2] or set_list != before[1]):
                self._check_family("stylegan", "stylegan.network_index")
                spec = str(set_list_entry(set_list, index))
            elif network != before[0] and network:
                self._check_family("stylegan", f"stylegan.network {network}")
                spec = network
            else:
                return  # a request cleared, or a set list given before its index
        except EngineError as e:
            self._fail(str(e))
            return
        self._request(spec)

    def _check_family(self, wanted: str, what: str) -> None:
        if wanted != self.family:
            raise EngineError(f"{what} ignored: the show runs a {self.family} generator (start it with that --generator)")

    def _request(self, spec: str) -> None:
        with self._lock:
            if self._loading is not None:
                self._pending = spec  # latest wins: started when the current load finishes
                return
            self._start(spec)

    def _start(self, spec: str) -> None:
        self._loading = spec
        log.info("network swap: loading %s while the show goes on", spec)
        self._thread = threading.Thread(target=self._load, args=(spec,), name="network-swap", daemon=True)
        self._thread.start()

    def _load(self, spec: str) -> None:
        t0 = time.perf_counter()
        gen, error = None, None
        try:
            gen = self.build(spec)
        except EngineError as e:
            error = str(e)
        except Exception as e:  # a broken file must not end the show: any failure is a log line
            error = f"{type(e).__name__}: {e}"
        with self._lock:
            self._done = (spec, gen, error, time.perf_counter() - t0)

    # -- per frame ------------------------------------------------------------------------------------------------
    def ready(self, t: float) -> None:
        """On the render thread: take a finished load (start the crossfade at generator time t, or report the
        failure), and start the next pending request."""
        with self._lock:
            done, self._done = self._done, None
            if done is None:
                return
            self._loading = None
            pending, self._pending = self._pending, None
            if pending is not None:
                self._start(pending)
        spec, gen, error, seconds = done
        if error is not None:
            self._fail(f"{spec}: {error}")
            return
        if pending is not None:  # superseded while it loaded
            gen.close()
            return
        if self.incoming is not None:  # a crossfade still running: the newer network takes its place
            self.incoming.close()
        self.last_load_seconds = seconds
        self.incoming, self.incoming_spec, self._fade_start = gen, spec, t
        log.info("network swap: %s loaded in %.2f s; crossfading", spec, seconds)

    def mix(self, t: float, seconds: float) -> float:
        """The new network's share of the image at generator time t (1 = the swap is complete)."""
        if self.incoming is None:
            return 0.0
        if seconds <= 0.0:
            return 1.0
        return min(1.0, max(0.0, (t - self._fade_start) / seconds))

    def render(self, current: Generator, snap: Params, when: FrameTime, source: torch.Tensor | None,
               seconds: float) -> tuple[torch.Tensor, Generator | None]:
        """This frame's image, (1, 3, H, W) in current's dtype. Returns (image, the generator that takes over now or
        None). Call only while `incoming` is set."""
        assert self.incoming is not None
        a = self.mix(when.t, seconds)
        new_image = self.incoming(snap, when, source)
        if a >= 1.0:
            done, self.incoming = self.incoming, None
            self.swaps += 1
            log.info("network swap: now rendering %s", self.incoming_spec)
            return new_image, done
        old_image = current(snap, when, source)
        return torch.lerp(old_image, new_image.to(old_image.dtype), a), None

    def _fail(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        self._log("swap", "network swap failed: %s; the show goes on with the current network", reason,
                  level=logging.ERROR)

    def stats(self) -> dict:
        return {"swaps": self.swaps, "failures": self.failures, "last_error": self.last_error,
                "last_load_seconds": self.last_load_seconds}

    def close(self) -> None:
        if self.incoming is not None:
            self.incoming.close()
            self.incoming = None
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout=0.1)  # a load still running is a daemon: it dies with the process
