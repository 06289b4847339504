"""Paths a user gives (on the command line, in a config file, over OSC): checked once, where they are parsed.

A name longer than the file system allows makes every later `exists()` or `open()` raise ENAMETOOLONG, which used to
surface as a traceback at start and as a failing frame live. `user_path` turns that (and NUL bytes, which no path may
hold) into one UsageError naming what the path was for.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import UsageError

#: POSIX NAME_MAX / PATH_MAX as Linux and macOS use them (bytes, UTF-8).
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096


def user_path(text: str | os.PathLike, what: str) -> Path:
    """`text` with ~ expanded, or UsageError("{what}: ...") when no file system could hold it."""
    raw = os.fspath(text)
    if "\x00" in raw:
        raise UsageError(f"{what}: a path cannot contain a NUL character")
    path = Path(os.path.expanduser(raw))
    encoded = os.fsencode(path)
    if len(encoded) > MAX_PATH_BYTES:
        raise UsageError(f"{what}: the path is {len(encoded)} bytes long; file systems allow {MAX_PATH_BYTES}")
    for part in path.parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise UsageError(f"{what}: the name {part[:40]!r}... is {len(os.fsencode(part))} bytes long; file systems "
                             f"allow {MAX_NAME_BYTES} per name")
    return path
