"""StyleGAN layer tools: layer view, layer edits (with blending as the base), feature-map bending.

Layer names are relative to the synthesis network, as `info()["layers"]` lists them: b4.conv1, b4.torgb,
b8.conv0, ... (StyleGAN2), input, L0_36_512, ... (StyleGAN3). A leading "synthesis." is accepted too.

* LayerView (seed 003's synthesis-layer view): a forward hook on the chosen layer captures its output
  (1, C, h, w) and stops the synthesis there (later layers are not computed); the maps become RGB by chosen
  channels, or PCA / mean, normalised, and are resized to the output size on the device.
* WeightController (seed 003's edit_layer_by_name + blending): each touched parameter is recomputed from a kept
  original as  base = original | lerp(original, other network, amount)  then  *= / += the edit values, all in
  place into the live parameter (no allocation). Untouched parameters are restored from their originals the
  moment an edit or blend stops covering them, so the network always returns to its loaded weights.
* Bender (Broad et al., "Network Bending", and Autolume's bending ops): forward hooks that transform a chosen
  set of feature maps of a layer on the device: translate, rotate, scale, erode, dilate, invert, threshold,
  multiply, ablate.

Every text here comes from a live parameter: parsing happens only when the text changes, and a malformed
clause is reported through `warn` and skipped (a show never stops on a typo). `check_*` functions raise
UsageError instead, for validating config files and the CLI.
"""

from __future__ import annotations

import fnmatch
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import UsageError
from engine.generators.expr import Expr, ExprError, parse as parse_expr

Warn = Callable[[str, str], None]  # (dedup key, message)


def _no_warn(key: str, message: str) -> None:
    pass


# ----------------------------------------------------------------------------------------------------------------
# Names.
# ----------------------------------------------------------------------------------------------------------------


def resolve_module(synthesis: torch.nn.Module, name: str) -> torch.nn.Module:
    """The synthesis submodule called `name` ("b32.conv1" or "synthesis.b32.conv1"). KeyError if none."""
    key = name.strip()
    if key.startswith("synthesis."):
        key = key[len("synthesis."):]
    modules = dict(synthesis.named_modules())
    if not key or key not in modules:
        raise KeyError(key)
    return modules[key]


def param_names_matching(names: Iterable[str], pattern: str) -> list[str]:
    """Full parameter names (mapping.*, synthesis.*) matched by `pattern`: an exact name, a dotted prefix
    ("b16" -> synthesis.b16.*, "mapping" -> mapping.*), or a wildcard pattern; "synthesis." may be left out."""
    pat = pattern.strip()
    out = []
    for n in names:
        for cand in (pat, "synthesis." + pat):
            if n == cand or n.startswith(cand + ".") or fnmatch.fnmatchcase(n, cand):
                out.append(n)
                break
    return out


# ----------------------------------------------------------------------------------------------------------------
# Layer view.
# ----------------------------------------------------------------------------------------------------------------


class _Captured(Exception):
    """Raised by the layer-view hook to stop the synthesis once the chosen layer has run."""

    def __init__(self, tensor: torch.Tensor):
        super().__init__("layer captured")
        self.tensor = tensor


