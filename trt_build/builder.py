"""TensorRT: build a plan from an ONNX graph (fixed shapes), and load one. Imports tensorrt only when called.

Not verified on this project's machines (no TensorRT builder can be installed where the tests run; see README):
written against TensorRT 10's Python API (OnnxParser, IBuilderConfig with memory pool limits, IProgressMonitor,
build_serialized_network, Runtime.deserialize_cuda_engine, named I/O tensors with set_tensor_address and
execute_async_v3).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from engine.errors import SetupError

INSTALL_HINT = ("install TensorRT for your CUDA version from NVIDIA's index: pip install tensorrt-cu12 or tensorrt-cu13 "
                "--extra-index-url https://pypi.nvidia.com (the full builder; tensorrt-lean only runs prebuilt plans)")


def import_tensorrt():
    """The tensorrt module, or SetupError saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise SetupError(f"TensorRT is not installed ({e}); {INSTALL_HINT}") from None
    if not hasattr(trt, "Builder"):
        raise SetupError(f"this TensorRT ({getattr(trt, '__version__', '?')}) has no builder (the lean runtime?); {INSTALL_HINT}")
    return trt


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def _progress_monitor(trt, label: str):
    """A tqdm bar per build phase (TensorRT >= 10's IProgressMonitor); None where it is missing."""
    if not hasattr(trt, "IProgressMonitor"):
        return None
    from tqdm import tqdm

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = 0
            p = parent_phase
            while p is not None and p in self.bars:
                depth += 1
                p = getattr(self.bars[p], "_parent", None)
            bar = tqdm(total=num_steps, desc=f"{label}: {phase_name}", position=depth, leave=False, dynamic_ncols=True)
            bar._parent = parent_phase
            self.bars[phase_name] = bar

        def step_complete(self, phase_name, step):
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.n = step + 1
                bar.refresh()
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return Monitor()


def build_plan(onnx_path: Path, plan_path: Path, *, precision: str, workspace_gb: float = 8.0,
               optimization_level: int = 3, timing_cache: Path | None = None, label: str = "") -> float:
    """Build `plan_path` from `onnx_path`. Returns seconds taken. SetupError (one line, the parser's first error)
    when the graph cannot be parsed or built."""
    trt = import_tensorrt()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # required before TensorRT 10, implied after
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # reads model.onnx.data beside it
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise SetupError(f"TensorRT could not parse {onnx_path}: {errors[0] if errors else 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = int(optimization_level)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    elif precision != "fp32":
        raise SetupError(f"unknown TensorRT precision {precision!r}; use fp16, bf16 or fp32")
    cache = None
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.exists() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    monitor = _progress_monitor(trt, label or onnx_path.parent.name)
    if monitor is not None:
        config.progress_monitor = monitor
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SetupError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    tmp = plan_path.with_suffix(".plan.tmp")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, plan_path)  # a build killed half-way never leaves a plan that looks complete
    if cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return time.perf_counter() - t0


def load_plan(plan_path: Path):
    """(runtime, engine) for a serialized plan; SetupError when this TensorRT or GPU cannot run it."""
    trt = import_tensorrt()
    runtime = trt.Runtime(_logger(trt))
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise SetupError(f"TensorRT could not load {plan_path} (built by another TensorRT version or for another GPU); "
                         "delete it and run engine trt again")
    return runtime, engine
