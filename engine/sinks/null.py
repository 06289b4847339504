"""`--sink null`: discards frames. For benchmarks and OSC-only runs."""

from engine.sinks.base import Sink


class NullSink(Sink):
    kind = "null"

    def send_texture(self, texture, frame_index: int, t: float | None = None) -> None:
        self.frames_sent += 1
