"""Network blending (seed 003): LERP the weights of two networks of the same architecture, per group or layer.

    live = lerp(A, B, amount) = A + amount * (B - A),   amount not clamped (<0 and >1 extrapolate)

`Blend` holds network B's tensors on the device (once, when B is loaded) and turns the `stylegan.blend_layers`
text plus the `stylegan.blend` amount into a per-tensor amount map; engine.generators.layers.WeightController
writes the blended tensors in place from A's kept originals.

blend_layers grammar: space/comma-separated entries, each GROUP or GROUP=AMOUNT. GROUP is a dotted prefix
(mapping, synthesis, b16, b16.conv0, L3_52_1024) or a wildcard pattern (b*.torgb.*); AMOUNT is a number or a
formula of t without spaces (0.5, 1+sin(t)); a bare GROUP gets `stylegan.blend`. Later entries win, so
'synthesis b4=0' blends everything but the 4x4 block.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

import torch

from engine.errors import UsageError
from engine.generators.expr import Expr, ExprError, parse as parse_expr
from engine.generators.layers import Warn, _float_tensors, _no_warn, param_names_matching


def check_compatible(a: torch.nn.Module, b: torch.nn.Module, what: str) -> None:
    """UsageError unless b has every float tensor of a with the same shape (same architecture and size)."""
    ta, tb = _float_tensors(a), _float_tensors(b)
    missing = [n for n in ta if n not in tb]
    if missing:
        raise UsageError(f"{what}: not the same architecture as the generator (it lacks {missing[0]}{' and more' if len(missing) > 1 else ''}); blend networks of one config and resolution")
    for n, t in ta.items():
        if tuple(tb[n].shape) != tuple(t.shape):
            raise UsageError(f"{what}: {n} is {tuple(tb[n].shape)} there but {tuple(t.shape)} here; blend networks of one config and resolution")


class Blend:
    """Network B's tensors (on A's device, A's dtypes) + the blend_layers parser."""

    def __init__(self, net: torch.nn.Module, other: torch.nn.Module, source: str):
        check_compatible(net, other, source)
        mine = _float_tensors(net)
        theirs = _float_tensors(other)
        self.source = source
        self.other: dict[str, torch.Tensor] = {
            n: theirs[n].detach().to(device=t.device, dtype=t.dtype).clone() for n, t in mine.items()
        }
        self._names = list(mine)
        self._parsed_key: str | None = None
        self._entries: list[tuple[list[str], Expr | None]] = []
        self._cache_key: tuple | None = None
        self._cache: dict[str, float] = {}

    def _parse(self, text: str, warn: Warn) -> None:
        self._entries = parse_blend_layers(text, self._names, warn)
        self._parsed_key = text

    def amounts(self, text: str, amount: float, t: float, warn: Warn = _no_warn) -> dict[str, float]:
        """{tensor name: amount} for this frame. Cached while nothing time-dependent changes."""
        if text != self._parsed_key:
            self._parse(text, warn)
        timed = any(e is not None and not e.constant for _, e in self._entries)
        key = (text, float(amount), float(t) if timed else None)
        if key == self._cache_key:
            return self._cache
        out: dict[str, float] = {}
        for names, e in self._entries:
            v = float(amount) if e is None else e(t)
            if not math.isfinite(v):
                continue
            for n in names:
                out[n] = v
        self._cache_key, self._cache = key, out
        return out


def parse_blend_layers(text: str, names: Iterable[str], warn: Warn = _no_warn, strict: bool = False) -> list[tuple[list[str], Expr | None]]:
    """[(matched tensor names, amount expr or None for the global amount)] in order."""
    names = list(names)
    entries = []
    for tok in (x for x in re.split(r"[\s,]+", text.strip()) if x):
        group, eq, amount_src = tok.partition("=")
        try:
            expr = None
            if eq:
                try:
                    expr = parse_expr(amount_src)
                except ExprError as e:
                    raise UsageError(f"stylegan.blend_layers: {e}") from None
            matched = param_names_matching(names, group)
            if not matched:
                raise UsageError(f"stylegan.blend_layers: {group!r} matches no tensor (use mapping, synthesis, b16, b16.conv0, ...)")
        except UsageError as e:
            if strict:
                raise
            warn(f"blend:{tok}", f"{e}; entry ignored")
            continue
        entries.append((matched, expr))
    return entries
