"""TensorRT backend (--backend tensorrt): each module call signature runs as a TensorRT engine built by trt_build.

Setup: record the default frame's module calls (plus the governor's shape variants), export and build each into a
plan through trt_build's cache (minutes the first time, with progress bars; loaded in seconds afterwards), load the
plans, allocate static input and output buffers, and check a frame against the float32 eager frame.
Per frame: the caller's tensors are copied into the static inputs (device to device), the engine is enqueued with
execute_async_v3 on torch's current CUDA stream, and the static outputs are returned. No allocation, no host sync.

Weights are baked into a plan. While live parameters change them (stylegan.edits, network blending, StyleGAN3's
translate/rotate) or a module has forward hooks (layer view, bending), that module runs eagerly, with one note.
A call signature not prepared at setup runs eagerly too.

Not verified on this project's machines: TensorRT's builder cannot be installed where the tests run (see README).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_unflatten

from engine.backends.common import (
    BackendRunner,
    call_key,
    compare,
    describe_call_key,
    install,
    render_frame,
    tensor_leaves,
    uninstall,
)
from engine.errors import SetupError
from engine.trt_build.record import is_fed

log = logging.getLogger("engine.backends")


def _torch_dtype(trt, dt) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
             trt.DataType.INT8: torch.int8, trt.DataType.BOOL: torch.bool}
    for name, tdt in (("BF16", torch.bfloat16), ("INT64", torch.int64), ("UINT8", torch.uint8)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = tdt
    if dt not in table:
        raise SetupError(f"TensorRT tensor type {dt} has no torch equivalent")
    return table[dt]


class LoadedPlan:
    """One plan with its execution context and static buffers, bound once."""

    def __init__(self, prepared, device: torch.device):
        from engine.trt_build.builder import import_tensorrt, load_plan
        from engine.trt_build.onnx_export import io_names

        trt = import_tensorrt()
        call = prepared.call
        self.describe = call.describe()
        with torch.cuda.device(device):
            self.runtime, self.engine = load_plan(prepared.entry.plan)
            self.context = self.engine.create_execution_context()
        # TensorRT on the default stream adds device syncs of its own (execute_async_v3's documentation), and the
        # loop runs on the default stream: the plan runs on its own stream, ordered with the caller's by events.
        self.stream = torch.cuda.Stream(device)
        self._inputs_ready = torch.cuda.Event()
        self._outputs_ready = torch.cuda.Event()
        device_loc = getattr(getattr(trt, "TensorLocation", None), "DEVICE", None)
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        names_in, names_out = io_names(call)

        def buffer(name: str, like: torch.Tensor) -> torch.Tensor:
            if device_loc is not None and self.engine.get_tensor_location(name) != device_loc:
                raise SetupError(f"{self.describe}: the plan wants {name} in host memory (a shape input); not supported")
            shape = tuple(self.engine.get_tensor_shape(name))
            if shape != tuple(like.shape):
                raise SetupError(f"{self.describe}: the plan's {name} has shape {shape}, the module {tuple(like.shape)}; "
                                 f"delete {prepared.entry.folder} and run again")
            buf = torch.empty(shape, dtype=_torch_dtype(trt, self.engine.get_tensor_dtype(name)), device=device)
            self.context.set_tensor_address(name, buf.data_ptr())
            return buf

        # An input the builder dropped (unused by the graph) keeps a None slot: the caller's tensor is not copied.
        self.inputs = [buffer(n, x) if n in names else None for n, x in zip(names_in, call.fed)]
        self.outputs = [buffer(n, ref) for n, ref in zip(names_out, call.outputs)]
        # What the module returns: the eager dtypes (a plan may compute in fp16 but hand back what eager did).
        self.returned = [o if o.dtype == ref.dtype else torch.empty_like(o, dtype=ref.dtype)
                         for o, ref in zip(self.outputs, call.outputs)]
        self.result = tree_unflatten(self.returned, call.output_spec)

    def run(self, fed: list[torch.Tensor]) -> Any:
        caller = torch.cuda.current_stream()
        for dst, x in zip(self.inputs, fed):
            if dst is not None and dst.data_ptr() != x.data_ptr():
                dst.copy_(x)
        self._inputs_ready.record(caller)
        self.stream.wait_event(self._inputs_ready)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT could not enqueue {self.describe}")
        self._outputs_ready.record(self.stream)
        caller.wait_event(self._outputs_ready)  # the caller's later work (and the next frame's copies) waits
        for out, ret in zip(self.outputs, self.returned):
            if ret is not out:
                ret.copy_(out)
        return self.result


class TensorRTRunner(BackendRunner):
    """A module's forward served by its loaded plans (one per prepared call signature); eager otherwise."""

    def __init__(self, module: torch.nn.Module, role: str, plans: dict[Any, LoadedPlan], baked_ok: Callable[[], bool]):
        super().__init__(module, role)
        self.plans = plans
        self._baked_ok = baked_ok
        self.engine_calls = 0
        self.sealed = True

    def __call__(self, *args, **kwargs):
        if self._hooked() or not self._baked_ok():
            self.eager_calls += 1
            self._note_once("live", f"{self.role}: runs eager while live edits, blending or hooks change it "
                                    "(its TensorRT engine has the setup weights baked in)")
            return self._run(args, kwargs, self._eager)
        key = call_key(args, kwargs)
        plan = self.plans.get(key)
        if plan is None:
            self.eager_calls += 1
            self._note_once(key, f"{self.role}: a call signature not prepared at setup runs eager: {describe_call_key(key)}")
            return self._run(args, kwargs, self._eager)
        self.engine_calls += 1
        return plan.run([x for x in tensor_leaves(args, kwargs) if is_fed(x)])


