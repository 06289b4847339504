"""ePaper pictures (issue 15, seed 004, its first part): fitted to the panel, dithered in linear light to exactly the
panel's colours."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import UsageError
from engine.serve.palette import PALETTES, dither, fit_to_panel, for_panel, parse_panel, srgb_to_linear


def gradient(w=320, h=200):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1).astype(np.uint8)


@pytest.mark.parametrize("name", list(PALETTES))
def test_only_palette_colours_at_the_panel_size(name):
    out = for_panel(gradient(), name, (120, 90))
    assert out.shape == (90, 120, 3) and out.dtype == np.uint8
    assert {tuple(c) for c in out.reshape(-1, 3)} <= set(PALETTES[name].output)


def test_dithering_keeps_the_light_in_linear_light():
    # A flat grey dithered to black and white: the share of white pixels is the grey's linear light (21.6% for 128),
    # not its gamma-encoded value (50%): the panel shows the same brightness as the picture.
    for level in (64, 128, 200):
        out = dither(np.full((64, 64, 3), level, np.uint8), PALETTES["bw"])
        assert (out[..., 0] == 255).mean() == pytest.approx(float(srgb_to_linear(np.array([level]))[0]), abs=0.01)
    # Serpentine scanning: no drift to one side (both halves of a flat field get the same share).
    out = dither(np.full((64, 64, 3), 150, np.uint8), PALETTES["bw"])
    assert abs((out[:, :32, 0] == 255).mean() - (out[:, 32:, 0] == 255).mean()) < 0.02


def test_inky7_aims_with_the_measured_inks_and_writes_the_driver_colours():
    p = PALETTES["inky7"]
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 156  # the red ink's measured look: it stays red, written as the driver's pure red
    red[..., 1], red[..., 2] = 72, 75
    out = dither(red, p)
    assert (out.reshape(-1, 3) == (255, 0, 0)).all(axis=1).mean() > 0.95


def test_fit_covers_and_crops_the_centre():
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 100:200] = 255  # a white centre third
    out = fit_to_panel(img, (100, 100))
    assert out.shape == (100, 100, 3) and out[:, 10:90].min() > 200


def test_bad_panel_and_palette_names():
    assert parse_panel("800x480") == (800, 480)
    for bad in ("800", "0x480", "99999x1", "axb"):
        with pytest.raises(UsageError, match="WIDTHxHEIGHT"):
            parse_panel(bad)
    with pytest.raises(UsageError, match="unknown palette 'sepia'; use inky7"):
        for_panel(gradient(), "sepia")
