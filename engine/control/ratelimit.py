"""Rate limits for the control layer: a token bucket (floods of OSC messages, replies) and a log limiter (a bad
sender at 1000 messages a second must not turn the log into the bottleneck, nor hide the first useful line).
"""

from __future__ import annotations

import logging
import threading
import time


class TokenBucket:
    """`rate` tokens per second, at most `burst` stored. take() never blocks: it says yes or no.

    Not thread-safe on purpose: each bucket belongs to one thread (the OSC receiver owns its buckets)."""

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def take(self, n: float = 1.0) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def seconds_until(self, n: float = 1.0) -> float:
        """How long until `n` tokens are available (0 if they are now)."""
        missing = n - self._tokens
        return max(0.0, missing / self.rate)


class LogLimiter:
    """At most one log line per `key` every `interval` seconds; the next line says how many were suppressed.

    Thread-safe: OSC, sampler and reload threads share one limiter per logger."""

    def __init__(self, logger: logging.Logger, interval: float = 2.0, clock=time.monotonic):
        self.log = logger
        self.interval = float(interval)
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()
        self.lines = 0  # lines actually written (tests check the limiter really limits)

    def __call__(self, key: str, msg: str, *args, level: int = logging.WARNING) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            n = self._suppressed.pop(key, 0)
            self.lines += 1
        if n:
            msg = msg + f" ({n} similar suppressed)"
        self.log.log(level, msg, *args)
        return True
