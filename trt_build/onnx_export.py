"""One recorded module call -> an ONNX graph (tensors in, tensors out; Python values baked in), and a check of that
graph against the eager outputs with ONNX Runtime."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from engine.trt_build.record import Call, is_fed
from torch.utils._pytree import tree_flatten, tree_unflatten

OPSET = 18


class BoundCall(torch.nn.Module):
    """The module with one call signature's Python values fixed: forward(*tensors) -> tuple of output tensors.
    Calls the module class's own forward (whatever backend runner may be installed on the instance)."""

    def __init__(self, call: Call):
        super().__init__()
        self.inner = call.module
        leaves, self._spec = tree_flatten((call.args, call.kwargs))
        fed = [is_fed(x) for x in leaves]  # Call.fed, in the same order
        self._slots = [i for i, f in enumerate(fed) if f]
        self._leaves = [None if f else x for x, f in zip(leaves, fed)]

    def forward(self, *tensors: torch.Tensor):
        leaves = list(self._leaves)
        for slot, x in zip(self._slots, tensors):
            leaves[slot] = x
        args, kwargs = tree_unflatten(leaves, self._spec)
        out = type(self.inner).forward(self.inner, *args, **kwargs)
        return tuple(tree_flatten(out)[0])


def io_names(call: Call) -> tuple[list[str], list[str]]:
    return [f"in{i}" for i in range(len(call.fed))], [f"out{j}" for j in range(len(call.outputs))]


def export_onnx(call: Call, path: Path, *, opset: int = OPSET, dynamic_shapes=None, keep_weight_names: bool = False) -> float:
    """Write `call` as an ONNX graph at `path` (weights beside it in path.data when large). Returns seconds taken.
    dynamic_shapes: torch.export's per-input Dims (trt_build.profiles) for an engine with an optimisation profile.
    keep_weight_names: skip the exporter's optimiser, whose constant folding turns weight expressions (a weight times
    its gain) into new anonymous initializers: a refittable engine needs every weight under its module name."""
    import os
    import shutil
    import warnings

    # Written in a scratch folder and moved in, model.onnx last: an export killed half-way never looks cached.
    scratch = path.parent / f".export-{os.getpid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    bound = BoundCall(call).eval()
    names_in, names_out = io_names(call)
    t0 = time.perf_counter()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(bound, tuple(call.fed), str(scratch / path.name), input_names=names_in,
                              output_names=names_out, opset_version=opset, dynamo=True, external_data=True,
                              verbose=False, dynamic_shapes=dynamic_shapes,
                              **({"optimize": False} if keep_weight_names else {}))
        for f in sorted(scratch.iterdir(), key=lambda f: f.name == path.name):  # weights first, the graph last
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return time.perf_counter() - t0


def check_onnx(call: Call, path: Path) -> float | None:
    """Largest |ONNX Runtime output - eager output| over all outputs (CPU execution), or None when ONNX Runtime is
    not installed. Both sides take the recorded inputs."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if any(x.dtype == torch.bfloat16 for x in [*call.fed, *call.outputs]):
        return None  # numpy (ONNX Runtime's input type) has no bfloat16
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names_in, _ = io_names(call)
    # The exporter may drop an input the graph does not use: feed what the session asks for.
    wanted = {i.name for i in session.get_inputs()}
    feeds = {n: x.detach().cpu().numpy() for n, x in zip(names_in, call.fed) if n in wanted}
    got = session.run(None, feeds)
    worst = 0.0
    for a, b in zip(got, call.outputs):
        ref = b.detach().float().cpu()
        worst = max(worst, float((torch.from_numpy(a).float() - ref).abs().max()) if ref.numel() else 0.0)
    return worst


def weight_names(call: Call, path: Path) -> dict[str, str]:
    """ONNX initializer name -> the module's parameter/buffer name, for the initializers that are the module's own
    weights (what a refit updates). The dynamo exporter names them after the module's state_dict (under BoundCall's
    `inner.`); constants it folded are left out."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    own = {name for name, _ in call.module.state_dict(keep_vars=True).items()}
    out = {}
    for init in model.graph.initializer:
        name = init.name[len("inner."):] if init.name.startswith("inner.") else init.name
        if name in own:
            out[init.name] = name
    return out
