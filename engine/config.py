"""The TOML config file (`engine run --config show.toml`).

Layout:

    [run]                 # any `engine run` option, by its long name (dashes or underscores)
    generator = "stylegan2"
    size = 256
    sink = ["file:out.mp4", "ndi:stage"]

    [generator]           # generator-specific setup options (e.g. channel_base for the embedded StyleGAN2)
    channel_max = 256

    [latent]              # live parameters, one table per group (see `engine info --params`)
    seed = 7
    psi = 0.7

    [fx]
    feedback = 0.2

Precedence: built-in defaults < config file < command-line flags. Every error names the file and the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from engine.errors import UsageError
from engine.params import SPECS, ParamError, spec_for
from engine.paths import user_path

GROUPS = sorted({s.group for s in SPECS})


class Config:
    def __init__(self, path: Path | None = None, run: dict[str, Any] | None = None,
                 generator: dict[str, Any] | None = None, params: dict[str, Any] | None = None):
        self.path = path
        self.run = run or {}
        self.generator = generator or {}
        self.params = params or {}  # {"group.name": value}, validated


def load_config(path: str | Path, run_options: set[str]) -> Config:
    """Read and validate a config file. `run_options`: the valid [run] keys (argparse dests)."""
    p = user_path(path, "config file")
    if not p.is_file():
        raise UsageError(f"config file not found: {p}")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{p}: invalid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{p}: cannot read: {e}") from None

    cfg = Config(path=p)
    for table, body in data.items():
        if not isinstance(body, dict):
            raise UsageError(f"{p}: top-level key {table!r} must be a table like [run], [generator] or a parameter group ({', '.join(GROUPS)})")
        if table == "run":
            for key, value in body.items():
                dest = key.replace("-", "_")
                if dest not in run_options:
                    raise UsageError(f"{p}: [run] has unknown option {key!r}; see `engine run --help` for the options")
                cfg.run[dest] = value
        elif table == "generator":
            cfg.generator = dict(body)
        elif table in GROUPS:
            for key, value in body.items():
                path_ = f"{table}.{key}"
                try:
                    spec = spec_for(path_)
                    cfg.params[spec.path] = spec.coerce(value)
                except ParamError as e:
                    raise UsageError(f"{p}: [{table}] {e}") from None
        else:
            raise UsageError(f"{p}: unknown table [{table}]; use [run], [generator] or a parameter group: {', '.join(GROUPS)}")
    return cfg
