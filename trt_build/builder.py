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


_LOGGERS: dict[str, object] = {}


def logger_for(trt):
    """One logger per TensorRT module for the process: TensorRT keeps the first one it is given and warns about any
    other (and the two flavours' loggers are different types)."""
    key = trt.__name__
    if key not in _LOGGERS:
        _LOGGERS[key] = trt.Logger(trt.Logger.WARNING)
    return _LOGGERS[key]


def _progress_monitor(trt, label: str):
    """A tqdm bar per build phase (TensorRT >= 10's IProgressMonitor); None where it is missing. An exception in a
    callback would cancel the build (TensorRT reads it as "stop"), so the callbacks swallow their own errors."""
    if not hasattr(trt, "IProgressMonitor"):
        return None
    from tqdm import tqdm

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}
            self.parents: dict[str, str | None] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            try:
                depth, p = 0, parent_phase
                while p is not None and p in self.parents:
                    depth, p = depth + 1, self.parents[p]
                self.parents[phase_name] = parent_phase
                self.bars[phase_name] = tqdm(total=num_steps, desc=f"{label}: {phase_name}", position=depth,
                                             leave=False, dynamic_ncols=True)
            except Exception:
                pass

        def step_complete(self, phase_name, step):
            try:
                bar = self.bars.get(phase_name)
                if bar is not None:
                    bar.n = step + 1
                    bar.refresh()
            except Exception:
                pass
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            try:
                self.parents.pop(phase_name, None)
                bar = self.bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()
            except Exception:
                pass

        def close(self):
            for bar in self.bars.values():
                bar.close()
            self.bars.clear()

    return Monitor()


def _write_atomically(path: Path, data) -> None:
    """Write through a unique temporary file, flushed to disk, then rename: a build killed half-way, or two
    builds racing, never leave a file that looks complete."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(data))
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary file: engines are copied to show machines
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_plan(onnx_path: Path, plan_path: Path, *, precision: str, workspace_gb: float = 8.0,
               optimization_level: int = 3, timing_cache: Path | None = None, label: str = "", flavor=None,
               profile: dict[str, tuple] | None = None, targets: tuple[str, ...] = (), refit: bool = False) -> float:
    """Build `plan_path` from `onnx_path`. Returns seconds taken. SetupError (one line, the parser's first error) when
    the graph cannot be parsed or built.

    flavor: trt_build.flavors.Flavor (default the full TensorRT, which builds on the current CUDA device; TensorRT for
    RTX builds on any machine for `targets`, compute capabilities like "SM89"). precision: builder flags for the full
    TensorRT; TensorRT for RTX is strongly typed (the graph's dtypes are the precision). profile: input name ->
    (min, opt, max) shapes, one optimisation profile (dynamic inputs need it). refit: refittable weights.
    timing_cache: a file for this TensorRT version and GPU (cache.Target.timing_cache_name); a cache TensorRT refuses
    is ignored and rewritten; not used where the flavor builds without a GPU."""
    trt = flavor.load() if flavor is not None else import_tensorrt()
    strongly_typed = bool(flavor is not None and flavor.strongly_typed)
    logger = logger_for(trt)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # required before TensorRT 10, ignored after
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)  # kept alive through the build: it owns the parsed weights
    if not parser.parse_from_file(str(onnx_path)):  # reads model.onnx.data beside it
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise SetupError(f"TensorRT could not parse {onnx_path}: {errors[0] if errors else 'unknown error'}")
    for i in range(network.num_inputs):
        t = network.get_input(i)
        if hasattr(t, "is_shape_tensor") and t.is_shape_tensor:
            raise SetupError(f"{onnx_path}: input {t.name} feeds a shape computation; engine inputs must be device tensors")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = int(optimization_level)
    if profile:
        p = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.items():
            p.set_shape(name, tuple(lo), tuple(opt), tuple(hi))
        config.add_optimization_profile(p)
    if targets:
        if not hasattr(trt, "ComputeCapability"):
            raise SetupError(f"{getattr(flavor, 'label', 'TensorRT')} cannot build for named compute capabilities")
        config.num_compute_capabilities = len(targets)
        for i, t in enumerate(targets):
            config.set_compute_capability(getattr(trt.ComputeCapability, t), i)
    if refit:
        # Every weight refittable (REFIT); TensorRT for RTX's strongly typed builds take the same flag.
        config.set_flag(trt.BuilderFlag.REFIT)
    if strongly_typed:
        pass  # the ONNX graph's dtypes are the precision (an fp16 model exported an fp16 graph)
    # Precision flags (deprecated from TensorRT 10.12 in favour of strongly typed networks, still honoured).
    elif precision in ("fp16", "bf16"):
        flag = getattr(trt.BuilderFlag, precision.upper(), None)
        if flag is None:
            raise SetupError(f"this TensorRT ({trt.__version__}) has no {precision} builder flag; use --precision fp16 or fp32")
        config.set_flag(flag)
    elif precision != "fp32":
        raise SetupError(f"unknown TensorRT precision {precision!r}; use fp16, bf16 or fp32")
    cache = None
    if timing_cache is not None and (flavor is None or flavor.timing_cache):
        blob = timing_cache.read_bytes() if timing_cache.exists() else b""
        cache = config.create_timing_cache(blob)
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            cache = config.create_timing_cache(b"")  # another GPU's or a damaged cache: start a fresh one
            if cache is not None and not config.set_timing_cache(cache, ignore_mismatch=False):
                cache = None
    monitor = _progress_monitor(trt, label or onnx_path.parent.name)
    if monitor is not None:
        config.progress_monitor = monitor
    t0 = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if monitor is not None:
            monitor.close()
    if serialized is None:
        raise SetupError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    _write_atomically(plan_path, serialized)
    if cache is not None:
        _write_atomically(timing_cache, cache.serialize())  # the cache object the build filled
    return time.perf_counter() - t0


def load_plan(plan_path: Path, flavor=None):
    """(runtime, engine) for a serialized plan, on the current CUDA device; SetupError when this TensorRT or GPU
    cannot run it."""
    trt = flavor.load() if flavor is not None else import_tensorrt()
    runtime = trt.Runtime(logger_for(trt))
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise SetupError(f"TensorRT could not load {plan_path} (built by another TensorRT version or for another GPU); "
                         "delete it and run engine trt again")
    return runtime, engine
