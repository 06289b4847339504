"""Shared machinery of the backends: the runner they install on a generator's modules, precision selection with
a numerical check, and setup-time frames.

A BackendRunner takes over one module's forward (Generator.modules(): e.g. "mapping", "synthesis") by setting it
as the module's instance attribute `forward`. The module object stays what it was: same class (isinstance checks
in generator code hold), same attributes, same parameter names (state_dict, weight edits, layer names), and the
generator keeps calling it as before. Per backend the runner casts floating inputs to the chosen precision, runs
the module's original forward through torch.compile, and on CUDA captures a CUDA graph per call signature (fixed
shapes) that later calls replay. `uninstall` deletes the attribute and the class's forward is back.

Contract for generators whose modules are graphed (the compile backend on CUDA):
  * a graphed module returns the same output tensors on every call (static buffers the next call overwrites): use
    or clone an output before calling the same module again;
  * parameters and buffers may be updated in place (weight edits, blending), never reassigned;
  * non-tensor arguments (str, bool, int, float) are part of the graph's key and baked into the capture (and,
    with torch.compile's dynamic=False, into the compiled code). Setup prepares the signatures it is shown (the
    default frame, plus Generator.shape_variants when a governor will move between them); after setup the runner
    is sealed and any other signature runs eager, with a note, rather than compiling or capturing in the hot loop.
    Pass live knobs (truncation psi, noise strength) as 0-d tensors so a new value is not a new signature;
  * while any forward hook is registered inside the module (layer view, network bending), calls run the original
    eager forward: hooks are Python and would be frozen into a graph or force recompiles mid-show.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

log = logging.getLogger("engine.backends")

MAX_GRAPHS = 8  # captures per module before it stops graphing new signatures
WARMUP_CALLS = 3  # on a side stream before capture: compile, autotune, cuDNN benchmark, lazy inits
# Precision check against the fp32 eager frame, for images in [-1, 1]: mean |diff| within 2.5 8-bit levels.
MEAN_ABS_TOLERANCE = 0.02


def _leaf_key(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return (x.shape, x.dtype, x.device)
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    raise TypeError  # anything else: no graph for this call


def call_key(args: tuple, kwargs: dict) -> Any:
    """A hashable signature of a call (shapes, dtypes, non-tensor values), or None when it has unhashable or
    unknown arguments we do not graph. Flat calls (the common case) take a fast path (a few us)."""
    try:
        return (tuple(_leaf_key(a) for a in args), tuple((k, _leaf_key(v)) for k, v in kwargs.items()))
    except TypeError:
        pass
    leaves, spec = tree_flatten((args, kwargs))
    try:
        return (spec, tuple(_leaf_key(x) for x in leaves))
    except TypeError:
        return None


def describe_call_key(key: Any) -> str:
    """A call key for a log line: the tensor shapes and dtypes, e.g. '(1, 512) float32, () float32'."""
    shapes: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, tuple) and len(x) == 3 and isinstance(x[0], torch.Size):  # a tensor's _leaf_key
            shapes.append(f"{tuple(x[0])} {str(x[1]).removeprefix('torch.')}")
        elif isinstance(x, (tuple, list)):
            for y in x:
                walk(y)

    walk(key)
    return ", ".join(shapes) or "non-tensor arguments"


_NESTED = (list, tuple, dict)


def tensor_leaves(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The call's tensors in a fixed order (the same at capture and at replay)."""
    if not any(isinstance(a, _NESTED) for a in args) and not any(isinstance(v, _NESTED) for v in kwargs.values()):
        leaves = [*args, *kwargs.values()]
    else:
        leaves = tree_flatten((args, kwargs))[0]
    return [x for x in leaves if isinstance(x, torch.Tensor)]


@dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]  # static input buffers, in tensor_leaves order
    output: Any  # static outputs (tensor or structure of tensors)


_global_hooks = (torch.nn.modules.module._global_forward_hooks, torch.nn.modules.module._global_forward_pre_hooks)


