"""Pictures per second through `engine triton` (PyTriton's tritonserver, dynamic batching) against the same generator
rendered in this process, at 1, 2, 4 and 8 requests in flight.

    python bench/bench_triton.py [--generator stylegan2] [--size 256] [--requests 48] [--out bench/results/cpu/triton-stylegan2-256.json]

The Triton side runs from .venv-triton (bash .ci/install-triton; --triton-python names another). For each level of
concurrency: a warm-up, then --requests requests, each one's latency (host clock: a picture is tens of milliseconds
or more) and the wall time of the whole level; Triton's own Prometheus counters give how many executions served them
(the mean merged batch). In-process figures: one picture per call, and --max-batch seeds per Generator.stills call.
The machine is recorded with the result.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import cpu_threads, machine_info, summarize_ms, write_result  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def counters(url: str) -> tuple[float, float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()

    def one(name: str) -> float:
        m = re.search(rf'^{name}\{{model="engine",version="1"\}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    return one("nv_inference_count"), one("nv_inference_exec_count")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", default="stylegan2")
    ap.add_argument("--size", default="256")
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--queue-delay-ms", type=float, default=20.0)
    ap.add_argument("--levels", default="1,2,4,8")
    ap.add_argument("--triton-python", default=str(REPO / ".venv-triton" / "bin" / "python"))
    ap.add_argument("--out", type=Path, default=None)
    ns = ap.parse_args()
    levels = [int(x) for x in ns.levels.split(",")]
    out = ns.out or HERE / "results" / "cpu" / f"triton-{ns.generator.split(':')[0]}-{ns.size}.json"

    import numpy as np
    import torch

    from engine.generators import create_generator
    from engine.options import output_size
    from engine.serve.service import LocalRenderer, Request
    from engine.serve.triton import TritonRenderer

    cpu_threads.apply(None)
    size = output_size(ns.size)

    # In this process: the baseline.
    local = LocalRenderer(create_generator(ns.generator, output=size, device=torch.device("cpu")))
    local.render_batch([Request(seed=0)])
    t = []
    for i in range(12):
        t0 = time.perf_counter()
        local.render_batch([Request(seed=i)])
        t.append((time.perf_counter() - t0) * 1e3)
    single = summarize_ms(t)
    t0 = time.perf_counter()
    for k in range(3):
        local.render_batch([Request(seed=100 + k * ns.max_batch + j) for j in range(ns.max_batch)])
    batched_ips = 3 * ns.max_batch / (time.perf_counter() - t0)
    print(f"in process: {1000 / single['median']:.1f} pictures/s one at a time, {batched_ips:.1f} in batches of {ns.max_batch}")

    # Triton.
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.Popen([ns.triton_python, "-m", "engine", "triton", "--generator", ns.generator, "--size", ns.size,
                             "--max-batch", str(ns.max_batch), "--queue-delay-ms", str(ns.queue_delay_ms),
                             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, metrics_url = f"http://127.0.0.1:{http}", f"http://127.0.0.1:{metrics}/metrics"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if urllib.request.urlopen(f"{url}/v2/models/engine/ready", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"engine triton did not start: {proc.communicate()[0][-2000:]}")
            time.sleep(0.5)
        renderer = TritonRenderer(url, concurrency=max(levels))
        results = []
        seed = 1000
        for c in levels:
            with concurrent.futures.ThreadPoolExecutor(c) as ex:
                list(ex.map(lambda s: renderer.render_batch([Request(seed=s)]), range(seed, seed + c)))  # warm-up
                seed += c
                before = counters(metrics_url)
                lat = []

                def one(s):
                    t0 = time.perf_counter()
                    renderer.render_batch([Request(seed=s)])
                    lat.append((time.perf_counter() - t0) * 1e3)

                t0 = time.perf_counter()
                list(ex.map(one, range(seed, seed + ns.requests)))
                wall = time.perf_counter() - t0
                seed += ns.requests
            after = counters(metrics_url)
            inferences, executions = after[0] - before[0], after[1] - before[1]
            row = {"concurrency": c, "pictures_per_s": round(ns.requests / wall, 2), "latency_ms": summarize_ms(lat),
                   "inferences": inferences, "executions": executions,
                   "mean_batch": round(inferences / executions, 2) if executions else None}
            results.append(row)
            print(f"triton, {c} in flight: {row['pictures_per_s']:.1f} pictures/s, median latency "
                  f"{row['latency_ms']['median']:.0f} ms, mean batch {row['mean_batch']}")
        renderer.close()
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()

    write_result(out, {
        "what": "engine triton (PyTriton bundled tritonserver, dynamic batching) against in-process rendering",
        "generator": ns.generator, "size": list(size), "max_batch": ns.max_batch, "queue_delay_ms": ns.queue_delay_ms,
        "requests_per_level": ns.requests,
        "in_process": {"single_ms": single, "pictures_per_s_single": round(1000 / single["median"], 2),
                       "pictures_per_s_batched": round(batched_ips, 2)},
        "triton": results, "numpy": np.__version__, "machine": machine_info(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
