"""Benchmark the default stream (built-in StyleGAN2 -> upload -> shaders -> null sink) through the real render
loop, at several sizes. Prints fps and per-stage milliseconds and writes a JSON result with the machine.

    python bench/bench_stream.py --seconds 10 --sizes 256 512 [--device auto] [--out bench/results/cpu/stream.json]

Warm-up frames are excluded; stage times are host milliseconds (on CUDA the generate/upload stages also carry
device time from CUDA events in stage_gpu_ms_median). Runs unchanged on a GPU machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_threads, machine_info, summarize_ms, write_result  # noqa: E402

from engine.clock import FrameTime  # noqa: E402
from engine.loop import Engine, RunOptions  # noqa: E402
from engine.stats import STAGES  # noqa: E402


def bench_size(size: int, seconds: float, warmup: int, device: str, backend: str) -> dict:
    opts = RunOptions(size=size, sinks=["null"], device=device, backend=backend, quiet=True, fps=0)
    eng = Engine(opts)
    eng.setup()
    try:
        t0 = time.monotonic()
        for i in range(warmup):
            eng.step(FrameTime(t=time.monotonic() - t0, index=i))
        eng.stats.__init__(device_type=eng.device.type)  # drop warm-up frames from the record
        i = warmup
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            eng.step(FrameTime(t=time.monotonic() - t0, index=i))
            i += 1
        s = eng.stats.summary()
        frame = summarize_ms(list(eng.stats.frame_ms))
        stages = {st: summarize_ms(list(eng.stats.stage_ms[st])) for st in STAGES}
        return {
            "size": size, "frames": s["frames"], "seconds": round(time.monotonic() - start, 3),
            "fps_median": 1000.0 / frame["median"] if frame["median"] else None,
            "fps_mean": s["fps_mean"], "frame_ms": frame, "stage_ms": stages,
            "stage_gpu_ms_median": s.get("stage_gpu_ms_median"),
            "generator": eng.info["generator"], "upload": eng.info["upload"], "backend": eng.info["backend"],
            "gl": eng.info["gl"], "device": eng.info["device_name"],
        }
    finally:
        eng.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=int, default=5, help="frames run before measuring")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--out", type=Path, default=None, help="JSON result path")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the engine's choice, engine/threads.py)")
    a = ap.parse_args()
    cpu_threads.apply(a.threads)
    results = []
    for size in a.sizes:
        r = bench_size(size, a.seconds, a.warmup, a.device, a.backend)
        results.append(r)
        st = "  ".join(f"{k} {v['median']:.2f}" for k, v in r["stage_ms"].items())
        print(f"{size:5d} px  {r['fps_median']:8.2f} fps (median)  frame p50 {r['frame_ms']['median']:.2f} ms  "
              f"p99 {r['frame_ms']['p99']:.2f} ms  | {st}  [{r['device']}, {r['upload']['path']}]")
    if a.out:
        write_result(a.out, {"benchmark": "stream", "machine": machine_info(), "results": results})


if __name__ == "__main__":
    main()
