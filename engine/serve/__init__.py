"""`engine serve` (seed 004's art on demand for an ePaper picture frame): its own room, using the engine's generators
through their public interface.

    engine serve --generator diffusion: [--size 512] [--host 127.0.0.1] [--port 8000] [--token T] [--prompts FILE]

Rooms: service.py (the generator, one worker thread, the bounded queue, the prompt file), app.py (the HTTP endpoints),
palette.py (fitting to an ePaper panel and dithering to its colours), transcribe.py (/transcribe: pocketsphinx with
the prompt file's words as a grammar, or faster-whisper). Still to come (issue 15): the Triton scale-out and the
frame's client.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("engine.serve")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    from engine.options import SIZE_HELP, add_threads_argument, output_size, positive_int

    p.add_argument("--generator", default="stylegan2", metavar="SPEC", help="as for engine run (default stylegan2)")
    p.add_argument("--size", type=output_size, default=None, metavar="WxH", help=SIZE_HELP)
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]|mps", help="where the generator runs (default auto)")
    p.add_argument("--backend", default="auto", metavar="auto|eager|compile|tensorrt", help="as for engine run (default auto)")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for the frame on the LAN, with --token)")
    p.add_argument("--port", type=int, default=8000, metavar="PORT", help="HTTP port (default 8000)")
    p.add_argument("--token", default=None, metavar="TOKEN", help="require Authorization: Bearer TOKEN (except /health)")
    p.add_argument("--prompts", default=None, metavar="FILE.toml",
                   help="subjects, styles and modifiers for /generate/new (default engine/examples/prompts/epaper.toml)")
    p.add_argument("--queue", type=positive_int, default=8, metavar="N", help="requests that may wait; more get 429 (default 8)")
    p.add_argument("--transcribe", default="auto", choices=("auto", "pocketsphinx", "faster-whisper", "none"),
                   help="the /transcribe recogniser (default auto: faster-whisper with --whisper-model, else pocketsphinx "
                        "with the prompt file's words as its grammar)")
    p.add_argument("--whisper-model", default=None, metavar="DIR", help="a local faster-whisper model folder")
    add_threads_argument(p)


def cmd_serve(ns: argparse.Namespace) -> int:
    import uvicorn

    from engine.backends import apply_backend
    from engine.devices import resolve_device
    from engine.errors import UsageError
    from engine.generators import create_generator
    from engine.serve.app import create_app
    from engine.serve.service import ArtService, Prompts
    from engine.serve.transcribe import choose

    if not 0 <= ns.port <= 65535:
        raise UsageError(f"--port {ns.port}: use 0..65535")
    if ns.host not in ("127.0.0.1", "::1", "localhost") and not ns.token:
        log.warning("serve: listening on %s without --token: anyone on the network can make pictures", ns.host)
    prompts = Prompts.load(ns.prompts)
    recogniser, heard_by = choose(ns.transcribe, vocabulary=prompts.vocabulary(), whisper_model=ns.whisper_model)
    device = resolve_device(ns.device)
    generator = create_generator(ns.generator, output=ns.size, device=device)
    generator, backend = apply_backend(generator, ns.backend)
    service = ArtService(generator, queue_length=ns.queue)
    app = create_app(service, prompts=prompts, token=ns.token, recogniser=recogniser, recogniser_note=heard_by)
    print(f"engine serve: {generator.name} {generator.width}x{generator.height} on {device} ({backend}); "
          f"transcription: {heard_by}; http://{ns.host}:{ns.port}/docs", flush=True)
    try:
        uvicorn.run(app, host=ns.host, port=ns.port, log_level="warning")
    finally:
        app.state.stop_auto()
        service.close()
    return 0
