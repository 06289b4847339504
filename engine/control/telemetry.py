"""OSC out: telemetry for a control surface (`--osc-out HOST:PORT`, repeatable; `--osc-out-rate HZ`, default 10).

Every 1/rate seconds, to every destination, one message per address with one float (TouchDesigner's OSC In
CHOP splits multi-argument messages into channels; Max's [route] wants one value per address):

    /engine/fps                   frames per second (recent average)
    /engine/frame_ms              last frame's time, ms
    /engine/gpu/temperature       the temperature input (whichever --thermal source), degrees C
    /engine/gpu/power             W          (NVML only)
    /engine/gpu/sm_clock          MHz        (NVML only)
    /engine/gpu/utilization       %          (NVML only)
    /engine/gpu/thermal_throttle  1 while the GPU slows down for heat (NVML reasons 0x20|0x40), else 0
    /engine/<group>/<name>        the current value of every parameter a mapping or LFO drives

A field the source does not provide is not sent (rather than sent as a fake 0). Sending happens on its own
thread; after_frame only stores a reference to the frame's numbers.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable

from pythonosc.osc_message_builder import OscMessageBuilder

from engine.clock import FrameTime
from engine.control import Controller
from engine.control.ratelimit import LogLimiter
from engine.errors import UsageError
from engine.params import ParamStore, spec_for

log = logging.getLogger("engine.control.telemetry")

GPU_ADDRESSES = {
    "temperature": "/engine/gpu/temperature",
    "power": "/engine/gpu/power",
    "sm_clock": "/engine/gpu/sm_clock",
    "utilization": "/engine/gpu/utilization",
    "throttle": "/engine/gpu/thermal_throttle",
}


def parse_destination(text: str, what: str = "--osc-out") -> tuple[str, int]:
    """"HOST:PORT" or "[v6addr]:PORT" -> (host, port). Raises UsageError naming `what`."""
    t = str(text).strip()
    if t.startswith("["):
        host, sep, port = t[1:].partition("]:")
    else:
        host, sep, port = t.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"{what} {text}: expected HOST:PORT, e.g. 127.0.0.1:7001")
    return host, int(port)


class OscTelemetry(Controller):
    def __init__(self, destinations: list[str] | list[tuple[str, int]], rate: float = 10.0, *, thermal: Any = None,
                 mapped: Callable[[], list[str]] | None = None):
        if not (0 < rate <= 1000):
            raise UsageError(f"--osc-out-rate {rate}: must be > 0 and <= 1000 Hz")
        self.period = 1.0 / rate
        self.rate = rate
        self.thermal = thermal  # has .latest (sampler) or .current (replayer)
        self.mapped = mapped or (lambda: [])
        self.targets: list[tuple[Any, ...]] = []
        self._socks: dict[int, socket.socket] = {}
        for d in destinations:
            host, port = d if isinstance(d, tuple) else parse_destination(d)
            try:
                family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            except socket.gaierror as e:
                raise UsageError(f"--osc-out {host}:{port}: cannot resolve {host} ({e.strerror})") from None
            if family not in self._socks:
                s = socket.socket(family, socket.SOCK_DGRAM)
                s.setblocking(False)  # a full send buffer drops a telemetry tick, never waits
                self._socks[family] = s
            self.targets.append((family, addr))
        self._frame: dict[str, float] = {}
        self._store: ParamStore | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._limiter = LogLimiter(log, interval=10.0)
        self.ticks = 0
        self.sent = 0
        self.send_errors = 0

    def start(self, store: ParamStore, info: dict[str, Any]) -> None:
        self._store = store
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="engine-osc-out", daemon=True)
            self._thread.start()
            log.info("OSC out: telemetry at %g Hz to %s", self.rate, ", ".join(f"{a[0]}:{a[1]}" for _, a in self.targets))

    def after_frame(self, when: FrameTime, frame_stats: dict[str, float]) -> None:
        self._frame = frame_stats  # one reference store; the sender thread reads it

    def messages(self) -> list[tuple[str, float]]:
        """The (address, value) pairs of one tick."""
        out: list[tuple[str, float]] = []
        fs = self._frame
        for key in ("fps", "frame_ms"):
            v = fs.get(key)
            if v is not None:
                out.append((f"/engine/{key}", float(v)))
        th = self.thermal
        sample = None if th is None else (getattr(th, "latest", None) or getattr(th, "current", None))
        if sample is not None:
            for field, address in GPU_ADDRESSES.items():
                v = sample.get(field)
                if v is not None:
                    out.append((address, float(v)))
        if self._store is not None:
            snap = self._store.snapshot()
            for path in self.mapped():
                spec = spec_for(path)
                out.append((spec.address, float(getattr(getattr(snap, spec.group), spec.name))))
        return out

    def send_once(self) -> int:
        n = 0
        dgrams = []
        for address, value in self.messages():
            b = OscMessageBuilder(address=address)
            b.add_arg(value, OscMessageBuilder.ARG_TYPE_FLOAT)
            dgrams.append(b.build().dgram)
        for family, addr in self.targets:
            sock = self._socks[family]
            for d in dgrams:
                try:
                    sock.sendto(d, addr)
                    n += 1
                except OSError as e:  # nobody listening yet, network down: try again next tick
                    self.send_errors += 1
                    self._limiter(f"{addr}", "OSC out: sending to %s:%s failed: %s", addr[0], addr[1], e)
                    break
        self.ticks += 1
        self.sent += n
        return n

    def _run(self) -> None:
        next_due = time.monotonic()
        while not self._stop.is_set():
            try:
                self.send_once()
            except Exception as e:  # telemetry must never take the show down
                self.send_errors += 1
                self._limiter("internal", "OSC out: tick failed: %s", e)
            next_due += self.period
            delay = next_due - time.monotonic()
            if delay < 0:
                next_due = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def stats(self) -> dict[str, Any]:
        return {"destinations": [f"{a[0]}:{a[1]}" for _, a in self.targets], "rate": self.rate, "ticks": self.ticks,
                "sent": self.sent, "send_errors": self.send_errors}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for s in self._socks.values():
            s.close()
