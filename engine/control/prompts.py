"""Prompt lists: a sequence of prompts stepped by hand (diffusion.prompt_index, e.g. a button in Max or
TouchDesigner), or by show time (diffusion.prompt_cycle), crossfaded over diffusion.prompt_fade seconds.

The seed projects kept their prompts in files (seed 000's prompts.py, seed 004's prompts.txt with a "new prompt"
button and an automatic mode); here the list is a live parameter, diffusion.prompt_list: a text file, one prompt per
line, or prompts separated by ' | '. This controller turns (list, index, cycle, fade, show time) into the three
parameters the diffusion generator already understands: prompt, prompt_b and prompt_mix. The generator encodes each
distinct text once (its LRU cache), so a fade costs one embedding blend per frame and no text-encoder pass.

Deterministic in show time and parameters: a recorded show replays to the same prompts. A list that cannot be read
mid-show is logged (rate-limited) and the prompts stay as they were; at setup it is a one-line UsageError.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from engine.control import Controller
from engine.control.mapping import curve_value
from engine.control.ratelimit import LogLimiter
from engine.errors import UsageError
from engine.params import ParamStore

log = logging.getLogger("engine.control.prompts")

SEPARATOR = " | "
RECHECK_SECONDS = 1.0  # how often a list file's modification time is looked at (show time)


def parse_prompt_list(spec: str) -> tuple[list[str], Path | None]:
    """(prompts, file) for a prompt_list value: inline 'a | b | c', or a file path with one prompt per line.
    Raises UsageError (one line) for a file that cannot be read or a list with no prompts."""
    spec = spec.strip()
    if not spec:
        return [], None
    if SEPARATOR.strip() in spec and not Path(spec).expanduser().is_file():
        prompts = [p.strip() for p in spec.split(SEPARATOR.strip())]
        path = None
    else:
        path = Path(spec).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"diffusion.prompt_list: no file {str(path)!r}; give a text file with one prompt per line, "
                             f"or prompts separated by '{SEPARATOR}'") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"diffusion.prompt_list: cannot read {str(path)!r} ({type(e).__name__}: {e}); "
                             "it must be a UTF-8 text file") from None
        prompts = [line.strip() for line in text.splitlines()]
        prompts = [p for p in prompts if not p.startswith("#")]
    prompts = [p for p in prompts if p]
    if not prompts:
        where = f"{str(path)!r} has" if path is not None else "the list has"
        raise UsageError(f"diffusion.prompt_list: {where} no prompts (blank lines and # comments are skipped)")
    return prompts, path


class PromptList(Controller):
    """Writes diffusion.prompt / prompt_b / prompt_mix from the prompt list, every frame the list is set."""

    def __init__(self) -> None:
        self._spec: str | None = None  # the prompt_list value loaded
        self._prompts: list[str] = []
        self._path: Path | None = None
        self._mtime: float | None = None
        self._failed: str | None = None  # a value that could not be loaded (retried once a second: a file may appear)
        self._checked_at = -math.inf
        self._current: int | None = None  # entry faded to (index into _prompts)
        self._previous: int | None = None  # entry faded from
        self._fade_from_t = 0.0
        self._changes = 0
        self._errors = 0
        self._log = LogLimiter(log, interval=5.0)

    def start(self, store: ParamStore, info: dict[str, Any]) -> None:
        # A list given at start that cannot be read stops the run now, with one line (not minutes into a show).
        spec = store.snapshot().diffusion.prompt_list
        if spec.strip():
            self._load(spec)

    def _load(self, spec: str) -> None:
        prompts, path = parse_prompt_list(spec)
        self._spec, self._prompts, self._path, self._mtime, self._failed = spec, prompts, path, _mtime(path), None
        # The entry shown keeps its number (wrapped into the new list); the next frame fades if it changed.
        self._current = None if self._current is None else self._current % len(prompts)
        self._previous = None

    def _refresh(self, spec: str, t: float) -> None:
        """Load a new value at once; look at a loaded file's modification time, and retry a value that failed,
        once a second. A failure keeps the prompts loaded before, and is logged (rate-limited)."""
        due = t - self._checked_at >= RECHECK_SECONDS or t < self._checked_at
        if spec == self._spec and not (due and self._path is not None):
            return
        if spec == self._failed and not due:
            return
        self._checked_at = t
        if spec == self._spec and _mtime(self._path) == self._mtime:
            return
        try:
            self._load(spec)
            if spec == self._spec and self._path is not None:
                log.info("diffusion.prompt_list: %s read, %d prompts", self._path, len(self._prompts))
        except UsageError as e:
            self._errors += 1
            self._failed = spec
            if spec == self._spec:  # the loaded file went bad: do not re-read it until it changes again
                self._mtime = _mtime(self._path)
            self._log("list", "%s; the prompts stay as they were", e, level=logging.WARNING)

    def before_frame(self, store: ParamStore, when) -> None:
        d = store.snapshot().diffusion
        if not d.prompt_list.strip():
            self._spec, self._prompts, self._path, self._current, self._failed = None, [], None, None, None
            return
        self._refresh(d.prompt_list, when.t)
        if not self._prompts:
            return
        n = len(self._prompts)
        step = math.floor(when.t / d.prompt_cycle) if d.prompt_cycle > 0 else 0
        target = (d.prompt_index + step) % n
        if self._current is None:  # first frame with this list: show the entry, no fade from anything
            self._current, self._previous = target, None
        elif target != self._current:
            mix = self._mix(when.t, d.prompt_fade)
            # Fade on from whichever entry dominates the picture now (a change in the middle of a fade).
            self._previous = self._current if self._previous is None or mix >= 0.5 else self._previous
            self._current, self._fade_from_t = target, when.t
            self._changes += 1
        mix = self._mix(when.t, d.prompt_fade)
        if self._previous is None or mix >= 1.0:
            self._previous = None
            values = {"diffusion.prompt": self._prompts[self._current], "diffusion.prompt_b": "", "diffusion.prompt_mix": 0.0}
        else:
            values = {"diffusion.prompt": self._prompts[self._previous], "diffusion.prompt_b": self._prompts[self._current],
                      "diffusion.prompt_mix": mix}
        if any(getattr(d, k.split(".")[1]) != v for k, v in values.items()):
            store.update(values)

    def _mix(self, t: float, fade: float) -> float:
        if fade <= 0:
            return 1.0
        return curve_value("smoothstep", (t - self._fade_from_t) / fade)

    def stats(self) -> dict[str, Any]:
        if not self._prompts and not self._errors:
            return {}
        return {"prompt_list": {"prompts": len(self._prompts), "file": str(self._path) if self._path else None,
                                "current": self._current, "changes": self._changes, "errors": self._errors}}


def _mtime(path: Path | None) -> float | None:
    if path is None:
        return None
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None
