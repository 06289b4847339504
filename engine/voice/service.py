"""The voice process: OSC in, a bounded queue of lines, one speaking thread, audio out and/or WAV files, OSC replies.

    /voice/say "text"                 speak this line
    /voice/describe "a calm voice"    Parler's voice description for the lines after it (espeak ignores it)
    /voice/stop                       stop speaking now and forget the queued lines
    /voice/event NAME k v k v ...     from `engine run --voice`: speak the next template line for NAME, filled with
                                      the values (engine.voice.templates)
Replies to --reply HOST:PORT: /voice/started "text" when a line starts, /voice/done SECONDS when it ends (the
seconds of audio spoken; an interrupted line reports what was spoken).

A line arriving while another is spoken: --on-busy queue (waits; at most QUEUE_MAX lines wait, more are dropped and
counted), interrupt (the current line stops, the queue is cleared, the new line starts), drop (the new line is
ignored). A flood of messages costs a bounded queue and a counter, never memory or a blocked socket.
"""

from __future__ import annotations

import collections
import logging
import math
import socket
import threading
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import BlockingOSCUDPServer

from engine.errors import SetupError, UsageError
from engine.voice.backends import Backend
from engine.voice.templates import MAX_LINE, Templates

log = logging.getLogger("engine.voice")

QUEUE_MAX = 8
ON_BUSY = ("queue", "interrupt", "drop")


class AudioOut:
    """Playback through PortAudio (sounddevice) on the default or a named output device."""

    def __init__(self, device: str | None):
        try:
            import sounddevice as sd
        except (ImportError, OSError) as e:  # OSError: the module is there, PortAudio is not
            raise SetupError(f"no audio output: sounddevice/PortAudio unavailable ({e}); pip install sounddevice and "
                             "apt-get install libportaudio2, or write WAV files with --out DIR and --audio none") from None
        self.sd = sd
        try:
            outputs = [d for d in sd.query_devices() if d.get("max_output_channels", 0) > 0]
        except Exception as e:
            outputs, err = [], str(e)
        else:
            err = ""
        if not outputs:
            raise SetupError(f"no audio output device found{f' ({err})' if err else ''}; write WAV files with --out DIR "
                             "and --audio none, or connect a sound card")
        self.device: Any = None
        if device not in (None, "", "default"):
            names = [d["name"] for d in outputs]
            match = [d for d in outputs if device.lower() in d["name"].lower()] or \
                    ([d for d in outputs if str(d.get("index")) == device])
            if not match:
                raise SetupError(f"--audio {device!r}: no such output device; found: {', '.join(names)}")
            self.device = match[0]["index"]
        self.name = (sd.query_devices(self.device, "output") or {}).get("name", "default")
        self._stream = None

    def begin(self, rate: int) -> None:
        self._stream = self.sd.OutputStream(samplerate=rate, channels=1, dtype="float32", device=self.device)
        self._stream.start()

    def write(self, chunk: np.ndarray) -> None:
        if self._stream is not None:
            self._stream.write(np.ascontiguousarray(chunk, dtype=np.float32).reshape(-1, 1))

    def end(self, abort: bool = False) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            (stream.abort if abort else stream.stop)()
            stream.close()


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())


