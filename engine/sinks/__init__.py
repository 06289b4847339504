"""Sink registry: parse `--sink SPEC` strings and report which sinks this machine offers.

SPEC forms: `null`, `window`, `file:PATH` (.mp4 / .mov / .mkv video, or a `%05d.png` image sequence),
`ndi[:NAME]`, `spout[:NAME]`, `syphon[:NAME]`, `v4l2[:/dev/videoN]`. Names default to `engine`.
Sink modules are imported lazily so a missing optional package only matters for the sink that needs it.
"""

from __future__ import annotations

import importlib

from engine.errors import UsageError
from engine.sinks.base import Sink

# kind -> "module:Class". Import cost and optional packages stay out of start-up until a sink is used.
SINK_CLASSES: dict[str, str] = {
    "null": "engine.sinks.null:NullSink",
    "file": "engine.sinks.file:FileSink",
    "window": "engine.sinks.window:WindowSink",
    "ndi": "engine.sinks.ndi:NDISink",
    "spout": "engine.sinks.spout:SpoutSink",
    "syphon": "engine.sinks.syphon:SyphonSink",
    "v4l2": "engine.sinks.v4l2:V4L2Sink",
}


def sink_class(kind: str) -> type[Sink]:
    target = SINK_CLASSES.get(kind)
    if target is None:
        raise UsageError(f"unknown sink {kind!r}; choose from {', '.join(SINK_CLASSES)} (e.g. --sink file:out.mp4)")
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("engine."):
            raise UsageError(f"sink {kind!r} is not built into this version of engine") from None
        raise
    return getattr(module, cls_name)


def parse_sink(spec: str) -> Sink:
    """Build a sink from a spec string. Raises UsageError for unknown kinds or malformed targets."""
    spec = spec.strip()
    if not spec:
        raise UsageError("empty --sink; use e.g. --sink null, --sink window or --sink file:out.mp4")
    kind, _, target = spec.partition(":")
    cls = sink_class(kind.lower())
    return cls(target)  # the class validates its own target and raises UsageError


def availability() -> dict[str, tuple[bool, str]]:
    """{kind: (available, reason)} for every sink, for `engine info`."""
    out = {}
    for kind in SINK_CLASSES:
        try:
            out[kind] = sink_class(kind).availability()
        except UsageError as e:
            out[kind] = (False, str(e))
        except Exception as e:  # an optional package that fails to import in an unexpected way
            out[kind] = (False, f"{type(e).__name__}: {e}")
    return out
