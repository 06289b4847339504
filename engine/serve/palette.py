"""Pictures for ePaper panels (seed 004's picture frame): fit to the panel, then dither to exactly its colours.

    inky7             Pimoroni Inky Impression 7-colour (UC8159, 600x448): dithered against the colours the inks
                      really show (Pimoroni's measured SATURATED_PALETTE), written with the colours the driver maps
                      exactly (its DESATURATED_PALETTE: send with saturation=0). The most faithful look.
    inky7-saturated   the same panel, dithered against the nominal colours: bolder, less faithful.
    bw, bwr           black/white and black/white/red panels.

Dithering is Floyd-Steinberg with serpentine scanning (alternate rows run right to left, so the error does not
drift one way) in linear light (sRGB decoded: error diffusion adds light, which gamma-encoded values do not), the
nearest colour chosen in linear light too. The result holds only the palette's output colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import UsageError

# Pimoroni's inky library (inky_uc8159.py): the driver's colours and the inks' measured appearance, in panel order
# black, white, green, blue, red, yellow, orange (the 8th, "clean", is not a picture colour).
INKY7_NOMINAL = ((0, 0, 0), (255, 255, 255), (0, 255, 0), (0, 0, 255), (255, 0, 0), (255, 255, 0), (255, 140, 0))
INKY7_MEASURED = ((57, 48, 57), (255, 255, 255), (58, 91, 70), (61, 59, 94), (156, 72, 75), (208, 190, 71), (177, 106, 73))


@dataclass(frozen=True)
class Palette:
    name: str
    output: tuple[tuple[int, int, int], ...]  # the colours written into the picture
    appearance: tuple[tuple[int, int, int], ...]  # what each looks like on the panel: what the dithering aims with


PALETTES = {
    "inky7": Palette("inky7", INKY7_NOMINAL, INKY7_MEASURED),
    "inky7-saturated": Palette("inky7-saturated", INKY7_NOMINAL, INKY7_NOMINAL),
    "bw": Palette("bw", ((0, 0, 0), (255, 255, 255)), ((0, 0, 0), (255, 255, 255))),
    "bwr": Palette("bwr", ((0, 0, 0), (255, 255, 255), (255, 0, 0)), ((0, 0, 0), (255, 255, 255), (255, 0, 0))),
}
DEFAULT_PANEL = (600, 448)
MAX_PANEL_SIDE = 4096


def palette(name: str) -> Palette:
    p = PALETTES.get(name)
    if p is None:
        raise UsageError(f"unknown palette {name!r}; use {', '.join(PALETTES)}")
    return p


def parse_panel(text: str) -> tuple[int, int]:
    w, sep, h = str(text).lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or not (1 <= int(w) <= MAX_PANEL_SIDE and 1 <= int(h) <= MAX_PANEL_SIDE):
        raise UsageError(f"panel {text!r}: expected WIDTHxHEIGHT, each 1..{MAX_PANEL_SIDE}, e.g. 600x448 or 800x480")
    return int(w), int(h)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def fit_to_panel(rgb: np.ndarray, panel: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> the panel's (h, w, 3): scaled to cover it (Lanczos) and centre-cropped."""
    from PIL import Image

    pw, ph = panel
    img = Image.fromarray(np.ascontiguousarray(rgb[..., :3]))
    scale = max(pw / img.width, ph / img.height)
    size = (max(pw, round(img.width * scale)), max(ph, round(img.height * scale)))
    img = img.resize(size, Image.LANCZOS)
    left, top = (img.width - pw) // 2, (img.height - ph) // 2
    return np.asarray(img.crop((left, top, left + pw, top + ph)))


def dither(rgb: np.ndarray, pal: Palette) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 holding only pal.output colours (see the module doc)."""
    h, w = rgb.shape[:2]
    work = srgb_to_linear(rgb[..., :3])  # (H, W, 3) linear light, carries the diffused error
    targets = srgb_to_linear(np.array(pal.appearance, dtype=np.float32))  # (K, 3)
    index = np.zeros((h, w), dtype=np.uint8)
    tl = targets.tolist()
    for y in range(h):
        row = work[y]
        below = work[y + 1] if y + 1 < h else None
        forward = y % 2 == 0
        xs = range(w) if forward else range(w - 1, -1, -1)
        step = 1 if forward else -1
        r_row = row.tolist()  # Python floats: this loop is the hot path (numpy per pixel is slower)
        err_next = [0.0, 0.0, 0.0]
        err_below = [[0.0, 0.0, 0.0] for _ in range(w)]
        for x in xs:
            c0 = r_row[x][0] + err_next[0]
            c1 = r_row[x][1] + err_next[1]
            c2 = r_row[x][2] + err_next[2]
            best, best_d = 0, 1e9
            for k, (t0, t1, t2) in enumerate(tl):
                d = (c0 - t0) ** 2 + (c1 - t1) ** 2 + (c2 - t2) ** 2
                if d < best_d:
                    best, best_d = k, d
            index[y, x] = best
            t0, t1, t2 = tl[best]
            e0, e1, e2 = c0 - t0, c1 - t1, c2 - t2
            err_next = [e0 * 7 / 16, e1 * 7 / 16, e2 * 7 / 16]
            # Below: 3/16 behind, 5/16 under, 1/16 ahead (behind/ahead follow the scan direction).
            for dx, f in ((-step, 3 / 16), (0, 5 / 16), (step, 1 / 16)):
                xx = x + dx
                if 0 <= xx < w:
                    eb = err_below[xx]
                    eb[0] += e0 * f
                    eb[1] += e1 * f
                    eb[2] += e2 * f
            nx = x + step
            if not 0 <= nx < w:
                err_next = [0.0, 0.0, 0.0]
        if below is not None:
            below += np.asarray(err_below, dtype=np.float32)
    return np.asarray(pal.output, dtype=np.uint8)[index]


def for_panel(rgb: np.ndarray, palette_name: str, panel: tuple[int, int] = DEFAULT_PANEL) -> np.ndarray:
    """The picture a panel shows best: fitted to `panel`, dithered to `palette_name`'s colours."""
    return dither(fit_to_panel(rgb, panel), palette(palette_name))
