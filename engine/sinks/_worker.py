"""A worker thread with a bounded frame queue, for host sinks (NDI, v4l2, and reusable by the file sink).

The render loop calls `submit(pixels, frame_index)`: the pixels are copied into a preallocated buffer and queued;
the call never waits for the consumer. When the queue is full a frame is dropped and counted instead:
  * drop="oldest" (live outputs): the oldest queued frame goes, so what a receiver gets is as fresh as possible;
  * drop="newest" (recordings that prefer an unbroken start): the incoming frame goes.
Buffers are recycled (depth + 1 of them: `depth` queued plus the one the worker is handling), so a show that
runs for days allocates nothing per frame.

An offline render can pass block=True to `submit` to wait for room instead (every frame written).

The handler runs on the worker thread. An exception in it is counted and logged (the first one in full, then
once per `log_every` errors) and the worker carries on: a sink whose receiver or device goes away keeps
running, and the loop keeps rendering.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

import numpy as np

log = logging.getLogger("engine.sinks")

Handler = Callable[[np.ndarray, int], None]


class FrameWorker:
    def __init__(self, name: str, handle: Handler, *, depth: int = 2, drop: str = "oldest", log_every: int = 100):
        if depth < 1:
            raise ValueError("depth must be >= 1")
        if drop not in ("oldest", "newest"):
            raise ValueError("drop must be 'oldest' or 'newest'")
        self.name = name
        self.handle = handle
        self.depth = depth
        self.drop = drop
        self.log_every = log_every
        self.submitted = 0
        self.sent = 0  # handler returned normally
        self.dropped = 0  # never reached the handler because the queue was full
        self.errors = 0  # handler raised
        self.last_error: str | None = None
        self.handle_ms_max = 0.0
        self._handle_ms_total = 0.0
        self._queue: collections.deque[tuple[np.ndarray, int]] = collections.deque()
        self._free: list[np.ndarray] = []
        self._nbuffers = 0
        self._cond = threading.Condition()
        self._busy = False  # the worker is inside the handler
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"sink-{name}", daemon=True)
        self._thread.start()

    # -- render thread ------------------------------------------------------------------------------------------

    def submit(self, pixels: np.ndarray, frame_index: int, *, block: bool = False) -> bool:
        """Copy `pixels` and queue them. Returns False when a frame had to be dropped (this one or an older one).

        block=True is for offline renders only (every frame must be written, nobody watches the clock): it waits
        for room instead of dropping. A live show never passes it."""
        with self._cond:
            if self._stopping:
                return False
            self.submitted += 1
            buf = self._take_buffer(pixels)
            while buf is None and block and not self._stopping:
                self._cond.wait()
                buf = self._take_buffer(pixels)
            dropped_one = False
            if buf is None:
                if not self._queue:  # stopping while we waited
                    self.dropped += 1
                    return False
                if self.drop == "newest":
                    self.dropped += 1
                    return False
                # Recycle the oldest queued frame's buffer for this one.
                buf, _ = self._queue.popleft()
                if buf.shape != pixels.shape or buf.dtype != pixels.dtype:
                    buf = np.empty_like(pixels)
                self.dropped += 1
                dropped_one = True
        # The copy happens outside the lock: the worker never touches a buffer that is in neither the queue nor
        # the free list, and holding the lock here would stall the worker's own bookkeeping for the memcpy.
        np.copyto(buf, pixels)
        with self._cond:
            self._queue.append((buf, frame_index))
            self._cond.notify()
        return not dropped_one

    def _take_buffer(self, pixels: np.ndarray) -> np.ndarray | None:
        # Called with the lock held. None means every buffer is queued or in the worker's hands.
        while self._free:
            buf = self._free.pop()
            if buf.shape == pixels.shape and buf.dtype == pixels.dtype:
                return buf
            self._nbuffers -= 1  # size changed: let the old buffer go
        if self._nbuffers < self.depth + 1 and len(self._queue) < self.depth:
            self._nbuffers += 1
            return np.empty_like(pixels)
        return None

    # -- worker thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return  # stopping and drained
                buf, index = self._queue.popleft()
                self._busy = True
            t0 = time.perf_counter()
            try:
                self.handle(buf, index)
            except Exception as e:  # the sink keeps running: count, log, go on
                self.errors += 1
                self.last_error = f"{type(e).__name__}: {e}"
                if self.errors == 1:
                    log.exception("sink %s: frame %d failed; continuing", self.name, index)
                elif self.errors % self.log_every == 0:
                    log.warning("sink %s: %d frames failed so far, last: %s", self.name, self.errors, self.last_error)
            else:
                self.sent += 1
            ms = (time.perf_counter() - t0) * 1000.0
            self._handle_ms_total += ms
            self.handle_ms_max = max(self.handle_ms_max, ms)
            with self._cond:
                self._busy = False
                self._free.append(buf)
                self._cond.notify_all()

    # -- both ---------------------------------------------------------------------------------------------------

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued frame has been handled. True if that happened within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0, drain: bool = True) -> bool:
        """Stop the thread. drain=True hands the queued frames to the handler first. Returns False if the thread
        did not finish within `timeout` (a hung handler: the thread is a daemon and dies with the process)."""
        with self._cond:
            if not drain:
                self.dropped += len(self._queue)
                self._queue.clear()
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> dict:
        handled = self.sent + self.errors
        return {
            "sent": self.sent,
            "dropped": self.dropped,
            "errors": self.errors,
            "last_error": self.last_error,
            "handle_ms_mean": round(self._handle_ms_total / handled, 3) if handled else 0.0,
            "handle_ms_max": round(self.handle_ms_max, 3),
        }
