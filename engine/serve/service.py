"""The art service behind `engine serve`: a renderer, worker threads, a bounded queue.

Requests become jobs on a queue of bounded length (a full queue is the caller's 429, never an unbounded backlog);
worker threads render them in order: one with the engine's generator in this process, on its device (the GPU path
for the model; the picture then comes to the host once, as a PNG must), or several sending to Triton
(engine.serve.triton), whose dynamic batcher merges them. Same prompt (or StyleGAN psi) and seed -> the same image:
every job starts the generator from the request's own parameters (diffusion: txt2img, all steps in one call, no
stream state carried between requests).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
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

from engine.errors import UsageError
from engine.params import Params, ParamStore

log = logging.getLogger("engine.serve")


class QueueFull(Exception):
    def __init__(self, retry_after: float):
        super().__init__(f"the queue is full; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


class RendererUnavailable(RuntimeError):
    """The renderer cannot be reached (engine serve --triton: the Triton server is down): the request's 503, worth
    retrying, unlike a failed render (500)."""


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


def params_for(req: Request, seed: int) -> Params:
    """The request as one still's parameter snapshot: the latent holds still (no walk), diffusion renders txt2img with
    all its steps in one call and no stream state. Raises ParamError (a ValueError) for an out-of-range value: the
    request's 422, checked before it is queued. Both families' fields are set; each generator reads its own."""
    store = ParamStore()
    values: dict[str, Any] = {"latent.seed": seed, "latent.motion": "still", "diffusion.seed": seed,
                              "diffusion.mode": "txt2img", "diffusion.denoise_batch": False, "diffusion.seed_every": 0,
                              "diffusion.latent_smoothing": 0.0, "diffusion.similarity_threshold": 0.0,
                              "diffusion.prompt": req.prompt or Params().diffusion.prompt,
                              "diffusion.negative_prompt": req.negative_prompt or ""}
    if req.psi is not None:
        values["latent.psi"] = req.psi
    if req.steps is not None:
        values["diffusion.steps"] = req.steps
    if req.guidance is not None:
        values["diffusion.guidance"] = req.guidance
    store.update(values)
    return store.snapshot()


@dataclass
class Rendered:
    rgb: np.ndarray  # (H, W, 3) uint8
    prompt: str | None  # the prompt it was made from (diffusion), None for StyleGAN
    seed: int


class LocalRenderer:
    """Renders requests with an engine generator in this process (its device: the GPU path on CUDA). A batch of
    requests is one call of Generator.stills: StyleGAN renders it as one batch on the device."""

    concurrency = 1  # one generator: one request (or batch) at a time

    def __init__(self, generator):
        self.generator = generator
        self.diffusion = generator.name == "diffusion"

    def describe(self) -> dict[str, Any]:
        g = self.generator
        return {"generator": g.name, "size": [g.width, g.height], "device": str(g.device)}

    def render_batch(self, reqs: list[Request]) -> list[Rendered]:
        """reqs: each with its seed set. One device->host copy for the whole batch, as a PNG must."""
        snaps = [params_for(r, int(r.seed)) for r in reqs]
        with torch.inference_mode():
            images = self.generator.stills(snaps)  # (N, 3, H, W) in [-1, 1]
        rgb = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Rendered(np.ascontiguousarray(rgb[i]), snap.diffusion.prompt if self.diffusion else None, int(r.seed))
                for i, (r, snap) in enumerate(zip(reqs, snaps))]

    def close(self) -> None:
        pass


class ArtService:
    """The queue in front of a renderer (LocalRenderer, or engine.serve.triton.TritonRenderer): renderer.concurrency
    worker threads take jobs in order; a local generator has one, Triton several (its dynamic batcher merges what they
    send). A bare engine generator is wrapped in a LocalRenderer."""

    def __init__(self, renderer, *, queue_length: int = 8):
        if not hasattr(renderer, "render_batch"):  # an engine generator: render it here
            renderer = LocalRenderer(renderer)
        self.renderer = renderer
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_length)))
        self._stop = threading.Event()
        self.latest: Result | None = None
        self.served = 0
        self.failed = 0
        self._latency_total = 0.0
        self._next_id = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name=f"serve-worker-{i}", daemon=True)
                         for i in range(max(1, int(getattr(renderer, "concurrency", 1))))]
        for t in self._threads:
            t.start()

    # -- the queue ------------------------------------------------------------------------------------------------
    def submit(self, req: Request) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self._queue.put_nowait((req, fut, time.monotonic()))
        except queue.Full:
            raise QueueFull(max(1.0, self.mean_latency() * self._queue.qsize() / len(self._threads))) from None
        return fut

    def queue_length(self) -> int:
        return self._queue.qsize()

    def mean_latency(self) -> float:
        return self._latency_total / self.served if self.served else 0.0

    def describe(self) -> dict[str, Any]:
        return self.renderer.describe()

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
                done = self.render(req)
                from PIL import Image
                import io

                buf = io.BytesIO()
                Image.fromarray(done.rgb).save(buf, format="PNG")
                seconds = time.monotonic() - t0
                with self._lock:
                    self._next_id += 1
                    result = Result(buf.getvalue(), done.rgb, done.prompt, done.seed, seconds, t0 - queued_at, self._next_id)
                    self.latest = result
                    self.served += 1
                    self._latency_total += seconds + (t0 - queued_at)
                fut.set_result(result)
            except Exception as e:  # one bad request is that request's error, never the worker's end
                with self._lock:
                    self.failed += 1
                log.error("serve: a request failed: %s: %s", type(e).__name__, e)
                fut.set_exception(e)

    def render(self, req: Request) -> Rendered:
        """One request (a random seed when it names none)."""
        if req.seed is None:
            req = dataclasses.replace(req, seed=random.randrange(2**32))
        return self.renderer.render_batch([req])[0]

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self.renderer.close()
