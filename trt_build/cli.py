"""`engine trt`: export a generator's modules to ONNX and build TensorRT engines ahead of a show.

    engine trt --generator diffusion: --size 512                  # ONNX + plans into the cache (CUDA + TensorRT)
    engine trt --generator stylegan2 --size 1024 --onnx-only      # ONNX only: anywhere, no GPU needed
    engine run --generator diffusion: --size 512 --backend tensorrt   # loads what was built

Prints one line per module call signature (exported / cached, the ONNX Runtime check with --check, built / cached)
and where the cache is. Exit 2 with one line when TensorRT is missing (the ONNX files are kept).
"""

from __future__ import annotations

import argparse
import sys
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
