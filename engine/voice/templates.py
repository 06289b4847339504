"""What the voice says: a TOML file of lines per event, filled with the engine's live values.

    [voice]
    description = "A calm, low voice, close to the microphone, in a quiet room."   # Parler's voice description

    [events.start]
    lines = ["The machine wakes at {temperature:.0f} degrees."]

    [events.temperature_band]
    rising = ["Warmer now: {temperature:.0f} degrees."]       # by the event's direction, else `lines`
    falling = ["Cooling, {temperature:.0f} degrees."]

    [events.prompt]
    lines = ["Now I dream of {prompt}."]

Placeholders are Python format fields over the event's values (temperature, fps, prompt, seed, psi, steps, level,
band, direction, mode, network; see engine.control.voice_out). A value the event does not carry, or one that does not
fit its format (a missing temperature in {temperature:.0f}), is spoken as "unknown": a template never fails a line.
Lines of one event are spoken in turn (the first, the second, ..., then the first again).
"""

from __future__ import annotations

import math
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import UsageError

MAX_LINE = 1000  # characters: a line is speech, not a book


@dataclass
class Templates:
    description: str = "A calm, low voice, speaking slowly and clearly, close to the microphone."
    events: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    _turn: dict[str, int] = field(default_factory=dict)

    def line(self, event: str, values: dict[str, Any]) -> str | None:
        """The next line for `event`, filled; None when the file has none for it."""
        table = self.events.get(event)
        if not table:
            return None
        lines = table.get(str(values.get("direction", "")), None) or table.get("lines")
        if not lines:
            return None
        key = f"{event}/{values.get('direction', '')}"
        i = self._turn.get(key, 0)
        self._turn[key] = i + 1
        return fill(lines[i % len(lines)], values)


class _Lenient(string.Formatter):
    def get_value(self, key, args, kwargs):
        v = kwargs.get(key) if isinstance(key, str) else None
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "unknown"
        return v

    def format_field(self, value, format_spec):
        try:
            return format(value, format_spec)
        except (TypeError, ValueError):
            return str(value)


def fill(template: str, values: dict[str, Any]) -> str:
    """The template with its fields filled (lenient, see the module doc)."""
    try:
        return _Lenient().vformat(template, (), values)[:MAX_LINE]
    except (ValueError, IndexError, KeyError, AttributeError):  # a malformed field: say the text as written
        return template[:MAX_LINE]


def load_templates(path: str | Path | None) -> Templates:
    """The shipped example when path is None. UsageError (file: what is wrong) for a file that is not usable."""
    p = Path(path) if path else Path(__file__).resolve().parents[1] / "examples" / "voice" / "lines.toml"
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--lines {p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--lines {p}: cannot read it ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--lines {p}: not valid TOML ({e})") from None
    t = Templates()
    voice = data.get("voice", {})
    if not isinstance(voice, dict) or not isinstance(voice.get("description", ""), str):
        raise UsageError(f"--lines {p}: [voice] description must be text")
    if voice.get("description"):
        t.description = voice["description"]
    events = data.get("events", {})
    if not isinstance(events, dict):
        raise UsageError(f"--lines {p}: [events] must be a table of events")
    for name, table in events.items():
        if not isinstance(table, dict):
            raise UsageError(f"--lines {p}: [events.{name}] must be a table with lines = [...]")
        t.events[name] = {}
        for key, lines in table.items():
            if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
                raise UsageError(f"--lines {p}: events.{name}.{key} must be a list of text lines")
            t.events[name][key] = list(lines)
    return t