class VoiceService:
    def __init__(self, backend: Backend, templates: Templates, *, host: str = "127.0.0.1", port: int = 9000,
                 reply: tuple[str, int] | None = None, out_dir: Path | None = None, audio: AudioOut | None = None,
                 on_busy: str = "queue"):
        if on_busy not in ON_BUSY:
            raise UsageError(f"--on-busy {on_busy!r}: use {', '.join(ON_BUSY)}")
        if audio is None and out_dir is None:
            raise UsageError("nowhere to speak: give an audio device (default) or --out DIR for WAV files")
        self.backend, self.templates, self.on_busy = backend, templates, on_busy
        self.audio, self.out_dir = audio, out_dir
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        self.description = templates.description
        self.reply = reply
        self._reply_sock = socket.socket(socket.AF_INET6 if reply and ":" in reply[0] else socket.AF_INET, socket.SOCK_DGRAM)
        self._reply_sock.setblocking(False)
        self._queue: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._speaking = False
        self._interrupt = threading.Event()
        self._stopping = False
        self.stats: dict[str, Any] = collections.Counter()
        self.last_error: str | None = None
        self.lines_spoken = 0
        d = Dispatcher()
        d.map("/voice/say", self._on_say)
        d.map("/voice/describe", self._on_describe)
        d.map("/voice/stop", self._on_stop)
        d.map("/voice/event", self._on_event)
        d.set_default_handler(self._on_unknown)
        try:
            self.server = BlockingOSCUDPServer((host, port), d)
        except OSError as e:
            raise UsageError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror}); is another voice running? "
                             "pick another with --port") from None
        self.port = self.server.server_address[1]
        self._osc_thread = threading.Thread(target=self.server.serve_forever, name="voice-osc", daemon=True)
        self._speak_thread = threading.Thread(target=self._speak_loop, name="voice-speak", daemon=True)

    def start(self) -> None:
        self._osc_thread.start()
        self._speak_thread.start()

    # -- OSC (the server's thread: only enqueue) ----------------------------------------------------------------
    def _on_say(self, address: str, *args: Any) -> None:
        if len(args) != 1 or not isinstance(args[0], str) or not args[0].strip():
            self._reject(f"{address} wants one text argument")
            return
        self.submit(args[0][:MAX_LINE])

    def _on_describe(self, address: str, *args: Any) -> None:
        if len(args) != 1 or not isinstance(args[0], str):
            self._reject(f"{address} wants one text argument")
            return
        self.description = args[0][:MAX_LINE]
        self.stats["describe"] += 1

    def _on_stop(self, address: str, *args: Any) -> None:
        with self._cond:
            self.stats["stopped"] += len(self._queue)
            self._queue.clear()
        self._interrupt_current()

    def _on_event(self, address: str, *args: Any) -> None:
        if not args or not isinstance(args[0], str) or len(args) % 2 != 1:
            self._reject(f"{address} wants NAME followed by key value pairs")
            return
        values = {str(args[i]): args[i + 1] for i in range(1, len(args) - 1, 2)}
        key = f"event:{args[0]}"[:64]
        if key in self.stats or len(self.stats) < 64:  # names come from the network: a bounded table
            self.stats[key] += 1
        line = self.templates.line(args[0], values)
        if line:
            self.submit(line)

    def _on_unknown(self, address: str, *args: Any) -> None:
        self._reject(f"unknown address {address[:80]}")

    def _reject(self, why: str) -> None:
        self.stats["rejected"] += 1
        if self.stats["rejected"] in (1, 10, 100) or self.stats["rejected"] % 1000 == 0:
            log.warning("voice: %s (%d rejected so far)", why, self.stats["rejected"])

    def submit(self, text: str) -> bool:
        """Queue a line by the --on-busy policy. Returns whether it will be spoken."""
        with self._cond:
            busy = self._speaking or bool(self._queue)
            if busy and self.on_busy == "drop":
                self.stats["dropped"] += 1
                return False
            if busy and self.on_busy == "interrupt":
                self.stats["interrupted"] += 1 if self._speaking else 0
                self.stats["stopped"] += len(self._queue)
                self._queue.clear()
                self._interrupt_current()
            if len(self._queue) >= QUEUE_MAX:
                self.stats["dropped"] += 1
                return False
            self._queue.append(text)
            self.stats["queued"] += 1
            self._cond.notify()
            return True

    def _interrupt_current(self) -> None:
        if self._speaking:
            self._interrupt.set()
            stop = getattr(self.backend, "interrupt", None)
            if stop is not None:
                stop()

    # -- speaking (its own thread) ---------------------------------------------------------------------------------
    def _speak_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                text = self._queue.popleft()
                self._speaking = True
                self._interrupt.clear()
            try:
                self._speak(text)
            except Exception as e:  # one failed line is a log line; the voice goes on
                self.stats["errors"] += 1
                self.last_error = f"{type(e).__name__}: {e}"
                log.error("voice: speaking %r failed: %s", text[:60], self.last_error)
                self._send("/voice/done", 0.0)
            finally:
                with self._cond:
                    self._speaking = False

    def _speak(self, text: str) -> None:
        t0 = time.monotonic()
        self._send("/voice/started", text)
        chunks: list[np.ndarray] = []
        samples = 0
        first_audio = None
        opened = False
        interrupted = False
        try:
            for chunk in self.backend.stream(text, self.description):
                if self._interrupt.is_set():
                    interrupted = True
                    break
                if first_audio is None:
                    first_audio = time.monotonic() - t0
                if self.audio is not None:
                    if not opened:
                        self.audio.begin(self.backend.rate)
                        opened = True
                    self.audio.write(chunk)
                if self.out_dir is not None:
                    chunks.append(chunk)
                samples += len(chunk)
        finally:
            if opened:
                self.audio.end(abort=interrupted or self._interrupt.is_set())
        interrupted = interrupted or self._interrupt.is_set()
        seconds = samples / float(self.backend.rate)
        if self.out_dir is not None and chunks:
            self.lines_spoken += 1
            write_wav(self.out_dir / f"{self.lines_spoken:05d}.wav", np.concatenate(chunks), self.backend.rate)
        elif chunks or samples:
            self.lines_spoken += 1
        self.stats["interrupted_lines" if interrupted else "spoken"] += 1
        if first_audio is not None:
            self.stats["first_audio_ms_max"] = max(self.stats["first_audio_ms_max"], int(first_audio * 1000))
        self._send("/voice/done", float(seconds))
        log.info("voice: %s %.2f s of %r", "interrupted after" if interrupted else "spoke", seconds, text[:60])

    def _send(self, address: str, value: Any) -> None:
        if self.reply is None:
            return
        b = OscMessageBuilder(address)
        b.add_arg(value if not isinstance(value, float) or math.isfinite(value) else 0.0)
        try:
            self._reply_sock.sendto(b.build().dgram, self.reply)
        except OSError:
            self.stats["reply_errors"] += 1

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._speaking else 0)

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._queue.clear()
            self._cond.notify_all()
        self._interrupt_current()
        self.server.shutdown()
        self.server.server_close()
        self._speak_thread.join(timeout=10)
        self.backend.close()
        self._reply_sock.close()
