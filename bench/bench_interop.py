"""Benchmark the generator -> GL texture path: StyleGAN2 (the embedded default at full config-f width) rendered and
written into an RGBA8 texture, for

    eager+staged      eager generator, device -> host -> glTexSubImage (what the seed projects do)
    eager+interop     eager generator, CUDA-GL interop (no host copy)
    compiled+interop  torch.compile + CUDA graphs (engine.backends "compile"), CUDA-GL interop

at each size: median and p99 frame time (each frame synchronised, so latency into the texture), throughput fps
(frames back to back, one sync at the end), per-stage GPU time from CUDA events (generate, upload), the interop copy
alone, and the machine (device, driver, clocks, temperature via NVML). Variants that cannot run here (no CUDA,
interop refused) are listed as skipped with the reason.

    python bench/bench_interop.py --sizes 512 1024                       # on a GPU machine
    python bench/bench_interop.py --sizes 64 --frames 3 --warmup 1      # CPU: proves the script (staged only)

Targets (H100) it reports against: compiled+interop >= 500 fps at 1024 and >= 1000 fps at 512, interop copy
< 0.1 ms at 1024, compiled+interop >= 10x eager+staged.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine_info, summarize_ms, write_result  # noqa: E402  (before torch: engine.threads)
import torch  # noqa: E402

from engine.backends import apply_backend  # noqa: E402
from engine.clock import FrameTime  # noqa: E402
from engine.generators import create_generator  # noqa: E402
from engine.params import Params  # noqa: E402
from engine.upload import StagedUpload  # noqa: E402

VARIANTS = ("eager+staged", "eager+interop", "compiled+interop")
TARGETS = {
    "compiled+interop fps at 1024": (">=", 500.0),
    "compiled+interop fps at 512": (">=", 1000.0),
    "interop copy ms at 1024": ("<", 0.1),
    "compiled+interop / eager+staged fps": (">=", 10.0),
}


def gl_context(device: torch.device):
    """Headless EGL context; on CUDA on the EGL device that is the CUDA device (interop needs the same GPU)."""
    import moderngl

    kwargs: dict[str, Any] = {"standalone": True, "backend": "egl", "require": 330}
    note = None
    if device.type == "cuda":
        from engine.egl_device import egl_device_for_cuda

        index, note = egl_device_for_cuda(device.index if device.index is not None else torch.cuda.current_device())
        if index is not None:
            kwargs["device_index"] = index
    return moderngl.create_context(**kwargs), note


def build_generator(size: int, device: torch.device, backend: str, widths: dict[str, int]):
    t0 = time.perf_counter()
    gen = create_generator("stylegan2", size=size, device=device, options=dict(widths))
    gen, desc = apply_backend(gen, backend)
    return gen, desc, time.perf_counter() - t0


def make_uploader(kind: str, device: torch.device, ctx, texture):
    """(uploader, None) or (None, why not)."""
    if kind == "staged":
        up = StagedUpload(device)
    else:
        if device.type != "cuda":
            return None, "no CUDA device"
        from engine.interop import select_uploader

        up, reason = select_uploader(device, ctx)
        if up.name != "interop":
            return None, f"interop refused: {reason}"
    up.prepare(texture, "write")
    return up, None


def run_frames(gen, uploader, texture, ctx, frames: int, warmup: int) -> dict[str, Any]:
    cuda = gen.device.type == "cuda"
    snap = Params()

    def frame(i: int) -> None:
        with torch.inference_mode():
            image = gen(snap, FrameTime(i / 60.0, i, 1 / 60.0))
        uploader.upload(image, texture)

    for i in range(warmup):
        frame(i)
    if cuda:
        torch.cuda.synchronize()
    ctx.finish()

    # Latency: every frame synchronised (device and GL), stages timed with CUDA events read after the loop.
    wall, gen_ms, up_ms = [], [], []
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(frames)] if cuda else []
    for i in range(frames):
        t0 = time.perf_counter()
        if cuda:
            e0, e1, e2 = events[i]
            e0.record()
            with torch.inference_mode():
                image = gen(snap, FrameTime(i / 60.0, warmup + i, 1 / 60.0))
            e1.record()
            uploader.upload(image, texture)
            e2.record()
            torch.cuda.synchronize()
        else:
            with torch.inference_mode():
                image = gen(snap, FrameTime(i / 60.0, warmup + i, 1 / 60.0))
            t1 = time.perf_counter()
            uploader.upload(image, texture)
            t2 = time.perf_counter()
            gen_ms.append((t1 - t0) * 1e3)
            up_ms.append((t2 - t1) * 1e3)
        ctx.finish()
        wall.append((time.perf_counter() - t0) * 1e3)
    if cuda:
        gen_ms = [a.elapsed_time(b) for a, b, _ in events]
        up_ms = [b.elapsed_time(c) for _, b, c in events]

    # Throughput: back to back, one sync at the end (what a show running flat out gets).
    t0 = time.perf_counter()
    for i in range(frames):
        frame(warmup + frames + i)
    if cuda:
        torch.cuda.synchronize()
    ctx.finish()
    total = time.perf_counter() - t0
    lat = summarize_ms(wall)
    return {
        "frame_ms": lat,
        "fps_latency_mode": 1e3 / lat["median"] if lat["median"] else None,
        "fps": frames / total,
        "stage_ms": {"generate": summarize_ms(gen_ms), "upload": summarize_ms(up_ms),
                     "timer": "CUDA events" if cuda else "host clock"},
        "host_copies_per_frame": uploader.host_copies_per_frame,
    }


def time_copy(uploader, texture, size: int, device: torch.device, n: int) -> dict[str, Any]:
    """The upload alone (layout kernel + copy) and, for interop, the array copy alone, from CUDA events."""
    image = torch.rand(1, 3, size, size, device=device) * 2 - 1
    out: dict[str, Any] = {}

    def timed(fn) -> dict[str, Any]:
        for _ in range(10):
            fn()
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for a, b in ev:
            a.record()
            fn()
            b.record()
        torch.cuda.synchronize()
        return summarize_ms([a.elapsed_time(b) for a, b in ev])

    out["upload_ms"] = timed(lambda: uploader.upload(image, texture))
    if uploader.name == "interop":
        reg = uploader._registration(texture, "write")
        out["copy_only_ms"] = timed(lambda: uploader._copy(reg, to_texture=True))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--copy-iters", type=int, default=500)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--channel-base", type=int, default=32768, help="config-f: 32768")
    ap.add_argument("--channel-max", type=int, default=512, help="config-f: 512")
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/<cuda|cpu>/interop.json")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    widths = {"channel_base": args.channel_base, "channel_max": args.channel_max}
    result: dict[str, Any] = {"machine": machine_info(), "device": str(device), "widths": widths,
                              "frames": args.frames, "warmup": args.warmup, "sizes": {}, "skipped": []}
    try:
        from importlib.metadata import version

        result["machine"]["cuda_bindings"] = version("cuda-bindings")
    except Exception:
        result["machine"]["cuda_bindings"] = None
    try:
        import triton

        result["machine"]["triton"] = triton.__version__
    except Exception:
        result["machine"]["triton"] = None

    out = args.out or Path(__file__).resolve().parent / "results" / ("cuda" if device.type == "cuda" else "cpu") / "interop.json"
    ctx, egl_note = gl_context(device)
    result["gl"] = {k: ctx.info.get(k) for k in ("GL_RENDERER", "GL_VENDOR", "GL_VERSION")}
    result["gl"]["egl_device_note"] = egl_note
    print(f"device {device}, GL {result['gl']['GL_RENDERER']}")

    for size in args.sizes:
        per: dict[str, Any] = {}
        texture = ctx.texture((size, size), 4, dtype="f1")
        generators: dict[str, tuple] = {}
        for variant in args.variants:
            backend, path = variant.split("+")
            if path == "interop" and device.type != "cuda":
                result["skipped"].append({"size": size, "variant": variant, "reason": "no CUDA device"})
                print(f"{size}px {variant}: skipped (no CUDA device)")
                continue
            if backend == "compiled" and device.type != "cuda":
                result["skipped"].append({"size": size, "variant": variant, "reason": "no CUDA device (CUDA graphs)"})
                print(f"{size}px {variant}: skipped (no CUDA device)")
                continue
            uploader, why = make_uploader(path, device, ctx, texture)
            if uploader is None:
                result["skipped"].append({"size": size, "variant": variant, "reason": why})
                print(f"{size}px {variant}: skipped ({why})")
                continue
            try:
                if backend not in generators:
                    generators[backend] = build_generator(size, device, "compile" if backend == "compiled" else "eager", widths)
                gen, desc, setup_s = generators[backend]
                r = run_frames(gen, uploader, texture, ctx, args.frames, args.warmup)
                r.update(backend=desc, setup_s=setup_s, uploader=uploader.name)
                if device.type == "cuda":
                    r["copy"] = time_copy(uploader, texture, size, device, args.copy_iters)
                per[variant] = r
                print(f"{size}px {variant}: {r['fps']:.1f} fps, frame median {r['frame_ms']['median']:.3f} ms "
                      f"p99 {r['frame_ms']['p99']:.3f} ms ({desc})")
            except Exception as e:  # one variant failing (a compile error, OOM) must not lose the others
                why = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                result["skipped"].append({"size": size, "variant": variant, "reason": f"failed: {why}"})
                print(f"{size}px {variant}: failed ({why})")
            finally:
                uploader.close()
            # Written after every variant: a run stopped by a time limit keeps what it measured.
            result["sizes"][str(size)] = per
            result["targets"] = evaluate_targets(result["sizes"])
            write_result(out, result)
        texture.release()
        generators.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    result["targets"] = evaluate_targets(result["sizes"])
    write_result(out, result)  # with the variants skipped after the last one measured
    for name, t in result["targets"].items():
        print(f"target {name}: {t['status']}" + (f" ({t['value']:.3g})" if t["value"] is not None else ""))
    ctx.release()
    return 0


def evaluate_targets(sizes: dict[str, Any]) -> dict[str, Any]:
    def fps(size: str, variant: str):
        return sizes.get(size, {}).get(variant, {}).get("fps")

    values: dict[str, float | None] = {
        "compiled+interop fps at 1024": fps("1024", "compiled+interop"),
        "compiled+interop fps at 512": fps("512", "compiled+interop"),
        "interop copy ms at 1024": sizes.get("1024", {}).get("compiled+interop", sizes.get("1024", {}).get("eager+interop", {}))
        .get("copy", {}).get("copy_only_ms", {}).get("median"),
    }
    ratios = [fps(s, "compiled+interop") / fps(s, "eager+staged") for s in sizes
              if fps(s, "compiled+interop") and fps(s, "eager+staged")]
    values["compiled+interop / eager+staged fps"] = min(ratios) if ratios else None
    out = {}
    for name, (op, goal) in TARGETS.items():
        v = values[name]
        status = "not measured" if v is None else ("met" if (v >= goal if op == ">=" else v < goal) else "missed")
        out[name] = {"goal": f"{op} {goal:g}", "value": v, "status": status}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