class LayerView:
    """Render a synthesis layer's feature maps as the frame.

    set(name, channels, mode) arms a hook on the layer (re-arming only when the name changes); run(fn) calls the
    synthesis and returns the captured maps (1, C, h, w), or fn's own result when no layer is set.
    to_rgb(maps, size) -> (1, 3, size, size) in [-1, 1].
    """

    def __init__(self, synthesis: torch.nn.Module, warn: Warn = _no_warn):
        self.synthesis = synthesis
        self.warn = warn
        self.name = ""
        self._handle: Any = None
        self._basis: torch.Tensor | None = None  # (C, 3) PCA basis, fixed per layer
        self._center: torch.Tensor | None = None  # (C,)

    @property
    def active(self) -> bool:
        return self._handle is not None

    def set(self, name: str) -> None:
        name = name.strip()
        if name == self.name:
            return
        self.clear()
        self.name = name
        if not name:
            return
        try:
            module = resolve_module(self.synthesis, name)
        except KeyError:
            self.warn(f"layer:{name}", f"stylegan.layer {name!r} is not a synthesis layer; `engine info --generator` lists them; showing the image")
            return

        def hook(mod: torch.nn.Module, inputs: Any, output: Any) -> None:
            x = output[0] if isinstance(output, tuple) else output
            raise _Captured(x)

        self._handle = module.register_forward_hook(hook)

    def clear(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle = None
        self._basis = self._center = None
        self.name = ""

    def run(self, fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """(result, captured): the layer's maps and True, or fn()'s image and False."""
        try:
            return fn(), False
        except _Captured as c:
            return c.tensor, True

    def to_rgb(self, maps: torch.Tensor, size: tuple[int, int], channels: tuple[float, ...], mode: str) -> torch.Tensor:
        """maps (1, C, h, w) -> (1, 3, H, W) float32 in [-1, 1]."""
        x = maps[:1].float()
        c = x.shape[1]
        if channels:
            idx = [int(v) % c for v in channels]
            if len(idx) == 2:
                idx = idx + idx[-1:]
            # Slices, not x[:, list]: list indexing would upload an index tensor every frame.
            if len(idx) == 3:
                y = torch.cat([x[:, i:i + 1] for i in idx], dim=1)
            else:
                y = x[:, idx[0]:idx[0] + 1].expand(1, 3, *x.shape[2:])
        elif mode == "mean" or c == 1:
            y = x.mean(dim=1, keepdim=True).expand(1, 3, *x.shape[2:])
        else:
            if self._basis is None or self._basis.shape[0] != c:
                self._basis, self._center = self._pca(x)
            flat = x[0].reshape(c, -1) - self._center[:, None]  # (C, h*w)
            y = (self._basis.T @ flat).reshape(1, 3, *x.shape[2:])
        # Normalise per frame and channel: mean 0, +-2.5 std -> +-1 (device reductions, no host sync).
        mean = y.mean(dim=(2, 3), keepdim=True)
        std = y.std(dim=(2, 3), keepdim=True) + 1e-6
        y = ((y - mean) / (2.5 * std)).clamp(-1, 1)
        if tuple(y.shape[-2:]) != tuple(size):
            down = y.shape[-1] > size[1]
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False, antialias=down)
        return y

    @staticmethod
    def _pca(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Once per layer choice (a host sync is fine here): top-3 principal directions of the channels.
        c = x.shape[1]
        flat = x[0].reshape(c, -1).double()
        center = flat.mean(dim=1)
        cov = torch.cov(flat)
        evals, evecs = torch.linalg.eigh(cov)
        basis = evecs[:, -3:].flip(1)  # (C, k) strongest first
        if basis.shape[1] < 3:
            basis = torch.cat([basis, basis[:, -1:].expand(c, 3 - basis.shape[1])], dim=1)
        # Sign convention: each component's largest-magnitude loading is positive (stable colours).
        sign = torch.sign(basis.gather(0, basis.abs().argmax(dim=0, keepdim=True)))
        sign[sign == 0] = 1
        return (basis * sign).float(), center.float()


# ----------------------------------------------------------------------------------------------------------------
# Layer edits and blending: the weight controller.
# ----------------------------------------------------------------------------------------------------------------

_EDIT_RE = re.compile(r"^\s*([A-Za-z0-9_.*?\[\]\-]+)\s*([*+])=\s*(.+?)\s*$")


@dataclass
class Edit:
    pattern: str
    op: str  # "*" or "+"
    expr: Expr
    names: list[str] = field(default_factory=list)


def parse_edits(text: str, param_names: Iterable[str], warn: Warn = _no_warn, strict: bool = False) -> list[Edit]:
    """'b16.conv0.weight *= 1 + 0.5*sin(t); b8.conv1.bias += 0.2' -> [Edit]. Clauses that do not parse or match
    no parameter are skipped with a warning (strict: UsageError)."""
    names = list(param_names)
    edits = []
    for clause in (c for c in text.split(";") if c.strip()):
        m = _EDIT_RE.match(clause)
        try:
            if not m:
                raise UsageError(f"stylegan.edits: {clause.strip()!r} is not PARAM *= EXPR or PARAM += EXPR")
            pattern, op, src = m.groups()
            try:
                expr = parse_expr(src)
            except ExprError as e:
                raise UsageError(f"stylegan.edits: {e}") from None
            matched = param_names_matching(names, pattern)
            if not matched:
                raise UsageError(f"stylegan.edits: {pattern!r} matches no parameter (names look like synthesis.b16.conv0.weight)")
        except UsageError as e:
            if strict:
                raise
            warn(f"edit:{clause.strip()}", f"{e}; clause ignored")
            continue
        edits.append(Edit(pattern, op, expr, matched))
    return edits


def check_edits(text: str, net: torch.nn.Module) -> list[Edit]:
    """Validate edits text against a network: UsageError on the first bad clause."""
    return parse_edits(text, _float_tensors(net).keys(), strict=True)


def _float_tensors(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and floating-point buffers by full name (mapping.fc0.weight, synthesis.b8.conv0.noise_const...).
    Left out: fixed resampling filters, and StyleGAN3's synthesis.input.transform, which is not a weight but the
    live user transform (stylegan.translate_x/y, rotate): blending or restoring it from a kept original would undo
    the translation the show set."""
    out: dict[str, torch.Tensor] = {}
    for n, p in net.named_parameters():
        out[n] = p
    for n, b in net.named_buffers():
        if b.is_floating_point() and not n.endswith(("resample_filter", "input.transform")):
            out[n] = b
    return out


class WeightController:
    """Applies blending and edits to a network's live tensors, always from kept originals (see module doc)."""

    def __init__(self, net: torch.nn.Module):
        self.net = net
        self.tensors = _float_tensors(net)
        self.originals: dict[str, torch.Tensor] = {}
        self._state: dict[str, tuple] = {}  # name -> what was applied last time

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    def _original(self, name: str) -> torch.Tensor:
        o = self.originals.get(name)
        if o is None:
            o = self.originals[name] = self.tensors[name].detach().clone()
        return o

    def apply(self, t: float, edits: list[Edit], blend_amounts: dict[str, float], other: dict[str, torch.Tensor] | None) -> None:
        """Bring every tensor to: base (original, or lerp(original, other, amount)) then the edits, in order.
        Tensors whose recipe did not change since the last call are not touched (static edits cost nothing)."""
        want: dict[str, tuple] = {}
        if other is not None:
            for name, amount in blend_amounts.items():
                if amount != 0.0 and name in other:
                    want[name] = (("lerp", amount),)
        for e in edits:
            v = e.expr(t)
            if not math.isfinite(v):
                continue  # a formula hit a math error this frame: leave the edit out rather than poison weights
            for name in e.names:
                want[name] = want.get(name, ()) + ((e.op, v),)
        with torch.no_grad():
            for name in [n for n in self._state if n not in want]:
                self.tensors[name].copy_(self.originals[name])  # restore exactly
                del self._state[name]
            for name, recipe in want.items():
                if self._state.get(name) == recipe:
                    continue
                live = self.tensors[name]
                orig = self._original(name)
                steps = list(recipe)
                if steps and steps[0][0] == "lerp":
                    torch.lerp(orig, other[name].to(orig.dtype), steps.pop(0)[1], out=live.data)  # type: ignore[index]
                else:
                    live.copy_(orig)
                for op, v in steps:
                    if op == "*":
                        live.mul_(v)
                    else:
                        live.add_(v)
                self._state[name] = recipe

    def restore(self) -> None:
        """Every touched tensor back to its original."""
        self.apply(0.0, [], {}, None)

    @property
    def touched(self) -> list[str]:
        return list(self._state)


# ----------------------------------------------------------------------------------------------------------------
# Feature-map bending.
# ----------------------------------------------------------------------------------------------------------------

BEND_OPS: dict[str, tuple[int, int]] = {
    # op: (min args, max args)
    "translate": (2, 2), "rotate": (1, 1), "scale": (1, 1), "erode": (1, 1), "dilate": (1, 1),
    "invert": (0, 0), "threshold": (1, 1), "multiply": (1, 1), "ablate": (0, 0),
}
_BEND_RE = re.compile(r"^\s*(\S+)\s+([a-z]+)\s*\((.*)\)\s*(?:\[(.*)\])?\s*$", re.S)


@dataclass
class BendClause:
    layer: str
    op: str
    args: list[Expr]
    channels: str  # "all" | "0 3 8-15" | "25%"
    _index_cache: dict[int, torch.Tensor | None] = field(default_factory=dict)


def _split_args(s: str) -> list[str]:
    """Split on top-level commas (commas inside min(a, b) stay)."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    tail = "".join(cur)
    if tail.strip() or out:
        out.append(tail)
    return [a for a in (x.strip() for x in out)]


#: No synthesis layer has more channels than this (config-f: 512; channel_max is bounded far below): a larger index
#: or range end is a typo, refused where the text is parsed instead of costing memory per frame.
MAX_CHANNEL_INDEX = 65535


def _check_channels(spec: str) -> str:
    spec = spec.strip() or "all"
    if spec == "all" or re.fullmatch(r"\d{1,3}(\.\d+)?%", spec):
        return spec
    for tok in re.split(r"[\s,]+", spec):
        if not re.fullmatch(r"\d+(-\d+)?", tok):
            raise UsageError(f"stylegan.bend: channel selection {spec!r} is not all, 'P%' or indices/ranges like '0 3 8-15'")
        if any(len(v) > 6 or int(v) > MAX_CHANNEL_INDEX for v in tok.split("-")):
            raise UsageError(f"stylegan.bend: channel {tok!r} is beyond any layer (indices 0..{MAX_CHANNEL_INDEX})")
    return spec


def parse_bend(text: str, layer_ok: Callable[[str], bool], warn: Warn = _no_warn, strict: bool = False) -> list[BendClause]:
    """'b32.conv1 rotate(30*t) [0-63]; ...' -> [BendClause]; bad clauses are warned about and skipped."""
    clauses = []
    for raw in (c for c in text.split(";") if c.strip()):
        try:
            m = _BEND_RE.match(raw)
            if not m:
                raise UsageError(f"stylegan.bend: {raw.strip()!r} is not 'LAYER OP(ARGS) [CHANNELS]', e.g. 'b32.conv1 rotate(30) [0-63]'")
            layer, op, args_src, chans = m.groups()
            if op not in BEND_OPS:
                raise UsageError(f"stylegan.bend: unknown op {op!r}; use {', '.join(BEND_OPS)}")
            args_txt = _split_args(args_src)
            lo, hi = BEND_OPS[op]
            if not lo <= len(args_txt) <= hi:
                raise UsageError(f"stylegan.bend: {op}() takes {lo if lo == hi else f'{lo}-{hi}'} argument(s), got {len(args_txt)}")
            try:
                args = [parse_expr(a) for a in args_txt]
            except ExprError as e:
                raise UsageError(f"stylegan.bend: {e}") from None
            if not layer_ok(layer):
                raise UsageError(f"stylegan.bend: {layer!r} is not a synthesis layer (`engine info --generator` lists them)")
            clauses.append(BendClause(layer, op, args, _check_channels(chans or "")))
        except UsageError as e:
            if strict:
                raise
            warn(f"bend:{raw.strip()}", f"{e}; clause ignored")
    return clauses


def channel_index(spec: str, c: int, layer: str) -> torch.Tensor | None:
    """Channel selection -> sorted index list (None = all channels). 'P%' picks a fixed pseudo-random subset
    (seeded by the layer name, so it is the same every run and every frame)."""
    if spec == "all":
        return None
    if spec.endswith("%"):
        k = int(round(float(spec[:-1]) / 100.0 * c))
        k = min(max(k, 0), c)
        perm = np.random.RandomState(zlib.crc32(layer.encode())).permutation(c)[:k]
        return torch.as_tensor(np.sort(perm), dtype=torch.long)
    idx: set[int] = set()
    for tok in re.split(r"[\s,]+", spec.strip()):
        if "-" in tok:
            a, b = (int(v) for v in tok.split("-"))
            idx.update(range(min(a, b), min(max(a, b), c - 1) + 1))  # the layer's channels bound the work
        else:
            idx.add(int(tok))
    return torch.as_tensor(sorted(i for i in idx if i < c), dtype=torch.long)


def bend_maps(x: torch.Tensor, op: str, args: list[float]) -> torch.Tensor:
    """One bending op on feature maps x (N, k, h, w) -> same shape. Pure device ops."""
    if op == "multiply":
        return x * args[0]
    if op == "ablate":
        return torch.zeros_like(x)
    if op == "threshold":
        return (x >= args[0]).to(x.dtype)
    if op == "invert":
        # Reflect each map within its own range: its brightest parts become its darkest.
        hi = x.amax(dim=(2, 3), keepdim=True)
        lo = x.amin(dim=(2, 3), keepdim=True)
        return hi + lo - x
    if op in ("erode", "dilate"):
        # A radius past the map's size changes nothing more: bound it there, and filter rows then columns (a square
        # max is separable), so the cost is O(h w r), not O(h w r^2), whatever number arrives.
        h, w = x.shape[-2:]
        radius = args[0] if math.isfinite(args[0]) else 0.0
        r = int(min(max(round(radius), 0), max(h, w)))
        if r == 0:
            return x
        k = 2 * r + 1
        y = x if op == "dilate" else -x
        y = F.max_pool2d(y, (k, 1), stride=1, padding=(r, 0))
        y = F.max_pool2d(y, (1, k), stride=1, padding=(0, r))
        return y if op == "dilate" else -y
    if op in ("translate", "rotate", "scale"):
        dx = dy = 0.0
        angle = 0.0
        s = 1.0
        # Bounded so the affine matrix fits float32 whatever arrives (1.7e38 overflowed it): beyond +-1e4 map widths
        # the content is long gone, angles repeat every 360 degrees, a scale past 1e6 (or under 1e-6) is all or nothing.
        if op == "translate":
            dx, dy = (min(max(v, -1e4), 1e4) for v in args)
        elif op == "rotate":
            angle = math.radians(math.fmod(args[0], 360.0))
        else:
            s = math.copysign(min(max(abs(args[0]), 1e-6), 1e6), args[0])
        # Output pixel p samples input (1/s) R(-angle) (p - 2d): content moves by (dx, dy) map widths,
        # rotates clockwise on screen by `angle`, and grows by s.
        ca, sa = math.cos(angle) / s, math.sin(angle) / s
        vals = (ca, sa, -(ca * 2 * dx + sa * 2 * dy), -sa, ca, -(-sa * 2 * dx + ca * 2 * dy))
        # Filled element by element from python floats (kernel arguments): torch.tensor(list, device=cuda)
        # would be a synchronous host->device copy every frame.
        theta = x.new_empty(6)
        for i, v in enumerate(vals):
            theta[i] = v
        theta = theta.reshape(1, 2, 3).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    raise ValueError(op)


class Bender:
    """Forward hooks applying BendClauses to synthesis layers. set(text) re-arms only when the text changes;
    set_time(t) before each frame gives the clauses' formulas their t."""

    def __init__(self, synthesis: torch.nn.Module, warn: Warn = _no_warn):
        self.synthesis = synthesis
        self.warn = warn
        self.text = ""
        self.clauses: list[BendClause] = []
        self._handles: list[Any] = []
        self.t = 0.0

    def _layer_ok(self, name: str) -> bool:
        try:
            resolve_module(self.synthesis, name)
            return True
        except KeyError:
            return False

    def set(self, text: str) -> None:
        if text == self.text:
            return
        self.clear()
        self.text = text
        self.clauses = parse_bend(text, self._layer_ok, self.warn)
        by_layer: dict[str, list[BendClause]] = {}
        for c in self.clauses:
            by_layer.setdefault(c.layer, []).append(c)
        for layer, clauses in by_layer.items():
            module = resolve_module(self.synthesis, layer)
            self._handles.append(module.register_forward_hook(self._make_hook(layer, clauses)))

    def set_time(self, t: float) -> None:
        self.t = float(t)

    def _make_hook(self, layer: str, clauses: list[BendClause]):
        def hook(mod: torch.nn.Module, inputs: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (self.apply(output[0], layer, clauses),) + tuple(output[1:])
            return self.apply(output, layer, clauses)

        return hook

    def apply(self, x: torch.Tensor, layer: str, clauses: list[BendClause]) -> torch.Tensor:
        """x (N, C, h, w) -> bent (N, C, h, w)."""
        for cl in clauses:
            args = [a(self.t) for a in cl.args]
            if not all(math.isfinite(a) for a in args):
                continue
            c = x.shape[1]
            if c not in cl._index_cache:
                idx = channel_index(cl.channels, c, layer)
                cl._index_cache[c] = None if idx is None else idx.to(x.device)
            idx = cl._index_cache[c]
            if idx is None:
                x = bend_maps(x, cl.op, args)
            elif idx.numel():
                sub = bend_maps(x.index_select(1, idx), cl.op, args)
                x = x.index_copy(1, idx, sub)
        return x

    def clear(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clauses = []
        self.text = ""
