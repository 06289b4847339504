"""The art service behind `engine serve`: one generator, one worker thread, a bounded queue.

Requests become jobs on a queue of bounded length (a full queue is the caller's 429, never an unbounded backlog);
one worker thread renders them in order with the engine's generator, on its device (the GPU path for the model;
the picture then comes to the host once, as a PNG must). Same prompt (or StyleGAN psi) and seed -> the same image:
every job starts the generator from the request's own parameters (diffusion: txt2img, all steps in one call, no
stream state carried between requests).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import random
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.clock import FrameTime
from engine.errors import UsageError
from engine.params import Params, ParamStore

log = logging.getLogger("engine.serve")


class QueueFull(Exception):
    def __init__(self, retry_after: float):
        super().__init__(f"the queue is full; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass
class Request:
    prompt: str | None = None
    negative_prompt: str = ""
    seed: int | None = None
    psi: float | None = None
    steps: int | None = None
    guidance: float | None = None


@dataclass
class Result:
    png: bytes
    rgb: np.ndarray  # (H, W, 3) uint8, before any palette
    prompt: str | None
    seed: int
    seconds: float
    queued_seconds: float
    id: int = 0


@dataclass
class Prompts:
    """seed 004's prompt file: a new prompt is one subject, one style and one modifier, at random."""

    subjects: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    modifiers: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path | None) -> "Prompts":
        p = Path(path) if path else Path(__file__).resolve().parents[1] / "examples" / "prompts" / "epaper.toml"
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"--prompts {p}: no such file") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise UsageError(f"--prompts {p}: {e}") from None
        out = cls(*(list(data.get(k, [])) for k in ("subjects", "styles", "modifiers")))
        if not out.subjects or not all(isinstance(x, str) for x in out.subjects + out.styles + out.modifiers):
            raise UsageError(f"--prompts {p}: needs subjects = [...] (and may have styles, modifiers): lists of text")
        return out

    def new(self, rng: random.Random) -> str:
        parts = [rng.choice(self.subjects)]
        if self.styles:
            parts.append(rng.choice(self.styles))
        if self.modifiers:
            parts.append(rng.choice(self.modifiers))
        return ", ".join(parts)

    #: How a spoken request starts ("paint a red house by the sea"): in the recogniser's grammar with the file's words.
    REQUEST_WORDS = ("paint", "draw", "show", "me", "make", "picture", "of", "a", "an", "the", "please")

    def vocabulary(self) -> list[str]:
        words = {w.strip(".,;:!?").lower() for line in self.subjects + self.styles + self.modifiers for w in line.split()}
        return sorted(w for w in words | set(self.REQUEST_WORDS) if w.isalpha())


class ArtService:
    def __init__(self, generator, *, queue_length: int = 8):
        self.generator = generator
        self.diffusion = generator.name == "diffusion"
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_length)))
        self._stop = threading.Event()
        self.latest: Result | None = None
        self.served = 0
        self.failed = 0
        self._latency_total = 0.0
        self._next_id = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="serve-worker", daemon=True)
        self._thread.start()

    # -- the queue ------------------------------------------------------------------------------------------------
    def submit(self, req: Request) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self._queue.put_nowait((req, fut, time.monotonic()))
        except queue.Full:
            raise QueueFull(max(1.0, self.mean_latency() * self._queue.qsize())) from None
        return fut

    def queue_length(self) -> int:
        return self._queue.qsize()

    def mean_latency(self) -> float:
        return self._latency_total / self.served if self.served else 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                req, fut, queued_at = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if not fut.set_running_or_notify_cancel():
                continue
            t0 = time.monotonic()
            try:
                rgb, prompt, seed = self.render(req)
                from PIL import Image
                import io

                buf = io.BytesIO()
                Image.fromarray(rgb).save(buf, format="PNG")
                seconds = time.monotonic() - t0
                with self._lock:
                    self._next_id += 1
                    result = Result(buf.getvalue(), rgb, prompt, seed, seconds, t0 - queued_at, self._next_id)
                    self.latest = result
                    self.served += 1
                    self._latency_total += seconds + (t0 - queued_at)
                fut.set_result(result)
            except Exception as e:  # one bad request is that request's error, never the worker's end
                self.failed += 1
                log.error("serve: a request failed: %s: %s", type(e).__name__, e)
                fut.set_exception(e)

    # -- rendering (the worker thread) ----------------------------------------------------------------------------
    def params_for(self, req: Request, seed: int) -> Params:
        store = ParamStore()
        values: dict[str, Any] = {"latent.seed": seed, "latent.motion": "still", "diffusion.seed": seed}
        if req.psi is not None:
            values["latent.psi"] = req.psi
        if self.diffusion:
            values.update({"diffusion.mode": "txt2img", "diffusion.denoise_batch": False, "diffusion.seed_every": 0,
                           "diffusion.latent_smoothing": 0.0, "diffusion.similarity_threshold": 0.0,
                           "diffusion.prompt": req.prompt or Params().diffusion.prompt,
                           "diffusion.negative_prompt": req.negative_prompt or ""})
            if req.steps is not None:
                values["diffusion.steps"] = req.steps
            if req.guidance is not None:
                values["diffusion.guidance"] = req.guidance
        store.update(values)  # ParamError (a ValueError) for an out-of-range value: the request's 422
        return store.snapshot()

    def render(self, req: Request) -> tuple[np.ndarray, str | None, int]:
        seed = int(req.seed) if req.seed is not None else random.randrange(2**32)
        snap = self.params_for(req, seed)
        g = self.generator
        with torch.inference_mode():
            image = g(snap, FrameTime(t=0.0, index=0, dt=0.0), None)  # (1, 3, H, W) in [-1, 1]
        rgb = ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return np.ascontiguousarray(rgb), (snap.diffusion.prompt if self.diffusion else None), seed

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

