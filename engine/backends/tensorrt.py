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
from pathlib import Path
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


def check_first_frame(generator, modules: dict, ref, what: str, fix: str) -> str:
    """The installed engines' first frame against the float32 eager one (`ref`); on a failure or a mismatch the
    engines come out again and SetupError says so. Returns how close they were."""
    try:
        ok, how = compare(render_frame(generator), ref)
    except Exception as e:
        uninstall(modules)
        raise SetupError(f"{what}: the first frame failed: {type(e).__name__}: {e}") from None
    if not ok:
        uninstall(modules)
        raise SetupError(f"{what}: the engines' frame differs from PyTorch's ({how}); {fix}")
    return how


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
    how = check_first_frame(generator, modules, ref, "--backend tensorrt", "try --backend compile")
    engines = sum(len(v) for v in plans.values())
    precision_used = prepared[0].entry.parts["target"]["precision"] if prepared else precision
    notes = [n for r in runners.values() for n in r.notes]
    return generator, ", ".join([f"tensorrt on {generator.device}: {engines} engines ({', '.join(p.call.describe() for p in prepared)})",
                                 precision_used, f"setup {time.perf_counter() - t0:.1f} s", f"vs float32 eager: {how}", *notes])


# ---------------------------------------------------------------------------------------------------------------
# A folder of engines built ahead of time (engine trt --out DIR): one engine per network with an optimisation
# profile, either flavour. Written against TensorRT 10 / TensorRT for RTX 1.7's Python API; running needs the GPU
# (an RTX card for TensorRT for RTX), so this part is unverified on the project's machines (see README).
# ---------------------------------------------------------------------------------------------------------------


def runtime_cache_path(flavor, device: torch.device, cache_dir=None) -> Path:
    """TensorRT for RTX's runtime cache (the kernels it compiled for this GPU at first load), one file per flavour
    version and GPU."""
    from engine.trt_build.cache import cache_root

    major, minor = torch.cuda.get_device_capability(device)
    name = "".join(c if c.isalnum() else "-" for c in torch.cuda.get_device_name(device))
    return Path(cache_root(cache_dir)) / "runtime" / f"{flavor.name}-{flavor.version()}-{name}-sm{major}{minor}.cache"


