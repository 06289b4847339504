"""A bounded queue and a worker thread for host sinks, so encoding or network I/O never runs on the render
thread.

Live show (`realtime=True`): when the queue is full the frame is dropped and counted: the show goes on.
Offline render (`realtime=False`): `put` waits for space, so every frame is written.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

log = logging.getLogger("engine.sinks")

_STOP = object()


class FrameWorker:
    def __init__(self, name: str, handle: Callable[[Any], None], *, depth: int = 4):
        self.name = name
        self.handle = handle
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.dropped = 0
        self.done = 0
        self.thread = threading.Thread(target=self._run, name=f"sink-{name}", daemon=True)
        self.thread.start()

    def put(self, item: Any, *, block: bool) -> bool:
        """Queue an item. Returns False (and counts a drop) when the queue is full and block is False."""
        if self.error is not None:
            return False
        try:
            self.queue.put(item, block=block)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            if self.error is not None:
                continue  # drain without work after a failure
            try:
                self.handle(item)
                self.done += 1
            except BaseException as e:  # report once; the render loop keeps going
                self.error = e
                log.error("sink %s failed and stopped writing: %s", self.name, e)

    def close(self, timeout: float = 60.0) -> None:
        """Finish queued work, then stop the thread."""
        self.queue.put(_STOP)
        self.thread.join(timeout)
