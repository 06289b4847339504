"""`engine serve` (seed 004's art on demand for an ePaper picture frame): its own room, using the engine's generators
through their public interface.

    engine serve --generator diffusion: [--size 512] [--host 127.0.0.1] [--port 8000] [--token T] [--prompts FILE]
    engine serve --triton http://GPU-BOX:8000       (the generator served by `engine triton` on NVIDIA Triton)

Rooms: service.py (the generator, one worker thread, the bounded queue, the prompt file), app.py (the HTTP endpoints),
palette.py (fitting to an ePaper panel and dithering to its colours), transcribe.py (/transcribe: pocketsphinx with
the prompt file's words as a grammar, or faster-whisper), triton.py (`engine triton` and --triton: scale-out on NVIDIA
Triton through PyTriton). The frame's own client is engine.clients.epaper.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("engine.serve")


def add_generator_arguments(p: argparse.ArgumentParser, generator_default: str | None) -> None:
    """--generator, --size and --backend, as engine run has them: for engine serve and engine triton."""
    from engine.options import SIZE_HELP, output_size

    p.add_argument("--generator", default=generator_default, metavar="SPEC", help="as for engine run (default stylegan2)")
    p.add_argument("--size", type=output_size, default=None, metavar="WxH", help=SIZE_HELP)
    p.add_argument("--backend", default="auto", metavar="auto|eager|compile|tensorrt", help="as for engine run (default auto)")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    from engine.options import add_threads_argument, positive_int

    add_generator_arguments(p, None)  # None: not given (--triton refuses it), stylegan2 otherwise
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]|mps", help="where the generator runs (default auto)")
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
    p.add_argument("--triton", default=None, metavar="URL",
                   help="render on an `engine triton` server at URL (e.g. http://127.0.0.1:8000) instead of here; "
                        "--generator, --size, --device and --backend then belong to engine triton")
    p.add_argument("--triton-model", default="engine", metavar="NAME", help="the model's name on Triton (default engine)")
    p.add_argument("--triton-concurrency", type=positive_int, default=8, metavar="N",
                   help="requests kept in flight to Triton together, for its dynamic batcher to merge (default 8)")
    add_threads_argument(p)


def add_triton_arguments(p: argparse.ArgumentParser) -> None:
    from engine.options import add_threads_argument, positive_int

    add_generator_arguments(p, "stylegan2")
    p.add_argument("--devices", default="auto", metavar="auto|cpu|cuda:0,cuda:1",
                   help="one model instance per device (default auto: every CUDA GPU, else the CPU)")
    p.add_argument("--instances", type=positive_int, default=1, metavar="N",
                   help="model instances per device (default 1; more only helps a CPU with cores to spare)")
    p.add_argument("--model", default="engine", metavar="NAME", help="the model's name on Triton (default engine)")
    p.add_argument("--max-batch", type=positive_int, default=8, metavar="N", help="the largest merged batch (default 8)")
    p.add_argument("--queue-delay-ms", type=float, default=20.0, metavar="MS",
                   help="how long Triton holds a request to merge it with others (default 20)")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDR", help="address Triton listens on (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, default=8000, metavar="PORT", help="Triton's HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, metavar="PORT", help="Triton's gRPC port (default 8001)")
    p.add_argument("--metrics-port", type=int, default=8002, metavar="PORT", help="Triton's Prometheus metrics port (default 8002)")
    add_threads_argument(p)


def cmd_serve(ns: argparse.Namespace) -> int:
    import uvicorn

    from engine.backends import apply_backend
    from engine.devices import resolve_device
    from engine.errors import UsageError
    from engine.generators import create_generator
    from engine.serve.app import create_app
    from engine.serve.service import ArtService, LocalRenderer, Prompts
    from engine.serve.transcribe import choose

    if not 0 <= ns.port <= 65535:
        raise UsageError(f"--port {ns.port}: use 0..65535")
    if ns.host not in ("127.0.0.1", "::1", "localhost") and not ns.token:
        log.warning("serve: listening on %s without --token: anyone on the network can make pictures", ns.host)
    prompts = Prompts.load(ns.prompts)
    recogniser, heard_by = choose(ns.transcribe, vocabulary=prompts.vocabulary(), whisper_model=ns.whisper_model)
    if ns.triton:
        from engine.serve.triton import TritonRenderer

        local_only = [f for f, v in (("--generator", ns.generator), ("--size", ns.size), ("--device", ns.device != "auto"),
                                     ("--backend", ns.backend != "auto")) if v]
        if local_only:
            raise UsageError(f"{', '.join(local_only)} with --triton: the generator is chosen where it runs, "
                             f"with engine triton --generator SPEC ...")
        renderer = TritonRenderer(ns.triton, model=ns.triton_model, concurrency=ns.triton_concurrency)
        where = f"on Triton at {renderer.url}, model {renderer.model!r}"
    else:
        device = resolve_device(ns.device)
        generator = create_generator(ns.generator or "stylegan2", output=ns.size, device=device)
        generator, backend = apply_backend(generator, ns.backend)
        renderer = LocalRenderer(generator)
        where = f"on {device} ({backend})"
    service = ArtService(renderer, queue_length=ns.queue)
    app = create_app(service, prompts=prompts, token=ns.token, recogniser=recogniser, recogniser_note=heard_by)
    d = renderer.describe()
    print(f"engine serve: {d['generator']} {d['size'][0]}x{d['size'][1]} {where}; "
          f"transcription: {heard_by}; http://{ns.host}:{ns.port}/docs", flush=True)
    try:
        uvicorn.run(app, host=ns.host, port=ns.port, log_level="warning")
    finally:
        app.state.stop_auto()
        service.close()
    return 0