class FolderEngine:
    """One engine of the folder with one execution context; each call signature the show uses gets its own static
    input and output buffers, bound at setup. Per call: copy the caller's tensors into the buffers (device to
    device), set the input shapes and addresses of that signature (host-side calls, no allocation), enqueue on the
    engine's stream ordered by events."""

    def __init__(self, folder, entry: dict, flavor, device: torch.device, runtime_cache=None):
        from engine.trt_build.builder import load_plan

        self.trt = flavor.load()
        self.role = entry["role"]
        with torch.cuda.device(device):
            self.runtime, self.engine = load_plan(Path(folder) / entry["file"], flavor)
            self.runtime_cache = None
            if runtime_cache is not None and hasattr(self.engine, "create_runtime_config"):
                config = self.engine.create_runtime_config()
                cache = config.create_runtime_cache()
                if runtime_cache.is_file():
                    cache.deserialize(runtime_cache.read_bytes())
                config.set_runtime_cache(cache)
                self.runtime_cache = (cache, runtime_cache)
                self.context = self.engine.create_execution_context(config)
            else:
                self.context = self.engine.create_execution_context()
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self._inputs_ready = torch.cuda.Event()
        self._outputs_ready = torch.cuda.Event()
        self.inputs = [s["name"] for s in entry["inputs"]]
        self.outputs = [o["name"] for o in entry["outputs"]]
        self.bound: dict[Any, tuple] = {}
        self.calls = 0
        # Refit (engines built with --refit): ONNX initializer -> module parameter, a staging buffer per weight in
        # the engine's dtype (allocated at setup), and the parameters' version counters at the last refit.
        self.refit_names: dict[str, str] = dict(entry.get("refit") or {}) if getattr(self.engine, "refittable", False) else {}
        self._refitter = None
        self._refit_bufs: dict[str, torch.Tensor] = {}
        self._refit_version: int | None = None
        self.refits = 0
        self.refit_ms_max = 0.0

    def prepare_refit(self, module: torch.nn.Module) -> None:
        """At setup: the Refitter and one device buffer per refittable weight (no allocation when refitting)."""
        if not self.refit_names:
            return
        from engine.trt_build.builder import logger_for

        self._refitter = self.trt.Refitter(self.engine, logger_for(self.trt))
        state = module.state_dict(keep_vars=True)
        for onnx_name, torch_name in self.refit_names.items():
            proto = self._refitter.get_weights_prototype(onnx_name)
            dtype = _torch_dtype(self.trt, proto.dtype)
            self._refit_bufs[onnx_name] = torch.empty(state[torch_name].shape, dtype=dtype, device=self.device)
        self._module_state = state
        self._refit_version = self._weights_version()

    def _weights_version(self) -> int:
        # Every in-place change of a tensor bumps its _version: a cheap host-side test for "the weights moved".
        return sum(self._module_state[n]._version for n in self.refit_names.values())

    def refit_if_changed(self) -> bool:
        """Copy changed weights into the engine (device to device), timed; False when this engine cannot refit."""
        if self._refitter is None:
            return False
        version = self._weights_version()
        if version == self._refit_version:
            return True
        t0 = time.perf_counter()
        device_loc = self.trt.TensorLocation.DEVICE
        for onnx_name, torch_name in self.refit_names.items():
            buf = self._refit_bufs[onnx_name]
            buf.copy_(self._module_state[torch_name].detach())
            weights = self.trt.Weights(self._refitter.get_weights_prototype(onnx_name).dtype, buf.data_ptr(), buf.numel())
            self._refitter.set_named_weights(onnx_name, weights, device_loc)
        if not self._refitter.refit_cuda_engine_async(self.stream.cuda_stream):
            return False
        self._refit_version = version
        self.refits += 1
        self.refit_ms_max = max(self.refit_ms_max, (time.perf_counter() - t0) * 1000.0)
        return True

    def bind(self, call) -> None:
        """Static buffers for one recorded call signature (at setup)."""
        from engine.trt_build.onnx_export import io_names

        names_in, names_out = io_names(call)
        engine_names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        ins = []
        for name, x in zip(names_in, call.fed):
            if name not in engine_names:
                ins.append((name, None))  # dropped by the exporter: not fed
                continue
            if not self.context.set_input_shape(name, tuple(x.shape)):
                raise SetupError(f"{self.role}: the engine refuses {name} {tuple(x.shape)} (outside its profile)")
            ins.append((name, torch.empty_like(x, device=self.device)))
        outs = []
        for name, ref in zip(names_out, call.outputs):
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(self.trt, self.engine.get_tensor_dtype(name))
            if shape != tuple(ref.shape):
                raise SetupError(f"{self.role}: the engine's {name} would be {shape}, the module gives {tuple(ref.shape)}")
            outs.append((name, torch.empty(shape, dtype=dtype, device=self.device), ref.dtype))
        returned = [buf if buf.dtype == want else torch.empty_like(buf, dtype=want) for _, buf, want in outs]
        self.bound[call.key] = (ins, outs, returned, tree_unflatten(returned, call.output_spec))

    def run(self, key, fed: list[torch.Tensor]) -> Any:
        ins, outs, returned, result = self.bound[key]
        caller = torch.cuda.current_stream()
        for (name, buf), x in zip(ins, fed):
            if buf is not None:
                buf.copy_(x)
                self.context.set_input_shape(name, tuple(buf.shape))
                self.context.set_tensor_address(name, buf.data_ptr())
        for name, buf, _ in outs:
            self.context.set_tensor_address(name, buf.data_ptr())
        self._inputs_ready.record(caller)
        self.stream.wait_event(self._inputs_ready)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT could not enqueue {self.role}")
        self._outputs_ready.record(self.stream)
        caller.wait_event(self._outputs_ready)
        for (_, buf, _), ret in zip(outs, returned):
            if ret is not buf:
                ret.copy_(buf)
        self.calls += 1
        return result

    def save_runtime_cache(self) -> None:
        if self.runtime_cache is not None:
            cache, path = self.runtime_cache
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(cache.serialize()))


class FolderRunner(BackendRunner):
    def __init__(self, module: torch.nn.Module, role: str, engine: FolderEngine, baked_ok: Callable[[], bool]):
        super().__init__(module, role)
        self.engine = engine
        self._baked_ok = baked_ok
        self.sealed = True

    def __call__(self, *args, **kwargs):
        edited = not self._baked_ok()
        if self._hooked() or (edited and not self.engine.refit_if_changed()):
            self.eager_calls += 1
            self._note_once("live", f"{self.role}: runs eager while live edits, blending or hooks change it "
                                    "(the engine has the built weights and is not refittable: engine trt --refit)")
            return self._run(args, kwargs, self._eager)
        if not edited:
            self.engine.refit_if_changed()  # edits undone: the original weights go back in
        key = call_key(args, kwargs)
        if key not in self.engine.bound:
            self.eager_calls += 1
            self._note_once(key, f"{self.role}: a call signature not bound at setup runs eager: {describe_call_key(key)}")
            return self._run(args, kwargs, self._eager)
        return self.engine.run(key, [x for x in tensor_leaves(args, kwargs) if is_fed(x)])