class BackendRunner:
    """Runs one module's forward for a backend (installed by `install`, removed by `uninstall`).

    dtype: cast floating tensor inputs to it (the module's parameters were cast in place already) and floating
        outputs back to the first floating input's dtype, so the generator's own code never sees the change.
    compile_mode: None = no torch.compile, else the torch.compile mode.
    cuda_graphs: capture and replay a CUDA graph per call signature (CUDA only).
    """

    def __init__(self, module: torch.nn.Module, role: str, *, dtype: torch.dtype | None = None,
                 compile_mode: str | None = None, cuda_graphs: bool = False):
        self.role = role
        self.dtype = dtype
        self.compile_mode = compile_mode
        self.cuda_graphs = cuda_graphs
        # The class's forward bound to this module: what the module did before, whatever is installed on it.
        self._eager: Callable = type(module).forward.__get__(module, type(module))
        self._fn: Callable = self._eager
        if compile_mode is not None:
            # dynamic=False: shapes are fixed at setup; a resolution change rebuilds the generator and backend.
            self._fn = torch.compile(self._eager, mode=compile_mode, dynamic=False)
        self._submodules = [m for m in module.modules() if m is not module]
        self._graphs: dict[Any, _Graph | None] = {}
        self.notes: list[str] = []  # why calls were not graphed (reported by apply_backend)
        # After setup the runner is sealed: a call signature it has not seen runs eager instead of compiling and
        # capturing in the hot loop (inductor with max-autotune takes minutes, a capture syncs the device).
        self.sealed = False
        self._prepared: set[Any] = set()  # signatures called before sealing (compiled, maybe captured)
        self._noted: set[Any] = set()  # unprepared signatures met after sealing, noted once each
        self.replays = 0
        self.ungraphed_calls = 0
        self.eager_calls = 0

    def _hooked(self) -> bool:
        return bool(_global_hooks[0] or _global_hooks[1]) or any(
            m._forward_hooks or m._forward_pre_hooks for m in self._submodules)

    def _run(self, args: tuple, kwargs: dict, fn: Callable | None = None):
        """One real (non-replay) call: cast in, call, cast out."""
        fn = fn or self._fn
        out_dtype = None
        if self.dtype is not None:
            leaves, spec = tree_flatten((args, kwargs))
            for x in leaves:
                if isinstance(x, torch.Tensor) and x.is_floating_point():
                    out_dtype = x.dtype
                    break
            leaves = [x.to(self.dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in leaves]
            args, kwargs = tree_unflatten(leaves, spec)
        if fn is self._eager:
            out = fn(*args, **kwargs)
        else:
            # Compiled code runs under no_grad, not inference_mode: dynamo's guards on NVlabs-style numpy scalar
            # attributes (weight_gain = np.float64) fail "on the same frame they were created" under
            # inference_mode (torch 2.13), aborting the compile. Inference tensors from the loop are valid inputs.
            with torch.inference_mode(False), torch.no_grad():
                out = fn(*args, **kwargs)
        if out_dtype is not None and out_dtype != self.dtype:
            leaves, spec = tree_flatten(out)
            out = tree_unflatten([x.to(out_dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                                  for x in leaves], spec)
        return out

    def __call__(self, *args, **kwargs):
        if self._hooked():
            self.eager_calls += 1
            return self._run(args, kwargs, self._eager)
        if self._fn is self._eager and not self.cuda_graphs:
            return self._run(args, kwargs)  # eager backend: nothing is specialised on argument values
        key = call_key(args, kwargs)
        if self.sealed and key not in self._prepared:
            # A call signature setup did not prepare: a new shape, or a live number passed as a Python scalar
            # (compiled code specialises on it with dynamic=False). Compiling or capturing now would stall the show
            # for seconds (minutes with max-autotune): it runs eager instead, every time.
            self.eager_calls += 1
            self._note_once(key, f"{self.role}: a call signature not prepared at setup runs eager: {describe_call_key(key)}")
            return self._run(args, kwargs, self._eager)
        if not self.sealed:
            self._prepared.add(key)
        if not self.cuda_graphs:
            return self._run(args, kwargs)
        g = self._graphs.get(key) if key is not None else None
        if g is None:
            if key is None or not self._may_capture(key):
                self.ungraphed_calls += 1
                return self._run(args, kwargs)
            g = self._capture(key, args, kwargs)
            if g is None:
                self.ungraphed_calls += 1
                return self._run(args, kwargs)
        # Replay: refresh the static inputs (device-to-device copies on the current stream), then the graph.
        for dst, x in zip(g.inputs, tensor_leaves(args, kwargs)):
            if dst.data_ptr() != x.data_ptr():
                dst.copy_(x)
        g.graph.replay()
        self.replays += 1
        return g.output

    def _note_once(self, key: Any, message: str) -> None:
        """A note (and one warning) per key: why calls of that kind do not take the fast path."""
        if key not in self._noted and len(self.notes) < 16:
            self._noted.add(key)
            self.notes.append(message)
            log.warning("%s", message)

    def _may_capture(self, key: Any) -> bool:
        """Capture a graph for a new signature? Not when it was tried before or the module has MAX_GRAPHS already."""
        if key in self._graphs:
            return False  # capture failed for it before
        if len(self._graphs) >= MAX_GRAPHS:
            self._graphs[key] = None
            self.notes.append(f"{self.role}: more than {MAX_GRAPHS} call signatures; new ones run ungraphed")
            return False
        return True

    def _capture(self, key: Any, args: tuple, kwargs: dict) -> _Graph | None:
        # One static clone per distinct input tensor; the graph reads them, replay refreshes them.
        static: dict[int, torch.Tensor] = {}
        for x in tensor_leaves(args, kwargs):
            if id(x) not in static:
                static[id(x)] = x.detach().clone()
        leaves, spec = tree_flatten((args, kwargs))
        s_args, s_kwargs = tree_unflatten([static[id(x)] if isinstance(x, torch.Tensor) else x for x in leaves], spec)
        inputs = [static[id(x)] for x in tensor_leaves(args, kwargs)]
        device = inputs[0].device if inputs else torch.device("cuda", torch.cuda.current_device())
        t0 = time.perf_counter()
        # torch.cuda.graph's __exit__ ends the capture before it leaves its capture stream: when the capture fails
        # there, the capture stream would stay current for the rest of the process. Restore the caller's stream.
        caller_stream = torch.cuda.current_stream(device)
        try:
            # Warm-up on a side stream (as torch.cuda.graphs documents): the first compiled call compiles and
            # autotunes, cuDNN picks algorithms, lazy buffers get allocated, none of which may happen in capture.
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_CALLS):
                    self._run(s_args, s_kwargs)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                output = self._run(s_args, s_kwargs)
            torch.cuda.current_stream(device).synchronize()  # capture happens at setup (or on a new signature)
        except Exception as e:  # a sync, a CPU op or an unsupported kernel inside: run this signature ungraphed
            torch.cuda.set_stream(caller_stream)
            self._graphs[key] = None
            self.notes.append(f"{self.role}: CUDA graph capture failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
            log.warning("%s", self.notes[-1])
            return None
        g = _Graph(graph, inputs, output)
        self._graphs[key] = g
        log.info("%s: captured a CUDA graph in %.1f s", self.role, time.perf_counter() - t0)
        return g

    @property
    def graph_count(self) -> int:
        return sum(1 for g in self._graphs.values() if g is not None)


def install(modules: dict[str, torch.nn.Module], make: Callable[[str, torch.nn.Module], BackendRunner]) -> dict[str, BackendRunner]:
    """Give each module a runner: module.forward = make(role, module). Returns {role: runner}."""
    runners = {}
    for role, m in modules.items():
        uninstall({role: m})
        runners[role] = make(role, m)
        m.forward = runners[role]  # an instance attribute: nn.Module.__call__ finds it before the class's
    return runners


def uninstall(modules: dict[str, torch.nn.Module]) -> None:
    for m in modules.values():
        if isinstance(m.__dict__.get("forward"), BackendRunner):
            del m.__dict__["forward"]


def runner_of(module: torch.nn.Module) -> BackendRunner | None:
    r = module.__dict__.get("forward")
    return r if isinstance(r, BackendRunner) else None


# ---------------------------------------------------------------------------------------------------------------
# Setup-time frames and checks
# ---------------------------------------------------------------------------------------------------------------


def render_frame(generator, params=None) -> torch.Tensor:
    """One frame at `params` (default: the defaults), t = 0, exactly as the loop calls it (inference mode); cloned
    to fp32 so a graphed output buffer can be compared after later calls. Source generators get a mid-grey source."""
    from engine.clock import FrameTime
    from engine.params import Params

    with torch.inference_mode():
        source = None
        if generator.wants_source:
            source = torch.zeros((1, 3, generator.height, generator.width), device=generator.device)
        out = generator(params if params is not None else Params(), FrameTime(0.0, 0, 0.0), source)
        return out.float().clone()


def compare(out: torch.Tensor, ref: torch.Tensor) -> tuple[bool, str]:
    """(acceptable, 'mean |diff| x, max y') of a frame against the fp32 eager reference frame."""
    if out.shape != ref.shape:
        return False, f"shape {tuple(out.shape)} != {tuple(ref.shape)}"
    if not bool(torch.isfinite(out).all()):
        return False, "non-finite values"
    diff = (out - ref).abs()
    mean, mx = float(diff.mean()), float(diff.max())
    return mean <= MEAN_ABS_TOLERANCE, f"mean |diff| {mean:.2g}, max {mx:.2g}"


def time_frames(generator, n: int = 5) -> float:
    """Median seconds per frame over n frames after one warm-up (CUDA events on CUDA). Setup only."""
    render_frame(generator)
    times = []
    for _ in range(n):
        if generator.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            render_frame(generator)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            render_frame(generator)
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


class StateSnapshot:
    """Copies (on the CPU) of the modules' parameters and buffers, to undo an in-place precision cast exactly
    (fp32 -> fp16 -> fp32 is lossy). Restoring assigns .data, so every tensor keeps its identity."""

    def __init__(self, modules: dict[str, torch.nn.Module]):
        self.modules = modules
        self.states = {role: {k: v.detach().to("cpu", copy=True) for k, v in _tensors(m)} for role, m in modules.items()}

    def restore(self) -> None:
        with torch.no_grad():
            for role, m in self.modules.items():
                for k, v in _tensors(m):
                    v.data = self.states[role][k].to(v.device)


def _tensors(m: torch.nn.Module):
    yield from m.named_parameters()
    yield from m.named_buffers()


def cast_modules(modules: dict[str, torch.nn.Module], dtype: torch.dtype) -> None:
    """Cast floating parameters and buffers in place (tensor identity kept, as StateSnapshot.restore does)."""
    with torch.no_grad():
        for m in modules.values():
            for _, v in _tensors(m):
                if v.is_floating_point():
                    v.data = v.data.to(dtype)
