"""`engine trt`: export a generator's modules to ONNX and build TensorRT engines ahead of a show.

    engine trt --generator diffusion: --size 1280x720 --flavor rtx --out show-engines/   # on any machine, no GPU needed
    engine run --generator diffusion: --size 1280x720 --backend tensorrt --engines show-engines/   # on the RTX card

    engine trt --generator diffusion: --size 512                  # ONNX + plans into the cache (CUDA + TensorRT)
    engine trt --generator stylegan2 --size 1024 --onnx-only      # ONNX only: anywhere, no GPU needed
    engine run --generator diffusion: --size 512 --backend tensorrt   # loads what was built

Prints one line per module call signature (exported / cached, the ONNX Runtime check with --check, built / cached)
and where the cache is. Exit 2 with one line when TensorRT is missing (the ONNX files are kept).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine.errors import SetupError
from engine.options import add_max_params_argument, add_threads_argument, output_size


def add_trt_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generator", default="stylegan2", metavar="SPEC",
                   help="stylegan2, a StyleGAN network file, or diffusion:MODEL (as for engine run; default stylegan2)")
    p.add_argument("--size", type=output_size, default=None, metavar="WxH", help="the show's output size, as for engine run "
                   "(default: the generator's own); engines are built for the size the generator renders for it")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                   help="where the generator is built and exported (default auto); plans need CUDA")
    p.add_argument("--precision", default="auto", choices=("auto", "fp16", "bf16", "fp32"),
                   help="TensorRT precision (default auto: the weights' own precision, fp16 for a diffusion model loaded in fp16, "
                        "fp32 with TF32 for StyleGAN)")
    p.add_argument("--config", default=None, metavar="FILE.toml", help="take generator options from its [generator] table")
    p.add_argument("--variants", action="store_true",
                   help="also the shapes the governor moves between (diffusion steps 1-4, StyleGAN2 render scale): "
                        "what engine run --target-fps uses")
    p.add_argument("--onnx-only", action="store_true", help="export (and --check) the ONNX graphs, build no plans")
    p.add_argument("--check", action="store_true",
                   help="run each ONNX graph in ONNX Runtime (CPU) against PyTorch and fail on a mismatch")
    p.add_argument("--flavor", default="auto", choices=("auto", "trt", "rtx"),
                   help="rtx: TensorRT for RTX (builds here, with no GPU, for RTX/GeForce cards; needs --out); trt: the full "
                        "TensorRT (builds on the GPU it runs on); auto: what is installed and suits the GPU (default)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write one engine per network with an optimisation profile, plus manifest.json, into DIR "
                        "(engine run --engines DIR loads it); without it plans go into the cache, one per call signature")
    p.add_argument("--targets", default=None, metavar="SM75,SM86,...",
                   help="with --flavor rtx: the compute capabilities to build for (default SM75,SM86,SM89,SM120: the RTX cards)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="with --out: the largest batch a diffusion engine serves (the stream batch: steps, x2 with cfg=full; default 8)")
    p.add_argument("--sides", default="256:1024", metavar="MIN:MAX",
                   help="with --out: the image sides a diffusion engine serves, in pixels (default 256:1024: 16:9 and "
                        "portrait shows up to 1024 per side; the show's own size is always covered)")
    p.add_argument("--refit", action="store_true",
                   help="with --out: refittable weights, so live blends, layer edits and LoRA scale update the engine instead "
                        "of running eager; needs a GPU to build (TensorRT for RTX 1.7 fails refittable builds on a CPU)")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="cache folder (default $ENGINE_CACHE_DIR/trt, else ~/.cache/engine/trt)")
    add_threads_argument(p)
    add_max_params_argument(p)


def cmd_trt(ns: argparse.Namespace) -> int:
    from engine.trt_build.cache import cache_root
    from engine.trt_build.prepare import prepare

    from engine.devices import resolve_device
    from engine.generators import create_generator
    from engine.params import Params

    options = {}
    if ns.config:
        from engine.config import load_config
        from engine.options import config_run_options

        # The show's own config file: its [run] table is valid here too (and ignored), its [generator] table used.
        options = dict(load_config(ns.config, config_run_options()).generator)
    device = resolve_device(ns.device)
    if ns.out is not None or ns.flavor == "rtx":
        return _build_folder(ns, device, options)
    if ns.flavor == "auto" and not ns.onnx_only:
        from engine.errors import UsageError
        from engine.trt_build.flavors import resolve_flavor

        try:
            chosen, why = resolve_flavor("auto", device)
        except SetupError:
            chosen = None  # the cache path below says what to install
        if chosen is not None and chosen.name == "rtx":
            raise UsageError(f"TensorRT for RTX ({why}) builds engine folders: add --out DIR")
    generator = create_generator(ns.generator, output=ns.size, device=device, options=options)
    variants = generator.shape_variants(Params()) if ns.variants else []
    root = cache_root(ns.cache)
    print(f"engine trt: {generator.name} {generator.width}x{generator.height} on {device}, cache {root}")
    build = not ns.onnx_only
    if build:
        from engine.trt_build.builder import import_tensorrt

        try:
            import_tensorrt()
        except SetupError as e:
            prepare(generator, precision=ns.precision, cache_dir=root, variants=variants, build=False, check=ns.check,
                    say=lambda line: print("  " + line))
            raise SetupError(f"{e} (the ONNX graphs are ready in {root}; --onnx-only skips this step)") from None
    prepared = prepare(generator, precision=ns.precision, cache_dir=root, variants=variants, build=build,
                       check=ns.check, say=lambda line: print("  " + line))
    if build:
        print(f"engine trt: {len(prepared)} plans ready; run with --backend tensorrt")
    else:
        print(f"engine trt: {len(prepared)} ONNX graphs ready in {root}")
    sys.stdout.flush()
    return 0


def _build_folder(ns: argparse.Namespace, device, options: dict) -> int:
    """`--out DIR` (and every --flavor rtx build): one engine per network with a profile, and the manifest."""
    from engine.errors import UsageError
    from engine.generators import create_generator
    from engine.params import Params
    from engine.trt_build.engines import build_folder
    from engine.trt_build.flavors import RTX_RUNS_ON, resolve_flavor
    from engine.trt_build.profiles import Ranges

    if ns.out is None:
        raise UsageError("TensorRT for RTX engines go into a folder a show machine loads: add --out DIR")
    try:
        lo, hi = (int(x) for x in str(ns.sides).split(":"))
    except ValueError:
        raise UsageError(f"--sides {ns.sides!r}: expected MIN:MAX in pixels, e.g. 256:1024") from None
    ranges = Ranges(max_batch=ns.max_batch, min_side=lo, max_side=hi)
    targets = None
    if ns.targets:
        targets = tuple(t.strip().upper() for t in ns.targets.split(",") if t.strip())
        unknown = [t for t in targets if t not in RTX_RUNS_ON]
        if unknown:
            raise UsageError(f"--targets {ns.targets}: unknown {', '.join(unknown)}; TensorRT for RTX builds for {', '.join(RTX_RUNS_ON)}")
    flavor, why = resolve_flavor(ns.flavor, device)
    if ns.precision in ("fp16", "bf16") and ns.generator.startswith("diffusion"):
        options.setdefault("dtype", ns.precision)  # strongly typed: the graph's dtype is the precision
    elif ns.precision not in ("auto", "fp32") and flavor.strongly_typed:
        raise UsageError(f"--precision {ns.precision} with {flavor.label}: the precision is the model's dtype "
                         "(diffusion: [generator] dtype = \"fp16\"); StyleGAN engines are float32")
    generator = create_generator(ns.generator, output=ns.size, device=device, options=options)
    variants = generator.shape_variants(Params()) if ns.variants else []
    print(f"engine trt: {generator.name} {generator.width}x{generator.height} on {device}, {flavor.label} {flavor.version()} "
          f"({why}), into {ns.out}", flush=True)
    t0 = time.perf_counter()
    manifest = build_folder(generator, ns.out, flavor, spec=ns.generator, ranges=ranges, targets=targets,
                            refit=ns.refit, variants=variants, check=ns.check, say=lambda line: print("  " + line, flush=True))
    total = sum(e["bytes"] for e in manifest["engines"])
    print(f"engine trt: {len(manifest['engines'])} engines, {total / 1e6:.1f} MB, for {', '.join(manifest['compute_capabilities'])} "
          f"in {time.perf_counter() - t0:.0f} s; on the show machine: engine run --generator {ns.generator} --backend tensorrt "
          f"--engines {ns.out}", flush=True)
    return 0
