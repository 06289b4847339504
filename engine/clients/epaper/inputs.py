"""The frame's inputs: four buttons through gpiozero (the Inky Impression's A-D on GPIO 5, 6, 16, 24) and the
microphone through sounddevice (PortAudio), or a WAV file standing in for it (tests; a Pi without a microphone)."""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Callable

#: The Inky Impression's buttons, top to bottom, and what each does.
DEFAULT_PINS = (5, 6, 16, 24)
ACTIONS = ("same", "new", "speak", "auto")


class Buttons:
    """gpiozero Buttons that call on_press(action). Pressed while the frame is busy, a press is queued by the frame,
    never dropped mid-request. With gpiozero's MockFactory (tests) the same objects run on simulated pins."""

    def __init__(self, on_press: Callable[[str], None], pins: tuple[int, ...] = DEFAULT_PINS, bounce_time: float = 0.1):
        try:
            from gpiozero import Button
        except ImportError:
            raise SystemExit("frame: gpiozero is missing: bash engine/clients/epaper/setup.sh (or pip install gpiozero)") from None
        if len(pins) != len(ACTIONS):
            raise SystemExit(f"frame: --pins needs {len(ACTIONS)} GPIO numbers ({', '.join(ACTIONS)}), got {len(pins)}")
        self.buttons = []
        for pin, action in zip(pins, ACTIONS):
            b = Button(pin, pull_up=True, bounce_time=bounce_time)
            b.when_pressed = lambda _b=None, a=action: on_press(a)
            self.buttons.append(b)

    def close(self) -> None:
        for b in self.buttons:
            b.close()


def wav_bytes(samples, rate: int) -> bytes:
    """int16 mono samples -> a WAV file in memory."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(samples))
    return buf.getvalue()


class Microphone:
    """Records `seconds` from the default input (or `device`) as a 16 kHz mono WAV: what /transcribe wants."""

    def __init__(self, device: str | int | None = None, rate: int = 16000):
        try:
            import sounddevice
        except (ImportError, OSError) as e:
            raise SystemExit(f"frame: no microphone support ({e}): apt-get install libportaudio2; pip install "
                             f"sounddevice -- or --mic FILE.wav") from None
        self.sd = sounddevice
        self.device = device
        self.rate = rate

    def record(self, seconds: float) -> bytes:
        frames = self.sd.rec(int(seconds * self.rate), samplerate=self.rate, channels=1, dtype="int16", device=self.device)
        self.sd.wait()
        return wav_bytes(frames.tobytes(), self.rate)


class WavFile:
    """A recording that is a file: the test's stand-in for the microphone (any rate, mono or stereo: the server
    resamples)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise SystemExit(f"frame: --mic {self.path}: no such file")

    def record(self, seconds: float) -> bytes:
        return self.path.read_bytes()