def apply_engine_folder(generator, folder, *, flavor: str = "auto", variants=()) -> tuple[object, str]:
    """Check the folder against this generator and the installed TensorRT (one line naming any mismatch, on any
    machine), then load its engines on the GPU and install them. SetupError otherwise."""
    from engine.trt_build.engines import check_folder
    from engine.trt_build.flavors import resolve_flavor
    from engine.trt_build.record import record_calls

    chosen, why = resolve_flavor(flavor, generator.device)
    manifest = check_folder(folder, generator, chosen, variants)
    if generator.device.type != "cuda":
        raise SetupError(f"--engines {folder}: the engines match this generator, but running them needs a CUDA GPU "
                         f"({', '.join(manifest['compute_capabilities'])}); the generator is on {generator.device}")
    modules = generator.modules()
    ref = render_frame(generator)
    t0 = time.perf_counter()
    cache = runtime_cache_path(chosen, generator.device) if chosen.runtime_cache else None
    by_role = {e["role"]: e for e in manifest["engines"]}
    loaded: dict[str, FolderEngine] = {}
    for role, calls in record_calls(generator, variants).items():
        eng = loaded[role] = FolderEngine(folder, by_role[role], chosen, generator.device, cache)
        for call in calls:
            eng.bind(call)
        eng.prepare_refit(modules[role])
    runners = install({role: modules[role] for role in loaded},
                      lambda role, m: FolderRunner(m, role, loaded[role], lambda: not generator.weights_edited))
    how = check_first_frame(generator, modules, ref, f"--engines {folder}", "rebuild, or run --backend compile")
    for eng in loaded.values():
        eng.save_runtime_cache()  # the kernels compiled on this GPU: the next show loads in seconds
    notes = [n for r in runners.values() for n in r.notes]
    refittable = [role for role, eng in loaded.items() if eng.refit_names]
    if refittable:
        notes.append(f"refittable: {', '.join(refittable)} (live blends and edits refit them)")
    return generator, ", ".join([f"tensorrt ({chosen.label} {chosen.version()}: {why}) from {folder}: "
                                 f"{len(loaded)} engines ({', '.join(loaded)})", f"setup {time.perf_counter() - t0:.1f} s",
                                 f"vs float32 eager: {how}", *notes])


def apply_tensorrt_backend(generator, *, precision: str = "auto", variants=(), flavor: str = "auto") -> tuple[object, str]:
    """--backend tensorrt without --engines: the full TensorRT builds a plan per call signature into the cache
    (apply_tensorrt); TensorRT for RTX builds an engine folder into the cache, keyed by the weights, the render size
    and its version, once, and loads it like --engines."""
    if generator.device.type != "cuda":
        raise SetupError(f"--backend tensorrt needs a CUDA device (the generator is on {generator.device}); "
                         "use --backend compile or eager")
    from engine.trt_build.flavors import resolve_flavor

    chosen, why = resolve_flavor(flavor, generator.device)
    if chosen.name == "trt":
        return apply_tensorrt(generator, precision=precision, variants=variants)
    import hashlib

    from engine.trt_build.cache import cache_root, weights_digest
    from engine.trt_build.engines import build_folder

    digest = hashlib.sha256("|".join([chosen.version(), f"{generator.width}x{generator.height}", *sorted(
        f"{role}:{weights_digest(m)}" for role, m in generator.modules().items())]).encode()).hexdigest()[:16]
    folder = cache_root() / "folders" / f"{generator.name}-{digest}"
    try:
        return apply_engine_folder(generator, folder, flavor=chosen.name, variants=variants)
    except SetupError as e:
        log.info("tensorrt: building %s (%s)", folder, e)
    build_folder(generator, folder, chosen, spec=generator.name, variants=variants, say=lambda line: log.info("tensorrt: %s", line))
    return apply_engine_folder(generator, folder, flavor=chosen.name, variants=variants)
