"""`engine run --voice HOST:PORT`: the events `engine voice` speaks about (seed 000: the work talks about its heat).

A controller: after each frame it compares the frame's values with the last ones it saw and sends an OSC message
to the voice process for each event, with the live values a template may use:

    /voice/event NAME key value key value ...

Events: start (the first frame), temperature_band (the temperature crossed into another band of --voice-bands;
`direction` says rising or falling), prompt (diffusion.prompt), seed (latent.seed or diffusion.seed), mode
(source.mode, diffusion.mode), network (a network swap was asked for), governor (its level moved), tick (every
--voice-every seconds). Values: temperature, fps, prompt, seed, psi, steps, level (governor), band, direction,
mode, network.

Rate-limited: at most one event per --voice-gap seconds; events that come inside the gap are coalesced (the
newest of each kind is kept) and sent when it ends, band crossings first. Sending is a non-blocking UDP datagram
on the render thread (a full socket buffer drops the event, counted); nothing here waits.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections import OrderedDict
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder

from engine.clock import FrameTime
from engine.control import Controller
from engine.control.telemetry import parse_destination
from engine.errors import UsageError
from engine.params import ParamStore

log = logging.getLogger("engine.control.voice")

DEFAULT_BANDS = (40.0, 50.0, 60.0, 70.0, 80.0, 90.0)
#: Which events go first when several wait for the end of a gap.
PRIORITY = ("temperature_band", "start", "network", "prompt", "mode", "seed", "governor", "tick")


def parse_bands(text: str | None) -> tuple[float, ...]:
    if text is None or text == "":
        return DEFAULT_BANDS
    try:
        bands = tuple(sorted(float(x) for x in str(text).split(",") if x.strip()))
    except ValueError:
        raise UsageError(f"--voice-bands {text!r}: expected temperatures separated by commas, e.g. 50,60,70,80") from None
    if not bands or len(bands) > 64 or not all(math.isfinite(b) for b in bands):
        raise UsageError(f"--voice-bands {text!r}: give 1 to 64 finite temperatures, e.g. 50,60,70,80")
    return bands


def band_of(temperature: float, bands: tuple[float, ...]) -> int:
    """0 below the first edge, len(bands) above the last."""
    return sum(1 for b in bands if temperature >= b)


class VoiceEmitter(Controller):
    def __init__(self, destination: str, *, bands: tuple[float, ...] = DEFAULT_BANDS, gap: float = 4.0,
                 every: float = 0.0, thermal: Any = None, governor: Any = None, clock=time.monotonic):
        host, port = parse_destination(destination, "--voice")
        if not (gap >= 0 and math.isfinite(gap)) or not (every >= 0 and math.isfinite(every)):
            raise UsageError("--voice-gap and --voice-every must be finite numbers >= 0")
        try:
            family, _, _, _, self.addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        except socket.gaierror as e:
            raise UsageError(f"--voice {host}:{port}: cannot resolve {host} ({e.strerror})") from None
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.bands, self.gap, self.every = bands, float(gap), float(every)
        self.thermal, self.governor, self.clock = thermal, governor, clock
        self._store: ParamStore | None = None
        self._last: dict[str, Any] | None = None
        self._band: int | None = None
        self._next_tick: float | None = None
        self._last_sent = -math.inf
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._fps = 0.0
        self.sent: dict[str, int] = {}
        self.coalesced = 0
        self.send_errors = 0

    def start(self, store: ParamStore, info: dict[str, Any]) -> None:
        self._store = store
        log.info("voice: events to %s:%d (bands %s, gap %g s)", self.addr[0], self.addr[1], self.bands, self.gap)

    def _temperature(self) -> float | None:
        sample = getattr(self.thermal, "current", None) or getattr(self.thermal, "latest", None)
        return getattr(sample, "temperature", None)

    def values(self, snap) -> dict[str, Any]:
        temperature = self._temperature()
        return {
            "temperature": float(temperature) if temperature is not None else float("nan"),
            "fps": float(self._fps),
            "prompt": snap.diffusion.prompt,
            "seed": int(snap.latent.seed),
            "diffusion_seed": int(snap.diffusion.seed),
            "psi": float(snap.latent.psi),
            "steps": int(snap.diffusion.steps),
            "level": int(getattr(self.governor, "level", 0) or 0),
            "mode": snap.source.mode,
            "network": snap.stylegan.network or snap.diffusion.model,
        }

    def after_frame(self, when: FrameTime, frame_stats: dict[str, float]) -> None:
        if self._store is None:
            return
        self._fps = float(frame_stats.get("fps", 0.0) or 0.0)
        snap = self._store.snapshot()
        now = self.clock()
        values = self.values(snap)
        last, self._last = self._last, values
        events: list[tuple[str, dict[str, Any]]] = []
        temperature = values["temperature"]
        if last is None:
            events.append(("start", {}))
            if math.isfinite(temperature):
                self._band = band_of(temperature, self.bands)
            self._next_tick = now + self.every if self.every > 0 else None
        else:
            if math.isfinite(temperature):
                band = band_of(temperature, self.bands)
                if self._band is None:
                    self._band = band
                elif band != self._band:
                    events.append(("temperature_band", {"band": band, "direction": "rising" if band > self._band else "falling"}))
                    self._band = band
            for name, keys in (("prompt", ("prompt",)), ("seed", ("seed", "diffusion_seed")), ("mode", ("mode",)),
                               ("network", ("network",)), ("governor", ("level",))):
                if any(values[k] != last[k] for k in keys) and not (name == "network" and not values["network"]):
                    events.append((name, {}))
            if self._next_tick is not None and now >= self._next_tick:
                events.append(("tick", {}))
                self._next_tick = now + self.every
        for name, extra in events:
            if name in self._pending:
                self.coalesced += 1
            self._pending[name] = extra
        if self._pending and now - self._last_sent >= self.gap:
            name = min(self._pending, key=lambda n: PRIORITY.index(n) if n in PRIORITY else len(PRIORITY))
            extra = self._pending.pop(name)
            self._send(name, {**values, "band": self._band if self._band is not None else -1, "direction": "",
                              **extra})
            self._last_sent = now

    def _send(self, name: str, values: dict[str, Any]) -> None:
        b = OscMessageBuilder("/voice/event")
        b.add_arg(name)
        for k, v in values.items():
            b.add_arg(k)
            if isinstance(v, bool):
                v = int(v)
            if isinstance(v, int) and not -(2**31) <= v < 2**31:
                b.add_arg(v, OscMessageBuilder.ARG_TYPE_INT64)  # a seed up to 2^32 - 1 does not fit OSC's int32
            else:
                b.add_arg(v if isinstance(v, (int, float, str)) else str(v))
        try:
            self.sock.sendto(b.build().dgram, self.addr)
            self.sent[name] = self.sent.get(name, 0) + 1
        except OSError as e:  # a full buffer or an unreachable voice process: drop this event, never wait
            self.send_errors += 1
            if self.send_errors == 1:
                log.warning("voice: sending to %s:%d failed (%s); events are dropped meanwhile", self.addr[0], self.addr[1], e)

    def stats(self) -> dict[str, Any]:
        return {"sent": dict(self.sent), "pending": list(self._pending), "coalesced": self.coalesced,
                "send_errors": self.send_errors}

    def stop(self) -> None:
        self.sock.close()
