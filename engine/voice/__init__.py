"""`engine voice`: the work speaks (seed 000). A process of its own beside `engine run`, so speech never stalls
the renderer; it listens on OSC, speaks lines with Parler-TTS or espeak-ng, plays them and/or writes WAV files.

    engine voice [--port 9000] [--reply 127.0.0.1:9001] [--backend auto|espeak|parler] [--out DIR] [--audio NAME|none]
    engine voice --setup parler          # the Parler-TTS environment (its own venv: parler-tts pins transformers)
    engine run ... --voice 127.0.0.1:9000   # the renderer's side: events with live values (engine.control.voice_out)

Rooms: backends.py (espeak-ng, Parler through parler_worker.py in its environment), templates.py (the lines file),
service.py (OSC, queue, playback, WAV, replies), setup.py (--setup parler). It talks to the engine only over OSC.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

log = logging.getLogger("engine.voice")


def add_voice_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=9000, metavar="PORT", help="UDP port to listen on for /voice/... (default 9000)")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDR", help="address to listen on (default 127.0.0.1; 0.0.0.0 for the LAN)")
    p.add_argument("--reply", default=None, metavar="HOST:PORT",
                   help="send /voice/started and /voice/done SECONDS there (e.g. 127.0.0.1:9001, seed 000's port)")
    p.add_argument("--backend", default="auto", choices=("auto", "espeak", "parler"),
                   help="auto: Parler-TTS when its environment and a local model exist, else espeak-ng (default auto)")
    p.add_argument("--model", default=None, metavar="FOLDER|ID",
                   help="Parler-TTS model: a local folder or a hub id in the local Hugging Face cache (default: "
                        "parler-tts/parler-tts-mini-v1 if cached)")
    p.add_argument("--parler-env", type=Path, default=None, metavar="DIR",
                   help="the Parler-TTS virtual environment (default ~/.cache/engine/voice/parler-env)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|mps", help="where Parler-TTS runs (default auto)")
    p.add_argument("--espeak-voice", default="en", metavar="VOICE", help="espeak-ng voice (default en; espeak-ng --voices lists them)")
    p.add_argument("--wpm", type=int, default=150, metavar="N", help="espeak-ng speed in words per minute (default 150)")
    p.add_argument("--lines", type=Path, default=None, metavar="FILE.toml",
                   help="what to say on each engine event (default: engine/examples/voice/lines.toml)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="also write every line as a WAV file here")
    p.add_argument("--audio", default="default", metavar="NAME|default|none",
                   help="audio output device (a name or part of one; default: the system's; none: only --out)")
    p.add_argument("--on-busy", default="queue", choices=("queue", "interrupt", "drop"),
                   help="a new line while one is spoken: wait in the queue (at most 8), interrupt, or drop it (default queue)")
    p.add_argument("--setup", default=None, choices=("parler",), help="make the Parler-TTS environment and exit")
    p.add_argument("--torch", default=None, metavar="SPEC",
                   help="with --setup: the torch requirement for that environment (default: the same version as this one)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: a random tiny Parler model


def cmd_voice(ns: argparse.Namespace) -> int:
    from engine.errors import UsageError

    if ns.setup == "parler":
        from engine.voice.setup import setup_parler

        return setup_parler(ns.parler_env, ns.torch)
    from engine.control.telemetry import parse_destination
    from engine.voice.backends import choose_backend
    from engine.voice.service import AudioOut, VoiceService
    from engine.voice.templates import load_templates

    reply = parse_destination(ns.reply, "--reply") if ns.reply else None
    if not 0 <= ns.port <= 65535:
        raise UsageError(f"--port {ns.port}: use 0..65535")
    templates = load_templates(ns.lines)
    audio = None if ns.audio == "none" else AudioOut(ns.audio)  # no device: one line, before a model loads
    if audio is None and ns.out is None:
        raise UsageError("--audio none needs --out DIR: there would be nowhere to speak")
    backend, why = choose_backend(ns.backend, model=ns.model, env=ns.parler_env, device=ns.device,
                                  espeak_voice=ns.espeak_voice, wpm=ns.wpm, tiny=ns.tiny)
    service = VoiceService(backend, templates, host=ns.host, port=ns.port, reply=reply, out_dir=ns.out, audio=audio,
                           on_busy=ns.on_busy)
    print(f"engine voice: {backend.name} ({why}); listening on {ns.host}:{service.port}"
          + (f", replies to {reply[0]}:{reply[1]}" if reply else "")
          + (f", audio to {audio.name}" if audio else "") + (f", WAV files in {ns.out}" if ns.out else ""), flush=True)
    stop = threading.Event()
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda *_: stop.set())
    service.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        service.close()
        print(f"engine voice: {service.lines_spoken} lines spoken; {dict(service.stats)}", flush=True)
    return 0
