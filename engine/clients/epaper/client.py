"""HTTP to `engine serve`, with the standard library only (a Pi Zero has no room for more).

Every call retries with exponential backoff and jitter while the server cannot be reached, answers 5xx, or is busy
(429: its Retry-After is honoured); a 4xx other than 429 is the request's own fault and is not retried. Before each
wait it tells the frame (on_retry), which says so on the panel once: an ePaper refresh takes seconds, so the panel
is not redrawn per attempt.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable


class ServerError(Exception):
    """The server could not be reached, or refused the request (`status`, None when unreachable)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after  # seconds, from a 429's or 503's Retry-After


@dataclass
class Picture:
    png: bytes
    id: int
    prompt: str | None
    seed: int | None


@dataclass
class Backoff:
    first: float = 2.0  # seconds before the first retry
    factor: float = 2.0
    longest: float = 120.0  # the longest wait between tries
    give_up: float = 600.0  # stop retrying after this long (the next press or auto poll tries again)

    def waits(self, rng: random.Random):
        wait, waited = self.first, 0.0
        while waited < self.give_up:
            w = min(wait, self.longest) * rng.uniform(0.8, 1.2)  # jitter: several frames do not retry in step
            yield w
            waited += w
            wait *= self.factor


class ArtClient:
    def __init__(self, server: str, *, token: str | None = None, palette: str = "inky7", panel: tuple[int, int] = (600, 448),
                 timeout: float = 180.0, backoff: Backoff | None = None, sleep: Callable[[float], object] = time.sleep):
        """sleep(seconds) waits between retries; when it returns True (threading.Event.wait of a stop event), the
        retries end at once."""
        if not server.startswith(("http://", "https://")):
            server = "http://" + server
        self.server = server.rstrip("/")
        self.token = token
        self.picture_query = {"palette": palette, "panel": f"{panel[0]}x{panel[1]}"}
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.sleep = sleep
        self._rng = random.Random()

    # -- the endpoints --------------------------------------------------------------------------------------------
    def generate(self, prompt: str | None = None, on_retry=None) -> Picture:
        body = {} if prompt is None else {"prompt": prompt}
        return self._picture("POST", "/generate", json.dumps(body).encode(), "application/json", on_retry)

    def generate_new(self, on_retry=None) -> Picture:
        return self._picture("POST", "/generate/new", b"", "application/json", on_retry)

    def latest(self, on_retry=None) -> Picture:
        return self._picture("GET", "/latest", None, None, on_retry)

    def latest_id(self, on_retry=None) -> int | None:
        """The newest picture's id, without its bytes (the auto-mode poll); None before the first picture."""
        try:
            status, headers, body = self._call("GET", "/latest?format=json", None, None, on_retry)
        except ServerError as e:
            if e.status == 404:
                return None
            raise
        return int(json.loads(body)["id"])

    def transcribe(self, wav: bytes, on_retry=None) -> str:
        _, _, body = self._call("POST", "/transcribe", wav, "audio/wav", on_retry)
        return str(json.loads(body).get("text", "")).strip()

    def auto(self, on: bool, interval_seconds: float, on_retry=None) -> None:
        self._call("POST", "/auto", json.dumps({"on": on, "interval_seconds": interval_seconds}).encode(),
                   "application/json", on_retry)

    # -- plumbing ---------------------------------------------------------------------------------------------------
    def _picture(self, method, path, body, content_type, on_retry) -> Picture:
        _, headers, png = self._call(method, f"{path}?{urllib.parse.urlencode(self.picture_query)}", body, content_type, on_retry)
        prompt = headers.get("X-Prompt")
        seed = headers.get("X-Seed")
        return Picture(png, int(headers.get("X-Image-Id", 0)), prompt, int(seed) if seed else None)

    def _call(self, method, path, body, content_type, on_retry):
        waits = self.backoff.waits(self._rng)
        while True:
            try:
                return self._once(method, path, body, content_type)
            except ServerError as e:
                if e.status is not None and e.status < 500 and e.status != 429:
                    raise
                wait = next(waits, None)
                if wait is None:
                    raise
                if e.retry_after is not None:
                    wait = max(wait, e.retry_after)
                if on_retry is not None:
                    on_retry(e, wait)
                if self.sleep(wait):  # an Event's wait returns True when the frame is told to stop: retry no more
                    raise

    def _once(self, method, path, body, content_type):
        req = urllib.request.Request(self.server + path, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            try:
                detail = json.loads(e.read()).get("detail", "")
            except Exception:
                detail = ""
            ra = e.headers.get("Retry-After") if e.headers else None
            raise ServerError(f"the server answered {e.code}: {detail or e.reason}", e.code,
                              float(ra) if ra and ra.isdigit() else None) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ServerError(f"cannot reach {self.server} ({reason})") from None
