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


def output_size(text: str) -> tuple[int, int]:
    """`--size N` (square) or `--size WIDTHxHEIGHT` -> (width, height)."""
    from engine.output import parse_size

    try:
        return parse_size(text, "size")
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("size ")) from None


SIZE_HELP = ("output size: WIDTHxHEIGHT (1920x1080, 1080x1920 portrait) or N for N x N; every stage after the generator "
             "runs at it (default: the generator's own; 256 for the built-in stylegan2)")


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


def add_max_params_argument(p: argparse.ArgumentParser, default: Any = None) -> None:
    p.add_argument("--max-params", type=positive_int, default=default, metavar="N",
                   help="refuse a network file whose settings ask for more parameters than this (default 200000000; "
                        "official StyleGAN networks have about 30 million)")


def apply_process_options(threads: int | None, threads_source: str, max_params: int | None) -> None:
    """What a command's options set for the whole process before any work: torch's CPU threads (engine.threads) and
    the largest network a file may ask for (pickle_loader.limits)."""
    from engine import threads as cpu_threads
    from engine.generators.pickle_loader import set_max_params

    cpu_threads.apply(threads, threads_source)
    set_max_params(max_params)


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
    "max_params": None,
    "engines": None,
    "flavor": "auto",
}


def control_defaults() -> dict[str, Any]:
    """Defaults of the live-control options engine.control adds to `engine run`."""
    from engine.control import CONTROL_DEFAULTS

    return dict(CONTROL_DEFAULTS)


def config_run_options() -> set[str]:
    """Every option a config file's [run] table may hold: `engine run`'s own and the live-control ones
    (engine.control). A config written for `engine run` is valid for the other commands too: they use what applies."""
    return set(RUN_DEFAULTS) | set(control_defaults())


def threads_option(value: int | None, ns: argparse.Namespace) -> tuple[int | None, str]:
    """The merged `threads` value (already checked: the command line's type, or check_config_options for the config
    file) and where it came from, for engine.threads.apply."""
    return value, "--threads" if "threads" in vars(ns) else f"[run] threads in {vars(ns).get('config')}"


def check_config_options(values: dict[str, Any], parser: argparse.ArgumentParser, defaults: dict[str, Any],
                         where: str) -> dict[str, Any]:
    """A config file's [run] values through the same argparse types and choices as the command line, so a value the
    command line refuses (`fps = nan`, `size = 64.5`, `frames = -5`) is refused from the file too, with one line naming
    the file and the key. `defaults`: the command's option defaults; a list default marks a repeatable option (a
    single value is taken as a list of one). Keys the parser does not know are returned unchanged (another command's)."""
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    checked: dict[str, Any] = {}
    for dest, value in values.items():
        action = actions.get(dest)
        if action is None:
            checked[dest] = value
            continue
        try:
            checked[dest] = _config_value(action, value, repeatable=isinstance(defaults.get(dest), list))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
            flag = action.option_strings[-1]
            raise UsageError(f"{where}: [run] {dest} = {value!r}: {e} (as for {flag})") from None
    return checked


def _config_value(action: argparse.Action, value: Any, repeatable: bool) -> Any:
    if action.nargs == 0:  # a flag (store_true)
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value
    if repeatable:
        items = [value] if not isinstance(value, list) else value
        return [_config_scalar(action, item) for item in items]
    return _config_scalar(action, value)


def _config_scalar(action: argparse.Action, value: Any) -> Any:
    # TOML gives typed values; the command line's types parse text: the same text either way.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"expected {'a number' if action.type in (int, float) else 'a value like on the command line'}, "
                        f"got {type(value).__name__}")
    converted = action.type(str(value)) if action.type else str(value)
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"expected one of {', '.join(map(str, action.choices))}")
    return converted
