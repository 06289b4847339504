"""Where the frame's picture goes: a Pimoroni Inky panel, or a folder of PNG files (tests; trying the frame without a
panel). Both take a PIL image of the panel's size that already holds only the panel's colours (the server dithered
it, ?palette=): the Inky driver's own mapping then changes nothing.

Messages ("cannot reach the server") are drawn in black on a white strip with antialiasing off, so the picture still
holds only panel colours.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


class PngPanel:
    """Writes each refresh as NNNN.png in `folder` (and latest.png): a panel you can look at."""

    def __init__(self, folder: str | Path, size: tuple[int, int] = (600, 448), palette: str = "inky7"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.palette = palette
        self.refreshes = 0

    def show(self, image: Image.Image) -> Path:
        self.refreshes += 1
        path = self.folder / f"{self.refreshes:04d}.png"
        image.save(path)
        image.save(self.folder / "latest.png")
        return path


class InkyPanel:
    """A Pimoroni Inky panel found by inky.auto() (Impression 4", 5.7", 7.3"; pHAT/wHAT). Unverified here: it needs
    the panel on a Pi's SPI/I2C bus (raspi-config: enable SPI and I2C)."""

    def __init__(self, saturation: float = 0.0):
        try:
            from inky.auto import auto
        except ImportError:
            raise SystemExit("frame: the inky package is missing: bash engine/clients/epaper/setup.sh "
                             "(or pip install inky) -- or use --panel png:FOLDER to try the frame without a panel") from None
        try:
            self.inky = auto(ask_user=False, verbose=False)
        except Exception as e:  # no EEPROM found, no SPI: say what to check
            raise SystemExit(f"frame: no Inky panel found ({e}); is SPI/I2C enabled (sudo raspi-config nonint "
                             f"do_spi 0; sudo raspi-config nonint do_i2c 0) and the panel seated?") from None
        self.size = tuple(self.inky.resolution)
        # Our inky7 pictures hold the driver's DESATURATED colours, which it maps exactly at saturation 0.
        self.saturation = saturation
        colours = getattr(self.inky, "colour", "multi")
        self.palette = {"black": "bw", "red": "bwr", "yellow": "bw"}.get(colours, "inky7")

    def show(self, image: Image.Image) -> None:
        try:
            self.inky.set_image(image, saturation=self.saturation)
        except TypeError:  # panels without a saturation setting (pHAT, wHAT)
            self.inky.set_image(image)
        self.inky.show()  # Impression: about 30 s for a full refresh


def open_panel(spec: str):
    """--panel auto (an Inky panel) or png:FOLDER[@WxH[:PALETTE]]."""
    if spec == "auto":
        return InkyPanel()
    if spec.startswith("png:"):
        rest = spec[4:]
        folder, _, geometry = rest.partition("@")
        size, palette = (600, 448), "inky7"
        if geometry:
            dims, _, pal = geometry.partition(":")
            w, _, h = dims.lower().partition("x")
            if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
                raise SystemExit(f"frame: --panel {spec!r}: expected png:FOLDER@WIDTHxHEIGHT[:PALETTE]")
            size, palette = (int(w), int(h)), pal or palette
        if not folder:
            raise SystemExit(f"frame: --panel {spec!r}: name a folder, e.g. png:frames")
        return PngPanel(folder, size, palette)
    raise SystemExit(f"frame: --panel {spec!r}: use auto (an Inky panel) or png:FOLDER[@WxH[:PALETTE]]")


def _font(size: int):
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def with_strip(image: Image.Image | None, size: tuple[int, int], text: str) -> Image.Image:
    """The picture (or a white page when there is none yet) with `text` on a white strip at the bottom, in black,
    not antialiased: only black and white are added, both in every panel's palette."""
    w, h = size
    page = image.convert("RGB").resize(size) if image is not None else Image.new("RGB", size, (255, 255, 255))
    font = _font(max(12, h // 28))
    draw = ImageDraw.Draw(page)
    draw.fontmode = "1"  # no antialiasing: no grey pixels
    font_px = getattr(font, "size", 12)  # Pillow's built-in bitmap font has no size: 12 px
    lines = textwrap.wrap(text, max(10, int(w / (font_px * 0.55))))[:3]
    line_h = font_px + 4
    top = h - line_h * len(lines) - 8
    draw.rectangle((0, top, w, h), fill=(255, 255, 255))
    for i, line in enumerate(lines):
        draw.text((8, top + 4 + i * line_h), line, fill=(0, 0, 0), font=font)
    return page
