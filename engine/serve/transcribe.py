"""POST /transcribe: the frame's short recording (a WAV: any common rate, mono or stereo, 8/16/32-bit PCM) -> text.

    pocketsphinx     its PyPI wheel bundles an English model: offline, no download. Free-form it is poor (espeak-ng
                     saying "paint a red house by the sea" came back "how's that the"), so when the server has a prompt
                     file its words become a JSGF grammar, and it then hears "paint a red house by a the sea".
    faster-whisper   the quality choice, from a local model folder (--whisper-model DIR; no download here).
    auto             faster-whisper when a model folder is given and the package is there, else pocketsphinx.
"""

from __future__ import annotations

import io
import threading
import wave

import numpy as np

from engine.errors import SetupError, UsageError

RATE = 16000
MAX_SECONDS = 30.0


def read_wav(data: bytes) -> np.ndarray:
    """int16 mono at 16 kHz. UsageError naming what is wrong with a body that is not a usable WAV."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if not 8000 <= rate <= 192000:
                raise UsageError(f"a WAV at {rate} Hz; send 8-192 kHz")
            if n / rate > MAX_SECONDS:
                raise UsageError(f"{n / rate:.0f} s of audio; at most {MAX_SECONDS:.0f} s")
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise UsageError(f"not a PCM WAV file ({e}); send the recording as audio/wav") from None
    dtype = {1: np.uint8, 2: "<i2", 4: "<i4"}.get(width)
    if dtype is None:
        raise UsageError(f"{8 * width}-bit samples; send 8, 16 or 32-bit PCM")
    x = np.frombuffer(raw[: len(raw) // (width * channels) * width * channels], dtype=dtype).astype(np.float64)
    if width == 1:
        x = (x - 128.0) * 256.0
    elif width == 4:
        x = x / 65536.0
    x = x.reshape(-1, channels).mean(axis=1)
    if rate != RATE:
        if rate > RATE:  # a box low-pass before decimating, so what lies above 8 kHz does not fold into speech
            k = int(round(rate / RATE))
            if k > 1:
                x = np.convolve(x, np.ones(k) / k, mode="same")
        t = np.arange(int(len(x) * RATE / rate)) * (rate / RATE)
        x = np.interp(t, np.arange(len(x)), x)
    return np.clip(x, -32768, 32767).astype("<i2")


class PocketSphinx:
    name = "pocketsphinx"

    def __init__(self, vocabulary: list[str] | None = None):
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise SetupError("pocketsphinx is not installed: pip install pocketsphinx") from None
        self.decoder = Decoder(samprate=RATE, loglevel="FATAL")
        self.grammar_words: list[str] = []
        if vocabulary:
            words = [w for w in vocabulary if self.decoder.lookup_word(w) is not None]
            if words:
                jsgf = ("#JSGF V1.0;\ngrammar prompt;\npublic <prompt> = <word>+;\n<word> = " + " | ".join(words) + ";\n")
                self.decoder.add_jsgf_string("prompt", jsgf)
                self.decoder.activate_search("prompt")
                self.grammar_words = words
        self._lock = threading.Lock()  # one decoder, one utterance at a time

    def __call__(self, pcm: np.ndarray) -> str:
        with self._lock:
            self.decoder.start_utt()
            self.decoder.process_raw(pcm.tobytes(), full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""


class FasterWhisper:
    name = "faster-whisper"

    def __init__(self, model_dir: str):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise SetupError("faster-whisper is not installed: pip install faster-whisper") from None
        self.model = WhisperModel(model_dir, device="auto", local_files_only=True)
        self._lock = threading.Lock()

    def __call__(self, pcm: np.ndarray) -> str:
        with self._lock:
            segments, _ = self.model.transcribe(pcm.astype(np.float32) / 32768.0, language="en")
            return " ".join(s.text.strip() for s in segments).strip()


def choose(name: str = "auto", *, vocabulary: list[str] | None = None, whisper_model: str | None = None):
    """(recogniser or None, why). None: /transcribe answers 503 with `why`."""
    if name not in ("auto", "pocketsphinx", "faster-whisper", "none"):
        raise UsageError(f"--transcribe {name!r}: use auto, pocketsphinx, faster-whisper or none")
    if name == "none":
        return None, "transcription is off (--transcribe none)"
    if name in ("auto", "faster-whisper") and whisper_model:
        try:
            return FasterWhisper(whisper_model), f"faster-whisper from {whisper_model}"
        except SetupError as e:
            if name == "faster-whisper":
                raise
            why = str(e)
    elif name == "faster-whisper":
        raise UsageError("--transcribe faster-whisper needs --whisper-model DIR (a local model folder)")
    else:
        why = "no --whisper-model"
    try:
        r = PocketSphinx(vocabulary)
        grammar = f", restricted to {len(r.grammar_words)} words of the prompt file" if r.grammar_words else ""
        return r, f"pocketsphinx ({why}){grammar}"
    except SetupError as e:
        return None, f"no speech recogniser: {e}; or faster-whisper with --whisper-model DIR"
