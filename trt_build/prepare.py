"""Record -> ONNX -> (check) -> plan for every module call signature of a generator, through the cache: what
`engine trt` runs ahead of a show and `engine run --backend tensorrt` runs at setup.

engine.trt_build: TensorRT engines for a generator's modules, built from outside the generator (generators stay
plain PyTorch).

    record   one frame is rendered with recorders on Generator.modules() (e.g. mapping, synthesis; unet,
             vae_encoder, vae_decoder): each module's call signature (tensor shapes and dtypes, the Python values
             passed with them) and its eager outputs.                                         (record.py)
    export   each signature becomes an ONNX graph with the Python values baked in and the tensors as inputs
             in0..inN, outputs out0..outM (torch.onnx, dynamo exporter); checked against the eager outputs with
             ONNX Runtime when it is installed.                                                (onnx_export.py)
    build    TensorRT builds a serialized engine ("plan") from the ONNX graph at those fixed shapes, in the chosen
             precision, with a progress bar and a timing cache.                               (builder.py)
    cache    ONNX files and plans are kept under a folder keyed by everything that changes them: the module's
             weights (content hash), class, call signature, precision, torch/ONNX/TensorRT versions and the GPU
             (name and compute capability). A changed input rebuilds; nothing stale is ever loaded. (cache.py)

`engine trt` runs these ahead of a show; `engine run --backend tensorrt` (engine/backends/tensorrt.py) loads the
plans, building any that are missing at setup, and runs them on torch's current CUDA stream.

TensorRT itself is imported only inside builder.py and the runner, never at module level: everything up to the ONNX
graph works (and is tested) without it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from engine.trt_build.cache import Entry, Target, cache_root, entry_for, weights_digest
from engine.trt_build.onnx_export import check_onnx, export_onnx
from engine.trt_build.record import Call, record_calls

from engine.errors import SetupError

log = logging.getLogger("trt_build")

PRECISIONS = ("auto", "fp16", "bf16", "fp32")
#: |ONNX Runtime - eager| above this fails the check (float32 graphs agree to ~1e-5; fp16 ones to ~1e-2).
CHECK_TOLERANCE = {torch.float32: 1e-3, torch.float16: 5e-2, torch.bfloat16: 1e-1}


@dataclass
class Prepared:
    call: Call
    entry: Entry
    notes: list[str] = field(default_factory=list)


def resolve_precision(precision: str, generator) -> str:
    """auto = the precision the modules' weights are in: the diffusion model's fp16 stays fp16; a float32 network
    (StyleGAN, whose own fp16 layers pre-normalise to avoid overflow, which a weakly typed fp16 build would not do)
    builds in fp32, where TensorRT still uses TF32 tensor cores. --precision fp16 forces half precision; the setup
    check against the float32 eager frame catches a build that loses the picture."""
    if precision not in PRECISIONS:
        raise SetupError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    dtypes = {p.dtype for m in generator.modules().values() for p in m.parameters() if p.is_floating_point()}
    if dtypes == {torch.float16}:
        return "fp16"
    if dtypes == {torch.bfloat16}:
        return "bf16"
    return "fp32"


def prepare(generator, *, precision: str = "auto", cache_dir: str | Path | None = None, variants=(),
            build: bool = True, check: bool = False, say=log.info, **settings: Any) -> list[Prepared]:
    """Every module call signature of `generator` (a default frame plus `variants`), exported to ONNX and, with
    `build`, built into a TensorRT plan: from the cache when the same inputs made them before. `say` gets one line
    per step (the CLI prints them). SetupError (one line) on a failed export, check or build."""
    root = cache_root(cache_dir)
    target = Target.here(resolve_precision(precision, generator), generator.device, **settings)
    calls = record_calls(generator, variants)
    digests: dict[int, str] = {}
    out: list[Prepared] = []
    for role, role_calls in calls.items():
        for call in role_calls:
            mid = id(call.module)
            if mid not in digests:
                digests[mid] = weights_digest(call.module)
            entry = entry_for(call, target, root, digest=digests[mid])
            p = Prepared(call, entry)
            if entry.onnx.exists():
                p.notes.append(f"onnx cached ({entry.folder})")
            else:
                try:
                    seconds = export_onnx(call, entry.onnx)
                except Exception as e:
                    raise SetupError(f"ONNX export of {call.describe()} failed: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}") from None
                entry.write_manifest()
                p.notes.append(f"onnx exported in {seconds:.1f} s ({entry.onnx})")
            if check:
                try:
                    diff = check_onnx(call, entry.onnx)
                except Exception as e:  # e.g. an fp16 graph with an op ONNX Runtime's CPU kernels lack
                    p.notes.append(f"check could not run in ONNX Runtime ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})")
                else:
                    if diff is None:
                        p.notes.append("check skipped (pip install onnxruntime; bfloat16 graphs cannot be checked)")
                    else:
                        tol = CHECK_TOLERANCE.get(call.outputs[0].dtype, 1e-3)
                        if not diff <= tol:
                            raise SetupError(f"{call.describe()}: ONNX Runtime differs from PyTorch by {diff:.3g} (> {tol:g}); "
                                             f"the export is wrong: delete {entry.folder} and report it")
                        p.notes.append(f"ONNX Runtime matches PyTorch: max |diff| {diff:.2g}")
            if build:
                if entry.plan.exists():
                    p.notes.append(f"plan cached ({entry.plan.name})")
                else:
                    if generator.device.type != "cuda":
                        raise SetupError("TensorRT plans are built on a CUDA device: use --device cuda (or --onnx-only)")
                    from engine.trt_build.builder import build_plan

                    t0 = time.perf_counter()
                    with torch.cuda.device(generator.device):  # TensorRT builds on the current device
                        seconds = build_plan(entry.onnx, entry.plan, precision=target.precision,
                                             workspace_gb=target.workspace_gb, optimization_level=target.optimization_level,
                                             timing_cache=root / target.timing_cache_name, label=call.describe())
                    entry.write_manifest(precision=target.precision, tensorrt=target.tensorrt, gpu=target.gpu,
                                         built_s=round(seconds, 1), built_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
                    p.notes.append(f"plan built in {time.perf_counter() - t0:.0f} s ({entry.plan.name})")
            say(f"{call.describe()}: " + "; ".join(p.notes))
            out.append(p)
    return out
