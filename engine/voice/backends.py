"""Speech backends behind one interface: text (+ a voice description) in, mono float32 audio chunks out.

    espeak   espeak-ng (the Debian package): needs no weights, starts at once; the default. The description is not
             used (espeak has voices, not descriptions: --espeak-voice picks one).
    parler   Parler-TTS (parler-tts-mini/large): description + text, streamed (first audio within a second on a
             GPU). parler-tts pins transformers==4.46.1 exactly, so it runs in its own virtual environment
             (`engine voice --setup parler` makes it) as a worker process (parler_worker.py) that this process
             talks to over pipes. The model comes from a local folder or the local Hugging Face cache only.
    auto     parler when its environment and a local model are there, else espeak-ng; the choice and the reason
             are printed at start.
"""

from __future__ import annotations

import abc
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import wave
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.errors import SetupError, UsageError

log = logging.getLogger("engine.voice")

BACKENDS = ("auto", "espeak", "parler")
PARLER_MODELS = ("parler-tts/parler-tts-mini-v1", "parler-tts/parler-tts-mini-v1.1", "parler-tts/parler-tts-large-v1")


def default_parler_env() -> Path:
    base = os.environ.get("ENGINE_CACHE_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "engine") / "voice" / "parler-env"


def env_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


class Backend(abc.ABC):
    name = "backend"
    rate = 22050

    @abc.abstractmethod
    def stream(self, text: str, description: str) -> Iterator[np.ndarray]:
        """Mono float32 chunks in [-1, 1] at self.rate, first chunk as early as the backend can."""

    def close(self) -> None:
        pass


class EspeakBackend(Backend):
    name = "espeak"

    def __init__(self, voice: str = "en", words_per_minute: int = 150):
        self.exe = shutil.which("espeak-ng") or shutil.which("espeak")
        if self.exe is None:
            raise SetupError("espeak-ng is not installed: apt-get install espeak-ng (macOS: brew install espeak-ng)")
        self.voice, self.wpm = voice, int(words_per_minute)
        self.rate = 22050
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def stream(self, text: str, description: str) -> Iterator[np.ndarray]:
        # "--" ends the options: a line starting with "-" is spoken, not parsed as a flag.
        proc = subprocess.Popen([self.exe, "--stdout", "-v", self.voice, "-s", str(self.wpm), "--", text],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with self._lock:
            self._proc = proc
        try:
            data, err = proc.communicate(timeout=60)
        finally:
            with self._lock:
                self._proc = None
        if proc.returncode != 0 or not data:
            if proc.returncode in (-9, -15):  # interrupted (stop)
                return
            raise RuntimeError(f"espeak-ng failed ({proc.returncode}): {err.decode(errors='replace').strip()[:200]}")
        with wave.open(io.BytesIO(data)) as w:
            self.rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            if w.getnchannels() > 1:
                pcm = pcm.reshape(-1, w.getnchannels()).mean(axis=1)
        yield (pcm.astype(np.float32) / 32768.0)

    def interrupt(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()


def find_parler_model(model: str | None) -> tuple[Path | None, list[str]]:
    """A local Parler-TTS model folder: `model` (a folder, or a hub id looked up in the local Hugging Face cache),
    else the known checkpoints in the cache. Returns (folder or None, the places looked at)."""
    looked: list[str] = []
    candidates = [model] if model else list(PARLER_MODELS)
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    for c in candidates:
        p = Path(c).expanduser()
        if p.is_dir():
            looked.append(str(p))
            if (p / "config.json").is_file():
                return p, looked
            continue
        if "/" in c:
            snaps = hub / f"models--{c.replace('/', '--')}" / "snapshots"
            looked.append(str(snaps))
            if snaps.is_dir():
                for snap in sorted(snaps.iterdir(), key=lambda s: s.stat().st_mtime, reverse=True):
                    if (snap / "config.json").is_file():
                        return snap, looked
        else:
            looked.append(str(p))
    return None, looked


class ParlerBackend(Backend):
    """Parler-TTS in its own environment: a worker process (parler_worker.py run by that environment's Python) that
    loads the model once and streams float32 chunks back over its stdout."""

    name = "parler"

    def __init__(self, model: str | None = None, env: Path | None = None, device: str = "auto", tiny: bool = False):
        self.env = env or default_parler_env()
        python = env_python(self.env)
        if not python.is_file():
            raise SetupError(f"Parler-TTS environment not found at {self.env}; make it with: engine voice --setup parler"
                             " (or point --parler-env at one)")
        args = [str(python), str(Path(__file__).with_name("parler_worker.py")), "--device", device]
        if tiny:
            args.append("--tiny")
            self.model = None
        else:
            folder, looked = find_parler_model(model)
            if folder is None:
                raise SetupError(f"no local Parler-TTS model (looked in {', '.join(looked)}); download one on a machine "
                                 f"with internet (hf download {PARLER_MODELS[0]}) or pass --model FOLDER")
            self.model = folder
            args += ["--model", str(folder)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
        self._lock = threading.Lock()
        self._interrupted = False
        ready = self._read_header()  # the worker answers once the model is loaded (seconds; minutes on a cold disk)
        if not ready or not ready.get("ready"):
            self.close()
            raise SetupError(f"the Parler-TTS worker did not start: {ready.get('error') if ready else 'it exited'}")
        self.rate = int(ready["rate"])
        self.device = ready.get("device", "?")
        self._next_id = 0

    def _read_header(self) -> dict | None:
        line = self.proc.stdout.readline()
        if not line:
            return None
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            return {"error": line.decode(errors="replace").strip()[:200]}

    def stream(self, text: str, description: str) -> Iterator[np.ndarray]:
        with self._lock:
            self._next_id += 1
            rid = self._next_id
            self._interrupted = False
            self.proc.stdin.write((json.dumps({"id": rid, "text": text, "description": description}) + "\n").encode())
            self.proc.stdin.flush()
            while True:
                head = self._read_header()
                if head is None:
                    raise RuntimeError("the Parler-TTS worker exited")
                if head.get("error"):
                    raise RuntimeError(f"Parler-TTS: {head['error']}")
                if head.get("done"):
                    return
                n = int(head["samples"])
                data = self.proc.stdout.read(n * 4)
                if not self._interrupted:  # an interrupted line is read to its end (the pipe stays in step), not played
                    yield np.frombuffer(data, dtype="<f4")

    def interrupt(self) -> None:
        self._interrupted = True

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()
                proc.wait(timeout=5)
            except Exception:
                proc.kill()


def choose_backend(name: str, *, model: str | None = None, env: Path | None = None, device: str = "auto",
                   espeak_voice: str = "en", wpm: int = 150, tiny: bool = False) -> tuple[Backend, str]:
    """(backend, why it was chosen). UsageError for an unknown name; SetupError when the named backend cannot run."""
    if name not in BACKENDS:
        raise UsageError(f"--backend {name!r}: use {', '.join(BACKENDS)}")
    if name == "espeak":
        return EspeakBackend(espeak_voice, wpm), "asked for (--backend espeak)"
    if name == "parler":
        b = ParlerBackend(model, env, device, tiny=tiny)
        return b, f"asked for (--backend parler): model {b.model or 'tiny (random, for tests)'} on {b.device}"
    try:
        b = ParlerBackend(model, env, device, tiny=tiny)
        return b, f"Parler-TTS environment and model found: {b.model} on {b.device}"
    except SetupError as e:
        why = str(e)
    return EspeakBackend(espeak_voice, wpm), f"Parler-TTS unavailable ({why}); using espeak-ng"
