"""Shared by the tests of engine serve, engine triton and the ePaper frame's client: a real uvicorn server in a
thread on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time

from engine.serve.app import create_app
from engine.serve.service import ArtService, Prompts

TINY_SG2 = dict(channel_base=512, channel_max=16, calibrate=False)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, generator, *, token=None, queue_length=8, prompts=None, recogniser=None, note="", port=None):
        import uvicorn

        self.service = ArtService(generator, queue_length=queue_length)  # a generator, or a renderer
        self.app = create_app(self.service, prompts=prompts or Prompts.load(None), token=token, seed=1,
                              recogniser=recogniser, recogniser_note=note)
        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self):
        self.app.state.stop_auto()
        self.server.should_exit = True
        self.thread.join(10)
        self.service.close()
