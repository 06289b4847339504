"""Record what a generator's modules are called with during one frame: the signatures a backend has to serve.

A frame is rendered exactly as the loop renders it (engine.backends.common.render_frame); each module in
Generator.modules() gets a recorder as its instance `forward` for the duration, which runs the class's own forward
and keeps, per distinct call signature, a detached copy of the arguments and of the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

from engine.backends.common import (
    call_key,
    describe_call_key,
    render_frame,
    tensor_leaves,
)


def is_fed(x: Any) -> bool:
    """Is this call argument an engine input? Tensors with data are; empty ones (e.g. the (1, 0) label of an
    unconditional StyleGAN) carry none and are baked into the graph like the Python values. The exporter and the
    TensorRT runner both select inputs with this, so their orders agree."""
    return isinstance(x, torch.Tensor) and x.numel() > 0


@dataclass
class Call:
    """One module call signature, with the values of its first call."""

    role: str
    module: torch.nn.Module
    key: Any  # engine.backends.common.call_key: shapes, dtypes and the Python values of the call
    args: tuple
    kwargs: dict
    inputs: list[torch.Tensor]  # the call's tensors, in engine.backends.common.tensor_leaves order
    outputs: list[torch.Tensor]  # the eager outputs' tensors, flattened
    output_spec: TreeSpec  # how to rebuild the module's output structure from `outputs`

    def describe(self) -> str:
        return f"{self.role}({describe_call_key(self.key)})"

    @property
    def fed(self) -> list[torch.Tensor]:
        """The inputs an engine takes (is_fed), in call order."""
        return [x for x in self.inputs if is_fed(x)]


def _detached(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        with torch.inference_mode(False):
            return x.detach().clone()  # a normal tensor, also when recorded under inference mode
    return x


class _Recorder:
    def __init__(self, role: str, module: torch.nn.Module, calls: dict[Any, Call]):
        self.role, self.module, self.calls = role, module, calls
        self._eager = type(module).forward.__get__(module, type(module))

    def __call__(self, *args, **kwargs):
        out = self._eager(*args, **kwargs)
        key = call_key(args, kwargs)
        if key is None:
            raise TypeError(f"{self.role}: a call with arguments that cannot be exported (not tensors or plain values)")
        if key not in self.calls:
            leaves, spec = tree_flatten((args, kwargs))
            args_c, kwargs_c = tree_unflatten([_detached(x) for x in leaves], spec)
            out_leaves, out_spec = tree_flatten(out)
            if not all(isinstance(x, torch.Tensor) for x in out_leaves):
                raise TypeError(f"{self.role}: returns something other than tensors; it cannot become an engine")
            self.calls[key] = Call(self.role, self.module, key, args_c, kwargs_c, tensor_leaves(args_c, kwargs_c),
                                   [_detached(x) for x in out_leaves], out_spec)
        return out


def record_calls(generator, variants=()) -> dict[str, list[Call]]:
    """{role: [Call, ...]} for one default frame and one frame per parameter snapshot in `variants`
    (Generator.shape_variants), in first-call order. Modules must not have a backend installed."""
    modules = generator.modules()
    found: dict[str, dict[Any, Call]] = {role: {} for role in modules}
    for role, m in modules.items():
        if "forward" in m.__dict__:
            raise RuntimeError(f"{role} already has a backend installed; record on a fresh generator")
        m.forward = _Recorder(role, m, found[role])
    try:
        render_frame(generator)
        for params in variants:
            render_frame(generator, params)
    finally:
        for m in modules.values():
            m.__dict__.pop("forward", None)
    return {role: list(calls.values()) for role, calls in found.items() if calls}