def apply_tensorrt(generator, *, precision: str = "auto", variants=(), cache_dir=None) -> tuple[object, str]:
    """Build (or load from the cache) and install TensorRT engines for generator.modules(). SetupError, one line,
    when it cannot: no CUDA device, TensorRT missing, an export or build failing, a frame not matching eager."""
    if generator.device.type != "cuda":
        raise SetupError(f"--backend tensorrt needs a CUDA device (the generator is on {generator.device}); "
                         "use --backend compile or eager")
    from engine.trt_build.builder import import_tensorrt
    from engine.trt_build.prepare import prepare

    import_tensorrt()  # before minutes of exporting: say now that it is missing
    modules = generator.modules()
    if not modules:
        raise SetupError(f"--backend tensorrt: {generator.name} exposes no modules to build engines for")
    ref = render_frame(generator)
    t0 = time.perf_counter()
    prepared = prepare(generator, precision=precision, cache_dir=cache_dir, variants=variants, build=True,
                       say=lambda line: log.info("tensorrt: %s", line))
    plans: dict[str, dict[Any, LoadedPlan]] = {role: {} for role in modules}
    for p in prepared:
        plans[p.call.role][p.call.key] = LoadedPlan(p, generator.device)
    runners = install(modules, lambda role, m: TensorRTRunner(m, role, plans[role], lambda: not generator.weights_edited))
    try:
        ok, how = compare(render_frame(generator), ref)
    except Exception as e:
        uninstall(modules)
        raise SetupError(f"--backend tensorrt: the first frame failed: {type(e).__name__}: {e}") from None
    if not ok:
        uninstall(modules)
        raise SetupError(f"--backend tensorrt: the engines' frame differs from PyTorch's ({how}); try --backend compile")
    engines = sum(len(v) for v in plans.values())
    precision_used = prepared[0].entry.parts["target"]["precision"] if prepared else precision
    notes = [n for r in runners.values() for n in r.notes]
    return generator, ", ".join([f"tensorrt on {generator.device}: {engines} engines ({', '.join(p.call.describe() for p in prepared)})",
                                 precision_used, f"setup {time.perf_counter() - t0:.1f} s", f"vs float32 eager: {how}", *notes])
