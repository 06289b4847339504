"""Backends: how a generator's modules are executed. Applied from outside the generator (generators stay plain
PyTorch), once at setup, at the generator's fixed size; a resolution change builds a new generator and applies
the backend again, outside the render loop.

    eager    the module as written; float32 on CPU, half precision on CUDA where a checked frame allows it
    compile  torch.compile (inductor); on CUDA also max-autotune kernels and CUDA graph replay (compiled.py)
    tensorrt TensorRT engines built by trt_build (ONNX -> plan, cached by weights, shapes, precision, versions and
             GPU), run on torch's stream; CUDA only, TensorRT installed (tensorrt.py)
    auto     compile on CUDA, eager on CPU
"""

from __future__ import annotations

import torch

from engine.errors import UsageError

BACKENDS = ("auto", "eager", "compile", "tensorrt")


def resolve_backend(name: str, device: torch.device) -> str:
    """The concrete backend for `name` on `device` (auto -> compile on CUDA, eager on CPU)."""
    if name not in BACKENDS:
        hint = " (TensorRT is spelled tensorrt)" if name.lower() == "trt" else ""
        raise UsageError(f"unknown backend {name!r}{hint}; use {', '.join(BACKENDS)}")
    if name == "auto":
        return "compile" if torch.device(device).type == "cuda" else "eager"
    return name


def apply_backend(generator, name: str = "auto", *, dtype="auto", channels_last: bool | None = None,
                  compile_mode: str | None = None, cuda_graphs: bool | None = None, variants=(), engines=None,
                  flavor: str = "auto"):
    """Apply backend `name` to `generator` (in place: its modules are wrapped). Returns (generator, description),
    the description being one line for `engine info` / the stats (precision, graphs, check against eager).

    dtype: auto | fp32 | fp16 | bf16 (auto: generator.backend_dtypes if declared, else fp16 -> bf16 -> fp32 on
    CUDA, each checked against a float32 frame; fp32 on CPU). channels_last: None = where it helps.
    compile_mode / cuda_graphs: compile backend only (defaults: max-autotune-no-cudagraphs + graphs on CUDA).
    variants: compile backend only: parameter snapshots whose shapes are prepared at setup (the governor's levels).
    engines, flavor: tensorrt backend: a folder built by `engine trt --out DIR` (checked against this generator, then
    loaded), and which TensorRT runs it (auto | trt | rtx).
    Raises UsageError for an unknown name, SetupError when an explicitly requested backend cannot work.
    """
    resolved = resolve_backend(name, generator.device)
    if torch.device(generator.device).type == "cuda":
        # The uploaders' layout kernels are Triton: load it now, before the loop creates its GL context (triton
        # imported after Mesa's LLVM crashes the process; see engine.kernels.layout.foreign_llvm_loaded).
        from engine.kernels.layout import preload_triton

        preload_triton()
    if resolved == "eager":
        from engine.backends.eager import apply_eager

        gen, desc = apply_eager(generator, dtype=dtype, channels_last=channels_last)
    elif resolved == "tensorrt":
        if engines is not None:
            from engine.backends.tensorrt import apply_engine_folder

            gen, desc = apply_engine_folder(generator, engines, flavor=flavor, variants=variants)
        else:
            from engine.backends.tensorrt import apply_tensorrt_backend

            gen, desc = apply_tensorrt_backend(generator, precision=dtype or "auto", variants=variants, flavor=flavor)
    else:
        from engine.backends.compiled import apply_compiled

        gen, desc = apply_compiled(generator, dtype=dtype, channels_last=channels_last, compile_mode=compile_mode,
                                   cuda_graphs=cuda_graphs, strict=name == "compile", variants=variants)
    return gen, (f"{desc} (auto)" if name == "auto" else desc)
