"""Issue 17, live values: every value's cost is bounded where it is parsed. A bend channel range of 4 billion, a
radius of 10^8, a 400-digit literal or a 300-character file name is one refused value (or a bounded one), never a
24 GB set, a 44-second frame, an OverflowError or an ENAMETOOLONG traceback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.errors import UsageError
from engine.generators.expr import ExprError
from engine.generators.expr import parse as parse_expr
from engine.generators.layers import bend_maps, channel_index, parse_bend, parse_edits
from engine.paths import user_path

ROOT = Path(__file__).resolve().parent.parent
LONG_NAME = "x" * 300


def test_a_huge_channel_range_is_refused_at_parse_and_bounded_by_the_layer():
    with pytest.raises(UsageError, match="beyond any layer"):
        parse_bend("b8.conv1 multiply(2) [0-4294967295]", lambda name: True, strict=True)
    warnings = []
    assert parse_bend("b8.conv1 multiply(2) [0-4294967295]", lambda name: True, lambda k, m: warnings.append(m)) == []
    assert len(warnings) == 1 and "beyond any layer" in warnings[0]
    t0 = time.perf_counter()
    idx = channel_index("0-65535", 512, "b8.conv1")  # the largest accepted range: the layer's 512 channels
    assert time.perf_counter() - t0 < 0.1 and idx.tolist() == list(range(512))


@pytest.mark.parametrize("op", ["dilate", "erode"])
def test_radii_are_bounded_by_the_map_and_filtered_separably(op):
    torch.manual_seed(0)
    x = torch.randn(1, 8, 64, 64)
    for r in (1, 3, 7):  # separable rows-then-columns equals the square window
        k = 2 * r + 1
        want = F.max_pool2d(x, k, stride=1, padding=r) if op == "dilate" else -F.max_pool2d(-x, k, stride=1, padding=r)
        assert torch.equal(bend_maps(x, op, [float(r)]), want)
    t0 = time.perf_counter()
    for radius in (99999999.0, 1e6, float("inf")):
        y = bend_maps(x, op, [radius])
        assert y.shape == x.shape
    assert time.perf_counter() - t0 < 2.0
    reduce = torch.amax if op == "dilate" else torch.amin
    assert torch.equal(bend_maps(x, op, [1e6]), reduce(x, dim=(2, 3), keepdim=True).expand_as(x))
    assert torch.equal(bend_maps(x, op, [float("nan")]), x)


def test_huge_literals_are_expression_errors():
    with pytest.raises(ExprError, match="too large"):
        parse_expr("1" * 400 + " * t")
    warnings = []
    assert parse_edits("mapping.fc0.weight *= " + "9" * 400, ["mapping.fc0.weight"], lambda k, m: warnings.append(m)) == []
    assert warnings and "too large" in warnings[0]
    with pytest.raises(UsageError, match="too large"):
        parse_bend("b8.conv1 rotate(" + "1" * 400 + ") [0]", lambda name: True, strict=True)


def test_overlong_paths_are_one_usage_error():
    with pytest.raises(UsageError, match="is 304 bytes long; file systems allow 255 per name"):
        user_path(f"/tmp/{LONG_NAME}.pkl", "--generator")
    with pytest.raises(UsageError, match="NUL"):
        user_path("a\x00b.pkl", "latent file")
    assert user_path("~/x.pkl", "latent file") == Path.home() / "x.pkl"


@pytest.mark.parametrize("args", [["--config", f"{LONG_NAME}.toml"], ["--generator", f"{LONG_NAME}.pkl"],
                                  ["--sink", f"file:{LONG_NAME}.mp4"], ["--set", f"stylegan.w_file={LONG_NAME}.npz"]])
def test_overlong_paths_at_start_exit_2_with_one_line(args, tmp_path):
    p = subprocess.run([sys.executable, "-m", "engine", "run", "--frames", "1", "--size", "64", "--osc-port", "0",
                        "--quiet", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("engine: error:")]
    assert len(errors) == 1 and "file systems allow 255" in errors[0] and "Traceback" not in p.stderr, p.stderr


def test_overlong_live_paths_are_refused_and_the_show_goes_on():
    """Over OSC during a show: a warning, and the frame renders as before (at start, --set gives exit 2 above)."""
    from engine.clock import FrameTime
    from engine.generators.stylegan import StyleGANGenerator
    from engine.params import Params, with_values

    gen = StyleGANGenerator.default(64, "cpu", calibrate=False, channel_base=512, channel_max=32)
    still = with_values(Params(), {"latent.motion": "still"})
    base = gen(still, FrameTime(0.0, 0)).clone()
    live = with_values(still, {"stylegan.w_file": f"{LONG_NAME}.npz", "stylegan.blend_file": f"{LONG_NAME}.pkl"})
    assert torch.equal(gen(live, FrameTime(0.0, 1)), base)
    warnings = " ".join(gen.info()["warnings"])
    assert "stylegan.w_file" in warnings and "stylegan.blend_file" in warnings and "file systems allow 255" in warnings


def test_extreme_transform_arguments_stay_finite():
    """Found by tests/test_fuzz.py: translate(0, 1.7e38) overflowed the float32 affine matrix (a RuntimeError every
    frame). Arguments are bounded to what still means something."""
    x = torch.randn(1, 4, 16, 16)
    for op, args in (("translate", [0.0, 1.7e38]), ("translate", [-1e300, 1e300]), ("rotate", [1e300]),
                     ("scale", [1e300]), ("scale", [0.0]), ("scale", [-1e-300])):
        y = bend_maps(x, op, args)
        assert y.shape == x.shape and torch.isfinite(y).all(), (op, args)
    assert torch.allclose(bend_maps(x, "rotate", [370.0]), bend_maps(x, "rotate", [10.0]), atol=1e-5)
