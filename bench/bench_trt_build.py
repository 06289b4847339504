"""How long TensorRT for RTX takes to build full-size engines on a CPU-only machine, how large they are, and how much
host memory the build needs: the sd-turbo-architecture UNet (random init from its config, fp16, with TAESD's
encoder and decoder) with a dynamic profile (batch 1-4, sides 256-1024), and StyleGAN2 config-f at 1024 (float32).

    python bench/bench_trt_build.py [--only unet|stylegan] [--out bench/results/cpu/trt-rtx-build.json]

Each build runs in a child process so its peak resident memory (ru_maxrss) is its own. Export and build times are
wall-clock (a build is minutes: host timers are the right clock). The machine is recorded with the result.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # tiny_diffusion's tokenizer writer (bench_diffusion uses it too)
sys.path.insert(0, str(HERE))


def one(name: str, out_dir: Path, sides: tuple[int, int] = (256, 1024)) -> dict:
    import torch

    from engine.trt_build.engines import build_folder
    from engine.trt_build.flavors import FLAVORS
    from engine.trt_build.profiles import Ranges

    flavor = FLAVORS["rtx"]
    t0 = time.perf_counter()
    if name == "unet":
        import bench_diffusion as bd

        from engine.generators.diffusion import DiffusionGenerator

        unet, text, taesd, _vae, tokenizer, scheduler = bd.build(torch.device("cpu"), torch.float16)
        gen = DiffusionGenerator(unet=unet, vae=taesd, text_encoders=[text], tokenizers=[tokenizer],
                                 alphas_cumprod=scheduler.alphas_cumprod, size=512, device="cpu", dtype=torch.float16,
                                 model_name="sd-turbo architecture (random init)")
        ranges = Ranges(max_batch=4, min_side=sides[0], max_side=sides[1])
    else:
        from engine.generators import create_generator

        gen = create_generator("stylegan2", size=1024, device=torch.device("cpu"),
                               options=dict(channel_base=32768, channel_max=512, calibrate=False))
        ranges = Ranges()
    built_model_s = time.perf_counter() - t0
    lines: list[str] = []
    manifest = build_folder(gen, out_dir, flavor, spec=name, ranges=ranges, say=lambda line: (print(line, flush=True), lines.append(line)))
    return {
        "name": name, "sides": list(sides) if name == "unet" else None, "model_build_s": round(built_model_s, 1), "flavor": flavor.name, "flavor_version": manifest["flavor_version"],
        "compute_capabilities": manifest["compute_capabilities"],
        "engines": [{k: e[k] for k in ("role", "precision", "export_seconds", "build_seconds", "bytes", "inputs")}
                    for e in manifest["engines"]],
        "total_bytes": sum(e["bytes"] for e in manifest["engines"]),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),  # kB on Linux
        "wall_s": round(time.perf_counter() - t0, 1),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("unet", "stylegan"), default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process: build one, print JSON
    ap.add_argument("--sides", default="256:1024", help="the UNet profile's image sides MIN:MAX (512:512: static sides)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per build (the export is part of it)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cpu" / "trt-rtx-build.json")
    args = ap.parse_args(argv)
    if args.one:
        with tempfile.TemporaryDirectory(prefix="trt-rtx-bench-") as tmp:
            lo, hi = (int(x) for x in args.sides.split(":"))
            print("RESULT " + json.dumps(one(args.one, Path(tmp), (lo, hi))), flush=True)
        return 0
    from engine.machine import machine_info

    results = []
    for name in ([args.only] if args.only else ["stylegan", "unet"]):
        print(f"== {name}", flush=True)
        try:
            p = subprocess.run([sys.executable, __file__, "--one", name, "--sides", args.sides], capture_output=True,
                               text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            results.append({"name": name, "sides": args.sides, "error": f"not finished within {args.timeout:.0f} s"})
            print(f"{name}: not finished within {args.timeout:.0f} s", flush=True)
            continue
        found = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
        if p.returncode != 0 or not found:
            results.append({"name": name, "error": (p.stderr.strip().splitlines() or ["?"])[-1][:500]})
            print(p.stdout[-2000:], p.stderr[-3000:])
            continue
        r = json.loads(found[-1][len("RESULT "):])
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "engines"}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists() and args.only:  # one build measured again: keep the other's result
        old = json.loads(args.out.read_text()).get("results", [])
        results = [r for r in old if r.get("name") != args.only] + results
    args.out.write_text(json.dumps({"machine": machine_info(), "results": results,
                                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
