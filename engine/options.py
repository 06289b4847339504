"""Option parsing shared by the commands (`engine run`, `engine bench`, `engine trt`, `engine project`): the argparse
value types, `--set` values, the options a config file's [run] table may hold, and `--threads`.

One module so no command imports another's private helpers; it imports nothing heavy (no torch), so `engine --help`
stays fast and the thread settings can be made before torch loads (engine.threads).
"""

from __future__ import annotations

import argparse
from typing import Any

from engine.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the whole usage block otherwise)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {v}")
    return v


def non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


def assignment(text: str) -> tuple[str, str]:
    """`--set GROUP.NAME=VALUE` -> (key, value text)."""
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"expected GROUP.NAME=VALUE (e.g. fx.feedback=0.2), got {text!r}")
    return key.strip(), value.strip()


def parse_value(text: str) -> Any:
    """--set values: numbers and comma-separated vectors are parsed, everything else stays text (validated by
    the parameter's own spec)."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if "," in text:
        try:
            return [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            pass
    return text


def add_threads_argument(p: argparse.ArgumentParser, default: Any = None) -> None:
    p.add_argument("--threads", type=positive_int, default=default, metavar="N",
                   help="CPU threads for torch (default: OMP_NUM_THREADS, else half the usable cores, so programs "
                        "beside the show cost it their share; `engine info` shows the choice)")


#: Options of `engine run` that may also come from the config file's [run] table: dest -> default.
RUN_DEFAULTS: dict[str, Any] = {
    "generator": "stylegan2",
    "size": None,
    "seed": None,
    "psi": None,
    "frames": None,
    "seconds": None,
    "sink": [],
    "device": "auto",
    "backend": "auto",
    "upload": "auto",
    "fps": 30.0,
    "clock": "auto",
    "stats_json": None,
    "set": [],
    "source": None,
    "quiet": False,
    "threads": None,
}


def config_run_options() -> set[str]:
    """Every option a config file's [run] table may hold: `engine run`'s own and the live-control ones
    (engine.control). A config written for `engine run` is valid for the other commands too: they use what applies."""
    from engine.control import CONTROL_DEFAULTS

    return set(RUN_DEFAULTS) | set(CONTROL_DEFAULTS)


def threads_option(value: Any, ns: argparse.Namespace) -> tuple[int | None, str]:
    """The merged `threads` value (command line, else the config file's [run] table) as (count or None, where it
    came from); a one-line error naming the place when it is not a whole number >= 1."""
    where = "--threads" if "threads" in vars(ns) else f"[run] threads in {vars(ns).get('config')}"
    if value is None:
        return None, where
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where} must be a whole number >= 1, got {value!r}")
    return value, where
