"""What the frame does: a button press becomes a request to engine serve, and the answer goes on the panel.

Presses go into a queue (gpiozero calls from its own thread) and one worker handles them in order; repeated presses
of the same button while it works count once. The panel is never blanked: while the server cannot be reached the
last picture stays, with one line saying so (drawn once per outage: an ePaper refresh takes seconds), and the request
is retried with backoff (client.py). Auto mode asks the server to make a picture every --auto-minutes and polls
/latest's id, fetching the picture only when it changed.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time

from PIL import Image

from engine.clients.epaper.client import ArtClient, Picture, ServerError
from engine.clients.epaper.inputs import ACTIONS
from engine.clients.epaper.panels import with_strip

log = logging.getLogger("frame")


class Frame:
    def __init__(self, client: ArtClient, panel, mic=None, *, record_seconds: float = 3.0, auto_minutes: float = 30.0,
                 poll_seconds: float = 60.0, caption: bool = False):
        self.client = client
        self.panel = panel
        self.mic = mic
        self.record_seconds = float(record_seconds)
        self.auto_minutes = float(auto_minutes)
        self.poll_seconds = float(poll_seconds)
        self.caption = caption
        self.events: queue.Queue[str] = queue.Queue()
        self.prompt: str | None = None  # the prompt of the picture on the panel
        self.image: Image.Image | None = None  # the picture on the panel, without any message strip
        self.shown_id: int | None = None
        self.seed: int | None = None  # the seed of the picture on the panel
        self.auto = False
        self.message: str | None = None  # the line on the panel now, if any
        self.handled = 0  # presses handled (tests wait on it)

    # -- input ------------------------------------------------------------------------------------------------------
    def press(self, action: str) -> None:
        """Thread-safe: a button's callback."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        self.events.put(action)

    def run(self, stop: threading.Event) -> None:
        next_poll = time.monotonic()
        while not stop.is_set():
            timeout = max(0.0, next_poll - time.monotonic()) if self.auto else 0.5
            try:
                action = self.events.get(timeout=min(timeout, 0.5))
            except queue.Empty:
                if self.auto and time.monotonic() >= next_poll:
                    self.poll()
                    next_poll = time.monotonic() + self.poll_seconds
                continue
            while not self.events.empty() and self.events.queue[0] == action:  # pressed again while busy: once
                self.events.get_nowait()
            self.handle(action)
            if action == "auto" and self.auto:
                next_poll = time.monotonic() + self.poll_seconds

    def handle(self, action: str) -> bool:
        """One press, start to end (retries included). False when it failed: the panel says why."""
        try:
            getattr(self, f"do_{action}")()
            return True
        except ServerError as e:
            log.warning("frame: %s: %s", action, e)
            if e.status is None:
                self.say("Cannot reach the art server. Press again to retry.")
            elif e.status >= 500 or e.status == 429:
                self.say(f"The art server could not make it ({e.status}). Press again to retry.")
            else:
                self.say(f"The art server refused that: {e}")
            return False
        except Exception as e:  # a frame on a wall must keep going: log it, say it, wait for the next press
            log.exception("frame: %s failed", action)
            self.say(f"Something went wrong: {type(e).__name__}: {e}")
            return False
        finally:
            self.handled += 1

    # -- the four buttons ------------------------------------------------------------------------------------------
    def do_same(self) -> None:
        self.show(self.client.generate(self.prompt, on_retry=self.retrying))

    def do_new(self) -> None:
        self.show(self.client.generate_new(on_retry=self.retrying))

    def do_speak(self) -> None:
        if self.mic is None:
            self.say("No microphone on this frame (--mic).")
            return
        log.info("frame: listening for %.0f s", self.record_seconds)
        wav = self.mic.record(self.record_seconds)
        text = self.client.transcribe(wav, on_retry=self.retrying)
        log.info("frame: heard %r", text)
        if not text:
            self.say("I did not catch that. Press the speak button and try again.")
            return
        pic = self.client.generate(text, on_retry=self.retrying)
        self.prompt = text  # what was asked for, also when the server's model takes no prompt (StyleGAN)
        self.show(pic)

    def do_auto(self) -> None:
        on = not self.auto
        self.client.auto(on, self.auto_minutes * 60.0, on_retry=self.retrying)
        self.auto = on
        log.info("frame: auto mode %s (every %g min)", "on" if on else "off", self.auto_minutes)

    def poll(self) -> None:
        """Auto mode: show the server's newest picture if it is not the one on the panel."""
        try:
            newest = self.client.latest_id(on_retry=self.retrying)
            if newest is not None and newest != self.shown_id:
                self.show(self.client.latest(on_retry=self.retrying))
        except ServerError as e:
            log.warning("frame: auto poll: %s", e)  # the next poll tries again; the picture stays

    # -- the panel ---------------------------------------------------------------------------------------------------
    def show(self, pic: Picture) -> None:
        image = Image.open(io.BytesIO(pic.png)).convert("RGB")
        if image.size != tuple(self.panel.size):
            image = image.resize(self.panel.size)  # the server fits it (?panel=); this only guards a mismatch
        self.image, self.prompt, self.shown_id, self.message = image, pic.prompt or self.prompt, pic.id, None
        self.seed = pic.seed
        shown = with_strip(image, self.panel.size, pic.prompt) if self.caption and pic.prompt else image
        self.panel.show(shown)
        log.info("frame: showing picture %s (seed %s%s)", pic.id, pic.seed, f", {pic.prompt!r}" if pic.prompt else "")

    def say(self, text: str) -> None:
        """One line on the panel, over the picture that stays; not redrawn while the same line is up."""
        if text == self.message:
            return
        self.message = text
        self.panel.show(with_strip(self.image, self.panel.size, text))

    def retrying(self, error: ServerError, wait: float) -> None:
        log.warning("frame: %s; retrying in %.1f s", error, wait)
        self.say("Cannot reach the art server; retrying..." if error.status is None else
                 f"The art server is busy ({error.status}); retrying...")
