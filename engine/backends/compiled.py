"""Compile backend: torch.compile (inductor) of the generator's modules, plus CUDA graphs on CUDA.

Design choice: torch.compile(mode="max-autotune-no-cudagraphs") with our own torch.cuda.graphs capture
(BackendRunner), rather than mode="reduce-overhead":
  * the static input/output buffers are ours and fixed at setup; the loop calls each module once per frame, which
    is exactly one graph replay, with no cudagraph-tree bookkeeping and no "tensor output overwritten by a
    subsequent run" errors in the middle of a show;
  * a module that cannot be captured (a host sync, a CPU op) fails at setup, loudly, and runs compiled but
    ungraphed, where reduce-overhead skips cudagraphs silently at run time;
  * max-autotune picks conv/matmul kernels by timing them once for the fixed shapes (cached on disk by inductor
    across runs); its slower first compile is paid at setup, never in the loop.
On CPU: torch.compile(mode="default") with inductor's C++ backend, no graphs, float32.
The compiled frame is checked against the float32 eager frame at setup; a mismatch falls back to eager.
"""

from __future__ import annotations

import logging
import os
import time

import torch

from engine.backends.common import BackendRunner, compare, install, render_frame, uninstall
from engine.backends.eager import choose_precision, set_channels_last
from engine.errors import SetupError

log = logging.getLogger("engine.backends")

CUDA_COMPILE_MODE = "max-autotune-no-cudagraphs"
CPU_COMPILE_MODE = "default"


def apply_compiled(generator, *, dtype="auto", channels_last=None, compile_mode=None, cuda_graphs=None,
                   strict: bool = True, variants=()) -> tuple[object, str]:
    """Install compiled (and on CUDA graphed) wrappers for generator.modules(). strict: a compile failure raises
    SetupError (--backend compile) instead of falling back to eager (--backend auto). variants: parameter snapshots
    (Generator.shape_variants) whose call shapes are compiled and captured now too; after setup the runners are
    sealed, and a shape first met in the loop runs eager instead of stalling the show to compile."""
    from engine.backends.eager import apply_eager

    cuda = generator.device.type == "cuda"
    modules = generator.modules()
    if not modules:
        gen, desc = apply_eager(generator, dtype=dtype, channels_last=channels_last)
        return gen, f"{desc} (compile: generator exposes no modules to compile)"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")  # TF32 for fp32 matmuls (the check below bounds the error)
    mode = compile_mode or os.environ.get("ENGINE_COMPILE_MODE") or (CUDA_COMPILE_MODE if cuda else CPU_COMPILE_MODE)
    graphs = cuda if cuda_graphs is None else bool(cuda_graphs) and cuda

    ref = render_frame(generator)  # float32 eager: the reference every variant is checked against
    prec = choose_precision(generator, modules, dtype, ref=ref)
    if channels_last:  # default None: inductor's layout optimisation chooses conv layouts itself
        set_channels_last(modules, True)
    cast = prec.dtype if prec.dtype != torch.float32 else None
    runners = install(modules, lambda role, m: BackendRunner(m, role, dtype=cast, compile_mode=mode, cuda_graphs=graphs))

    t0 = time.perf_counter()
    try:
        render_frame(generator)  # compiles (and captures, on CUDA)
        ok, how = compare(render_frame(generator), ref)  # a second frame: graph replay
        if ok:
            for i, params in enumerate(variants):
                log.info("compile: preparing shape variant %d/%d", i + 1, len(variants))
                render_frame(generator, params)
    except Exception as e:
        ok, how = False, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        if strict:
            uninstall(modules)
            prec.undo()
            raise SetupError(f"--backend compile: torch.compile failed for {generator.name!r}: {how}; "
                             "use --backend eager") from None
    setup_s = time.perf_counter() - t0
    if not ok:
        uninstall(modules)
        prec.undo()
        gen, desc = apply_eager(generator, dtype=dtype, channels_last=channels_last)
        return gen, f"{desc} (compile rejected: {how})"

    for w in runners.values():
        w.sealed = True
    dtype_name = str(prec.dtype).removeprefix("torch.")
    parts = [f"compile on {generator.device}: torch.compile inductor mode={mode}", dtype_name]
    if graphs:
        graphed = [r for r, w in runners.items() if w.graph_count]
        parts.append(f"CUDA graphs: {', '.join(graphed) if graphed else 'none'}")
    if channels_last:
        parts.append("channels_last")
    if variants:
        parts.append(f"{len(variants)} shape variants prepared")
    parts.append(f"setup {setup_s:.1f} s")
    parts.append(f"vs float32 eager: {how}")
    parts.extend(prec.notes)
    for w in runners.values():
        parts.extend(w.notes)
    return generator, ", ".join(parts)
