"""Safe arithmetic expressions of time, for live parameters such as "1 + 0.5*sin(t)".

Text from OSC or a config file is parsed with `ast` and checked against a whitelist; it is never passed to
eval/exec. Allowed:
    numbers; the variable t (seconds on the show clock); constants pi, e, tau
    + - * / // % ** (binary), unary + -; parentheses
    sin cos tan asin acos atan atan2 abs min max clamp(x, lo, hi) exp log sqrt floor ceil round sign
    fract(x) (x - floor(x)), mix(a, b, k) (a + (b - a) k), step(edge, x), smoothstep(e0, e1, x),
    noise(x) (smooth 1-D value noise in [-1, 1], deterministic), saw(x) (0..1 ramp with period 1),
    tri(x) (0..1..0 triangle with period 1), square(x) (+-1 with period 1), pulse(x, duty)
Anything else (attributes, subscripts, names, calls of other functions, comparisons, lambdas, strings...)
raises ExprError naming the offending part.

A parsed expression is a tree of python closures: evaluating one per frame costs microseconds and touches
no device. Math errors (division by zero, log of a negative, overflow) evaluate to nan instead of raising, so
a live show never stops on a formula; callers skip non-finite values.
"""

from __future__ import annotations

import ast
import math
from typing import Callable

__all__ = ["ExprError", "Expr", "parse", "evaluate", "FUNCTIONS"]

MAX_LENGTH = 1000
MAX_NODES = 400
#: Largest |exponent| accepted by **: keeps 9**9**9-style inputs from stalling the render thread.
MAX_EXPONENT = 1024.0


class ExprError(ValueError):
    """The text is not a valid expression; the message says what is wrong and what is allowed."""


def _hash01(i: int) -> float:
    # Integer hash -> [0, 1): a fixed lattice of random values for noise().
    h = (i * 374761393 + 668265263) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    h ^= h >> 16
    return h / 4294967296.0


def _noise(x: float) -> float:
    """Smooth value noise: random values at integers, smoothstep-interpolated between them. Range [-1, 1]."""
    i = math.floor(x)
    f = x - i
    u = f * f * (3 - 2 * f)
    a = _hash01(int(i)) * 2 - 1
    b = _hash01(int(i) + 1) * 2 - 1
    return a + (b - a) * u


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def _smoothstep(e0: float, e1: float, x: float) -> float:
    if e1 == e0:
        return 0.0 if x < e0 else 1.0
    k = _clamp((x - e0) / (e1 - e0), 0.0, 1.0)
    return k * k * (3 - 2 * k)


def _fract(x: float) -> float:
    return x - math.floor(x)


FUNCTIONS: dict[str, tuple[Callable[..., float], tuple[int, int]]] = {
    # name: (function, (min args, max args))
    "sin": (math.sin, (1, 1)), "cos": (math.cos, (1, 1)), "tan": (math.tan, (1, 1)),
    "asin": (math.asin, (1, 1)), "acos": (math.acos, (1, 1)), "atan": (math.atan, (1, 1)),
    "atan2": (math.atan2, (2, 2)),
    "abs": (abs, (1, 1)), "min": (min, (2, 16)), "max": (max, (2, 16)), "clamp": (_clamp, (3, 3)),
    "exp": (math.exp, (1, 1)), "log": (math.log, (1, 1)), "sqrt": (math.sqrt, (1, 1)),
    "floor": (lambda x: float(math.floor(x)), (1, 1)), "ceil": (lambda x: float(math.ceil(x)), (1, 1)),
    "round": (lambda x: float(round(x)), (1, 1)), "sign": (lambda x: float((x > 0) - (x < 0)), (1, 1)),
    "fract": (_fract, (1, 1)), "mix": (lambda a, b, k: a + (b - a) * k, (3, 3)),
    "step": (lambda e, x: 0.0 if x < e else 1.0, (2, 2)), "smoothstep": (_smoothstep, (3, 3)),
    "noise": (_noise, (1, 1)), "saw": (_fract, (1, 1)),
    "tri": (lambda x: 1.0 - abs(2.0 * _fract(x) - 1.0), (1, 1)),
    "square": (lambda x: 1.0 if _fract(x) < 0.5 else -1.0, (1, 1)),
    "pulse": (lambda x, d: 1.0 if _fract(x) < d else 0.0, (2, 2)),
}
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": 2 * math.pi}
VARIABLES = ("t",)

_Fn = Callable[[dict], float]


