"""The HTTP side of `engine serve` (FastAPI). Endpoints:

    POST /generate          JSON {prompt?, negative_prompt?, seed?, psi?, steps?, guidance?, size?} -> PNG
                            ?palette=inky7|inky7-saturated|bw|bwr&panel=600x448: fitted and dithered for an ePaper
                            panel; ?format=json: the prompt, seed and timings, and /images/ID.png for the picture
    POST /generate/new      the same with a new prompt from --prompts (seed 004's subjects x styles x modifiers);
                            the prompt is in the X-Prompt header (or the JSON)
    GET  /latest            the last picture (same palette options; ?format=json: its id, prompt and seed, for a
                            frame that polls); 404 before the first. Every picture response has X-Image-Id
    POST /auto              JSON {on, interval_seconds}: the server makes a new picture on its own; the frame polls /latest
    GET  /images/ID.png     one of the recent pictures (the last 16)
    POST /transcribe        a short WAV (the frame's recording) -> {text} (engine.serve.transcribe); 503 naming what
                            to install when no recogniser is there
    GET  /health, /metrics  liveness with the generator; queue length, images served, failures, mean latency
    GET  /docs              the OpenAPI schema, rendered

Bad input (a body that is not JSON, an unknown palette, an absurd size, an out-of-range value, an oversized body) is a
4xx with one clear message and never reaches the queue; a full queue is 429 with Retry-After. --token makes every
endpoint but /health ask for `Authorization: Bearer TOKEN`.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import io
import random
import threading

from fastapi import FastAPI, HTTPException, Query, Request as HttpRequest
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import UsageError
from engine.params import ParamError
from engine.serve.palette import DEFAULT_PANEL, PALETTES, fit_to_panel, for_panel, parse_panel
from engine.serve.service import ArtService, Prompts, QueueFull, RendererUnavailable, Request, Result, params_for

MAX_BODY = 64 * 1024
MAX_AUDIO = 10 * 1024 * 1024  # /transcribe: 30 s of 48 kHz stereo 16-bit is 5.8 MB
MAX_SIZE = 2048
KEEP_IMAGES = 16


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field(None, max_length=1000)
    negative_prompt: str = Field("", max_length=1000)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    psi: float | None = Field(None, ge=-10.0, le=10.0)
    steps: int | None = Field(None, ge=1, le=4)
    guidance: float | None = Field(None, ge=0.0, le=20.0)
    size: str | None = Field(None, description="WIDTHxHEIGHT of the picture (cover-fitted), up to 2048 per side")


class AutoBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    on: bool
    interval_seconds: float = Field(600.0, ge=5.0, le=86400.0)


def create_app(service: ArtService, *, prompts: Prompts | None = None, token: str | None = None,
               seed: int | None = None, recogniser=None, recogniser_note: str = "") -> FastAPI:
    app = FastAPI(title="engine serve", description="Art on demand for an ePaper picture frame (seed 004).")
    rng = random.Random(seed)
    images: collections.OrderedDict[int, Result] = collections.OrderedDict()
    auto = {"on": False, "interval": 600.0, "event": threading.Event(), "thread": None}

    @app.middleware("http")
    async def guard(request: HttpRequest, call_next):
        if token is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return JSONResponse({"detail": "missing or wrong bearer token (Authorization: Bearer TOKEN)"}, status_code=401)
        length = request.headers.get("content-length")
        limit = MAX_AUDIO if request.url.path == "/transcribe" else MAX_BODY
        if length is not None and length.isdigit() and int(length) > limit:
            return JSONResponse({"detail": f"the body is {int(length)} bytes; at most {limit}"}, status_code=413)
        return await call_next(request)

    async def run(req: Request) -> Result:
        try:
            params_for(req, 0 if req.seed is None else req.seed)  # out-of-range values: 422 before the queue
        except ParamError as e:
            raise HTTPException(422, str(e)) from None
        try:
            fut = service.submit(req)
        except QueueFull as e:
            raise HTTPException(429, str(e), headers={"Retry-After": str(int(e.retry_after + 0.5))}) from None
        try:
            result = await asyncio.wrap_future(fut)
        except RendererUnavailable as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "10"}) from None
        except Exception as e:  # a failed render is this request's error, said in one line
            raise HTTPException(500, f"the picture failed: {type(e).__name__}: {e}") from None
        images[result.id] = result
        while len(images) > KEEP_IMAGES:
            images.popitem(last=False)
        return result

    def picture(result: Result, palette: str | None, panel: str | None, size: str | None) -> bytes:
        """The PNG with the request's options applied (checked before the request was queued)."""
        rgb = result.rgb
        if size:
            rgb = fit_to_panel(rgb, parse_panel(size))
        if palette:
            rgb = for_panel(rgb, palette, parse_panel(panel) if panel else DEFAULT_PANEL)
        if rgb is result.rgb:
            return result.png
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        return buf.getvalue()

    def check_picture_options(palette: str | None, panel: str | None, size: str | None) -> None:
        """Every picture option, before anything is queued: a bad one is the request's 422."""
        try:
            if palette is not None and palette not in PALETTES:
                raise UsageError(f"unknown palette {palette!r}; use {', '.join(PALETTES)}")
            if panel:
                if not palette:
                    raise UsageError("panel= goes with palette=")
                parse_panel(panel)
            if size:
                w, h = parse_panel(size)
                if max(w, h) > MAX_SIZE:
                    raise UsageError(f"size {size}: at most {MAX_SIZE} per side")
        except UsageError as e:
            raise HTTPException(422, str(e)) from None

    def respond(result: Result, fmt: str | None, palette, panel, size) -> Response:
        headers = {"X-Image-Id": str(result.id), "X-Seed": str(result.seed), "X-Seconds": f"{result.seconds:.3f}"}
        if result.prompt is not None:
            headers["X-Prompt"] = result.prompt.encode("ascii", "replace").decode()
        if fmt == "json":
            return JSONResponse({"id": result.id, "prompt": result.prompt, "seed": result.seed,
                                 "seconds": round(result.seconds, 3), "queued_seconds": round(result.queued_seconds, 3),
                                 "image": f"/images/{result.id}.png"}, headers=headers)
        return Response(picture(result, palette, panel, size), media_type="image/png", headers=headers)

    @app.post("/generate", responses={200: {"content": {"image/png": {}}}})
    async def generate(body: GenerateBody, palette: str | None = Query(None), panel: str | None = Query(None),
                       format: str | None = Query(None, pattern="^(png|json)$")):
        check_picture_options(palette, panel, body.size)
        req = Request(prompt=body.prompt, negative_prompt=body.negative_prompt, seed=body.seed, psi=body.psi,
                      steps=body.steps, guidance=body.guidance)
        return respond(await run(req), format, palette, panel, body.size)

    @app.post("/generate/new", responses={200: {"content": {"image/png": {}}}})
    async def generate_new(palette: str | None = Query(None), panel: str | None = Query(None),
                           format: str | None = Query(None, pattern="^(png|json)$")):
        if prompts is None:
            raise HTTPException(404, "no prompt file: start engine serve with --prompts FILE.toml")
        check_picture_options(palette, panel, None)
        return respond(await run(Request(prompt=prompts.new(rng))), format, palette, panel, None)

    @app.get("/latest", responses={200: {"content": {"image/png": {}}}})
    async def latest(palette: str | None = Query(None), panel: str | None = Query(None),
                     format: str | None = Query(None, pattern="^(png|json)$")):
        check_picture_options(palette, panel, None)
        if service.latest is None:
            raise HTTPException(404, "no picture yet: POST /generate or turn /auto on")
        return respond(service.latest, format, palette, panel, None)

    @app.get("/images/{image_id}.png", responses={200: {"content": {"image/png": {}}}})
    async def image(image_id: int):
        result = images.get(image_id)
        if result is None:
            raise HTTPException(404, f"no image {image_id} (the last {KEEP_IMAGES} are kept)")
        return Response(result.png, media_type="image/png")

    def auto_loop(stop: threading.Event) -> None:
        while not stop.wait(auto["interval"]):
            req = Request(prompt=prompts.new(rng) if prompts is not None else None)
            try:
                service.submit(req).result()
            except Exception:
                pass  # a full queue or a failed picture: the next interval tries again

    @app.post("/auto")
    async def set_auto(body: AutoBody):
        old = auto["thread"]
        if old is not None:
            auto["event"].set()
        auto.update(on=body.on, interval=body.interval_seconds, event=threading.Event(), thread=None)
        if body.on:
            t = threading.Thread(target=auto_loop, args=(auto["event"],), name="serve-auto", daemon=True)
            auto["thread"] = t
            t.start()
        return {"on": body.on, "interval_seconds": body.interval_seconds}

    @app.post("/transcribe", openapi_extra={"requestBody": {"content": {"audio/wav": {"schema": {"type": "string",
                                                                                              "format": "binary"}}}}})
    async def transcribe(request: HttpRequest):
        from engine.serve.transcribe import read_wav

        if recogniser is None:
            raise HTTPException(503, recogniser_note or "no speech recogniser: pip install pocketsphinx")
        body = await request.body()
        if len(body) > MAX_AUDIO:
            raise HTTPException(413, f"the body is {len(body)} bytes; at most {MAX_AUDIO}")
        try:
            pcm = read_wav(body)
        except UsageError as e:
            raise HTTPException(422, str(e)) from None
        text = await asyncio.to_thread(recogniser, pcm)
        return {"text": text, "seconds": round(len(pcm) / 16000, 2), "recogniser": recogniser.name}

    @app.get("/health")
    async def health():
        return {"ok": True, **service.describe()}

    @app.get("/metrics")
    async def metrics():
        return {"queue_length": service.queue_length(), "images_served": service.served, "failed": service.failed,
                "mean_latency_seconds": round(service.mean_latency(), 3), "auto": auto["on"]}

    app.state.stop_auto = lambda: auto["event"].set()
    return app

