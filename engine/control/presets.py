"""Presets: named sets of parameter values as TOML files, one table per parameter group (the same layout as the
parameter tables of `engine run --config`, so a preset can be pasted into a config file and back).

    # ~/.config/engine/presets/dusk.toml
    [latent]
    seed = 7
    psi = 0.7

    [fx]
    feedback = 0.35

A preset may hold any subset of the parameters; loading sets only those. Names are plain file names
(letters, digits, `_ - .` and spaces, at most 64 characters) so an OSC message cannot reach outside the folder.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from engine.params import SPECS, ParamError, Params, get_value, spec_for, with_values

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_. -]{0,63}$")


class PresetError(ValueError):
    """A preset that cannot be saved or loaded; the message is one line naming the file."""


def default_preset_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "engine" / "presets"


def preset_path(folder: str | os.PathLike, name: str) -> Path:
    name = name.strip()
    if name.lower().endswith(".toml"):
        name = name[:-5]
    if not _NAME.match(name) or ".." in name:
        raise PresetError(f"bad preset name {name!r}: use letters, digits, _ - . and spaces (max 64), starting with a letter or digit")
    return Path(folder).expanduser() / f"{name}.toml"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)  # shortest round-tripping form; never nan/inf (parameters are validated finite)
    if isinstance(v, str):
        # JSON's escapes are a subset of TOML basic strings'; TOML also wants DEL escaped.
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps(values: dict[str, Any]) -> str:
    """{"group.name": value} -> TOML text, groups in declaration order."""
    groups: dict[str, list[str]] = {}
    order = [s.path for s in SPECS]
    for path in sorted(values, key=lambda p: order.index(p) if p in order else len(order)):
        spec = spec_for(path)
        groups.setdefault(spec.group, []).append(f"{spec.name} = {_toml_value(values[path])}")
    return "\n".join(f"[{g}]\n" + "\n".join(lines) + "\n" for g, lines in groups.items())


def params_values(params: Params) -> dict[str, Any]:
    return {s.path: get_value(params, s.path) for s in SPECS}


def save(folder: str | os.PathLike, name: str, values: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): a crash mid-write never leaves half a preset."""
    path = preset_path(folder, name)
    text = f"# engine preset {path.stem!r}\n" + dumps(values)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".preset-", suffix=".toml", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise PresetError(f"cannot write preset {path}: {e.strerror or e}") from None
    return path


def load(folder: str | os.PathLike, name: str) -> dict[str, Any]:
    """Read and validate a preset: {"group.name": value}. Every value is checked (all or nothing)."""
    path = preset_path(folder, name)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PresetError(f"no preset {path.stem!r} in {path.parent}") from None
    except tomllib.TOMLDecodeError as e:
        raise PresetError(f"{path}: invalid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PresetError(f"cannot read {path}: {e}") from None
    values: dict[str, Any] = {}
    for group, body in data.items():
        if not isinstance(body, dict):
            raise PresetError(f"{path}: top-level key {group!r} must be a parameter group table like [latent]")
        for key, value in body.items():
            try:
                spec = spec_for(f"{group}.{key}")
                values[spec.path] = spec.coerce(value)
            except ParamError as e:
                raise PresetError(f"{path}: {e}") from None
    try:
        with_values(Params(), values)  # the whole set is valid together
    except ParamError as e:
        raise PresetError(f"{path}: {e}") from None
    return values
