"""Safe time expressions: what they compute, and what they refuse."""

from __future__ import annotations

import math

import pytest

from engine.generators.expr import ExprError, evaluate, parse


@pytest.mark.parametrize(
    "text, t, expected",
    [
        ("1", 0.0, 1.0),
        ("1 + 0.5*sin(t)", math.pi / 2, 1.5),
        ("2 ** 3 % 5", 0.0, 3.0),
        ("-t / 4", 2.0, -0.5),
        ("clamp(t, 0, 1)", 3.0, 1.0),
        ("max(1, t, 3) - min(2, t)", 2.5, 1.0),
        ("sqrt(16) + exp(0) + log(e)", 0.0, 6.0),
        ("abs(-2) * pi", 0.0, 2 * math.pi),
        ("mix(10, 20, 0.25)", 0.0, 12.5),
        ("fract(2.75) + floor(2.75)", 0.0, 2.75),
        ("step(1, t) + smoothstep(0, 2, 1)", 1.0, 1.5),
        ("tri(0.5) + saw(1.25) + square(0.75) + pulse(0.1, 0.2)", 0.0, 1.0 + 0.25 - 1.0 + 1.0),
        ("7 // 2", 0.0, 3.0),
    ],
)
def test_values(text, t, expected):
    assert evaluate(text, t) == pytest.approx(expected)


def test_constant_detection_and_reuse():
    e = parse("1 + 0.5*sin(t)")
    assert not e.constant
    assert e(0.0) == pytest.approx(1.0) and e(math.pi / 2) == pytest.approx(1.5)
    assert parse("2*pi").constant


def test_noise_is_smooth_deterministic_and_bounded():
    e = parse("noise(t)")
    vals = [e(i * 0.01) for i in range(1000)]
    assert all(-1.0 <= v <= 1.0 for v in vals)
    assert max(abs(a - b) for a, b in zip(vals, vals[1:])) < 0.05  # continuous
    assert max(vals) - min(vals) > 0.5  # and it actually varies
    assert parse("noise(t)")(3.3) == e(3.3)
    assert e(2.0) == pytest.approx(parse("noise(2)")(0.0))


def test_math_errors_give_nan_not_exceptions():
    for text in ("1/0", "log(-1)", "sqrt(-1)", "t % 0", "10 ** 2000", "exp(1000)"):
        assert math.isnan(evaluate(text, 0.0)), text


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("__import__('os').system('echo hi')", "not allowed"),
        ("().__class__", "not allowed"),
        ("t.real", "not allowed"),
        ("[1, 2][0]", "not allowed"),
        ("x + 1", "unknown name 'x'"),
        ("open('f')", "function 'open' is not allowed"),
        ("lambda: 1", "not allowed"),
        ("1 if t else 2", "not allowed"),
        ("t < 1", "not allowed"),
        ("'a'", "not a number"),
        ("sin(1, 2)", "takes 1 argument"),
        ("sin(x=1)", "keyword"),
        ("1 +", "cannot parse"),
        ("", "empty"),
        ("True + 1", "not a number"),
        ("1 << 2", "not allowed"),
    ],
)
def test_rejected(text, fragment):
    with pytest.raises(ExprError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        parse(text)


def test_size_limits():
    with pytest.raises(ExprError, match="too long"):
        parse("1+" * 600 + "1")
    with pytest.raises(ExprError):
        parse("(" * 200 + "1" + ")" * 200 + "+t" * 300)