def _pow(a: float, b: float) -> float:
    if abs(b) > MAX_EXPONENT:
        raise OverflowError("exponent too large")
    return math.pow(a, b)


_BINOPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: float(math.floor(a / b)),
    ast.Mod: lambda a, b: a % b, ast.Pow: _pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.UAdd: lambda a: +a, ast.USub: lambda a: -a}


class Expr:
    """A parsed expression. `expr(t=1.5)` -> float (nan on a math error). `constant` is True when it does
    not depend on t (callers evaluate it once)."""

    __slots__ = ("text", "_fn", "constant")

    def __init__(self, text: str, fn: _Fn, constant: bool):
        self.text = text
        self._fn = fn
        self.constant = constant

    def __call__(self, t: float = 0.0) -> float:
        try:
            v = float(self._fn({"t": float(t)}))
        except (ArithmeticError, ValueError, TypeError):
            return math.nan
        return v

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"


def parse(text: str) -> Expr:
    """Parse `text` into an Expr. Raises ExprError (one line: what is wrong, what is allowed)."""
    if not isinstance(text, str):
        raise ExprError(f"expected an expression as text, got {type(text).__name__}")
    src = text.strip()
    if not src:
        raise ExprError("empty expression; write a number or a formula of t such as 1 + 0.5*sin(t)")
    if len(src) > MAX_LENGTH:
        raise ExprError(f"expression of {len(src)} characters is too long (max {MAX_LENGTH})")
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError as e:
        raise ExprError(f"cannot parse {src!r}: {e.msg} at column {e.offset}; use numbers, t, + - * / ** %, and functions like sin(t)") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExprError(f"expression {src[:40]!r}... is nested too deeply") from None
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > MAX_NODES:
        raise ExprError(f"expression has {nodes} parts, more than the {MAX_NODES} allowed")
    uses_t = [False]
    try:
        fn = _compile(tree.body, src, uses_t)
    except RecursionError:
        raise ExprError(f"expression {src[:40]!r}... is nested too deeply") from None
    return Expr(src, fn, constant=not uses_t[0])


def evaluate(text: str, t: float = 0.0) -> float:
    """parse(text)(t): convenience for one-off evaluation."""
    return parse(text)(t)


def _allowed_text() -> str:
    return "numbers, t, pi, e, + - * / // % **, and " + ", ".join(sorted(FUNCTIONS))


def _compile(node: ast.AST, src: str, uses_t: list[bool]) -> _Fn:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ExprError(f"{src!r}: {node.value!r} is not a number; only numbers are allowed as constants")
        try:
            v = float(node.value)
        except OverflowError:
            raise ExprError(f"{src!r}: the number {str(node.value)[:20]}... is too large (limit about 1e308)") from None
        return lambda env: v
    if isinstance(node, ast.Name):
        if node.id in VARIABLES:
            uses_t[0] = True
            name = node.id
            return lambda env: env[name]
        if node.id in CONSTANTS:
            c = CONSTANTS[node.id]
            return lambda env: c
        raise ExprError(f"{src!r}: unknown name {node.id!r}; allowed: {_allowed_text()}")
    if isinstance(node, ast.BinOp):
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise ExprError(f"{src!r}: operator {type(node.op).__name__} is not allowed; use + - * / // % **")
        a = _compile(node.left, src, uses_t)
        b = _compile(node.right, src, uses_t)
        return lambda env: op(a(env), b(env))
    if isinstance(node, ast.UnaryOp):
        uop = _UNARY.get(type(node.op))
        if uop is None:
            raise ExprError(f"{src!r}: operator {type(node.op).__name__} is not allowed; use unary + or -")
        a = _compile(node.operand, src, uses_t)
        return lambda env: uop(a(env))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ExprError(f"{src!r}: function {what!r} is not allowed; allowed: {', '.join(sorted(FUNCTIONS))}")
        if node.keywords:
            raise ExprError(f"{src!r}: keyword arguments are not allowed in {node.func.id}()")
        f, (lo, hi) = FUNCTIONS[node.func.id]
        n = len(node.args)
        if not lo <= n <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise ExprError(f"{src!r}: {node.func.id}() takes {want} argument(s), got {n}")
        args = [_compile(a, src, uses_t) for a in node.args]
        if n == 1:
            a0 = args[0]
            return lambda env: f(a0(env))
        return lambda env: f(*[a(env) for a in args])
    kind = type(node).__name__
    raise ExprError(f"{src!r}: {kind} is not allowed in an expression; allowed: {_allowed_text()}")
