"""The `engine` command.

    engine run   [--generator stylegan2|PATH|diffusion:MODEL] [--size WxH|N] [--seed N] [--psi F]
                 [--frames N | --seconds S] [--sink SPEC]... [--config FILE.toml] [--device auto|cpu|cuda] ...
    engine info  [--params] [--generator SPEC [--size WxH]] [--json]
    engine voice [--port 9000] [--reply HOST:PORT] [--backend auto|espeak|parler] [--out DIR]
    engine --help

Exit codes: 0 done, 2 bad input or a machine that cannot do what was asked (one line on stderr saying what
and what to do), 1 an unexpected internal error (with a traceback), 130 interrupted twice.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from engine import __version__
from engine import threads as cpu_threads
from engine.errors import EngineError, UsageError
from engine.options import (
    RUN_DEFAULTS,
    Parser,
    add_max_params_argument,
    add_threads_argument,
    apply_process_options,
    assignment,
    check_config_options,
    config_run_options,
    control_defaults,
    SIZE_HELP,
    non_negative_float,
    output_size,
    parse_value,
    positive_int,
    threads_option,
)

log = logging.getLogger("engine")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # defaults are applied after merging the config file (CLI > config > defaults)
    g = p.add_argument_group("what to render")
    g.add_argument("--generator", default=S, metavar="SPEC",
                   help="stylegan2 (built-in, no download), a StyleGAN network file (.pkl/.pt/.safetensors), or diffusion:MODEL (default: stylegan2)")
    g.add_argument("--size", type=output_size, default=S, metavar="WxH", help=SIZE_HELP)
    g.add_argument("--seed", type=int, default=S, metavar="N", help="start seed: latent.seed for StyleGAN, diffusion.seed for diffusion (default 0)")
    g.add_argument("--psi", type=float, default=S, metavar="F", help="truncation psi (parameter latent.psi; default 1)")
    g.add_argument("--set", type=assignment, action="append", default=S, metavar="GROUP.NAME=VALUE",
                   help="set any live parameter at start (repeatable), e.g. --set fx.feedback=0.3; `engine info --params` lists them")
    g.add_argument("--source", default=S, metavar="SPEC",
                   help="img2img input for diffusion (parameter source.mode, switchable live): feedback (default), camera[:INDEX|FILE], "
                        "ndi[:NAME], image:PATH, noise")
    g.add_argument("--config", default=S, metavar="FILE.toml", help="TOML config: [run] options, [generator] options and parameter groups")
    d = p.add_argument_group("how long")
    d.add_argument("--frames", type=positive_int, default=S, metavar="N", help="stop after N frames (default: run until Ctrl-C)")
    d.add_argument("--seconds", type=non_negative_float, default=S, metavar="S",
                   help="stop after S seconds (show time: with the frame clock, S x fps frames)")
    o = p.add_argument_group("output")
    o.add_argument("--sink", action="append", default=S, metavar="SPEC",
                   help="where frames go (repeatable): null, window[:fullscreen], file:out.mp4, file:frames/%%05d.png, "
                        "ndi[:NAME], spout[:NAME], syphon[:NAME], v4l2[:/dev/videoN] "
                        "(default: window when a display exists, else null)")
    o.add_argument("--fps", type=non_negative_float, default=S, metavar="F",
                   help="frame rate: live runs are paced to it, files and NDI are stamped with it, the frame clock steps 1/F (default 30; 0 = unpaced)")
    o.add_argument("--clock", choices=("auto", "wall", "frame"), default=S,
                   help="show time: wall (real time) or frame (index / fps, reproducible). auto = frame when every sink is file/null, else wall")
    o.add_argument("--stats-json", type=Path, default=S, metavar="PATH", help="write a run summary (fps, per-stage ms, ...) as JSON at exit")
    o.add_argument("--quiet", action="store_true", default=S, help="no live status line")
    e = p.add_argument_group("execution")
    e.add_argument("--device", default=S, metavar="auto|cpu|cuda[:N]|mps",
                   help="where the generator runs (default auto: CUDA if available, else Apple's GPU (mps), else the CPU)")
    e.add_argument("--backend", default=S, metavar="auto|eager|compile|tensorrt",
                   help="how the generator runs: eager PyTorch, compile (torch.compile + CUDA graphs), or tensorrt "
                        "(TensorRT engines, built on first use and cached; see engine trt). auto = compile on CUDA, eager on CPU")
    e.add_argument("--engines", type=Path, default=S, metavar="DIR",
                   help="TensorRT engines built ahead of time by `engine trt --out DIR` (any machine; checked against this "
                        "generator and TensorRT before loading; implies --backend tensorrt)")
    e.add_argument("--flavor", choices=("auto", "trt", "rtx"), default=S,
                   help="which TensorRT runs --backend tensorrt: rtx (TensorRT for RTX, GeForce/RTX cards), trt (the full "
                        "TensorRT), auto (what is installed and suits the GPU; default)")
    e.add_argument("--upload", choices=("auto", "staged", "interop"), default=S,
                   help="generator -> texture path: interop (CUDA-GL, zero host copies), staged (through host memory), auto = interop when possible")
    add_threads_argument(e, default=S)
    add_max_params_argument(e, default=S)
    try:
        from engine.control import add_cli_arguments
    except ImportError:  # control layer not present in this build
        return
    add_cli_arguments(p)


@dataclass(frozen=True)
class RoomCommand:
    """A command whose options (arguments: module, function) and handler (module, function) live in its own room.
    Argument modules import only argparse helpers; the handler's module brings torch, FastAPI or PyTriton."""

    name: str
    arguments: tuple[str, str]
    handler: tuple[str, str]
    help: str
    description: str


ROOM_COMMANDS = (
    RoomCommand("bench", ("engine.benchmark", "add_bench_arguments"), ("engine.benchmark", "cmd_bench"),
                "fps against GPU temperature through the real frame path; --compare seeds",
                "Measure the frame path (generator, upload, shaders, sink) frame by frame with GPU telemetry at 10 Hz; "
                "write frames.csv, telemetry.csv, summary.json and report.png."),
    RoomCommand("trt", ("engine.trt_build.cli", "add_trt_arguments"), ("engine.trt_build.cli", "cmd_trt"),
                "export the generator to ONNX and build TensorRT engines ahead of a show",
                "Record the generator's module calls, export each to ONNX and build a TensorRT plan for it, cached by "
                "weights, shapes, precision, versions and GPU; engine run --backend tensorrt loads them."),
    RoomCommand("voice", ("engine.voice", "add_voice_arguments"), ("engine.voice", "cmd_voice"),
                "the work speaks: OSC in, Parler-TTS or espeak-ng out (seed 000)",
                "Listen on OSC (/voice/say, /voice/describe, /voice/stop, /voice/event from engine run --voice) and "
                "speak the lines with Parler-TTS or espeak-ng, to an audio device and/or WAV files; reply "
                "/voice/started and /voice/done."),
    RoomCommand("serve", ("engine.serve", "add_serve_arguments"), ("engine.serve", "cmd_serve"),
                "art on demand over HTTP for an ePaper frame (seed 004)",
                "Serve the engine's generator over HTTP: POST /generate (PNG, or dithered for an ePaper panel with "
                "?palette=), /generate/new, /latest, /auto, /health, /metrics; /docs."),
    RoomCommand("triton", ("engine.serve", "add_triton_arguments"), ("engine.serve.triton", "cmd_triton"),
                "serve the generator on NVIDIA Triton (PyTriton) for engine serve --triton",
                "Bind the generator as a Triton model with dynamic batching, one instance per GPU; engine serve "
                "--triton URL sends its requests there. Run it from an environment made from the system's python3 "
                "(bash .ci/install-triton)."),
)
#: Handlers imported when their command runs: the rooms', and `engine project` (its options are in build_parser).
LAZY_HANDLERS = {c.name: c.handler for c in ROOM_COMMANDS} | {"project": ("engine.generators.project", "cmd_project")}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="engine", description="Real-time GPU-native render engine for live visuals.")
    parser.add_argument("--version", action="version", version=f"engine {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    run = sub.add_parser("run", help="render a live stream", description="Render frames and publish them to sinks.")
    add_run_arguments(run)

    info = sub.add_parser("info", help="what this machine offers: GL, CUDA, NVML, interop, sinks",
                          description="Print GL renderer, CUDA device, NVML, interop and sink availability.")
    info.add_argument("--params", action="store_true", help="list every live parameter: address, type, range, default")
    info.add_argument("--generator", metavar="SPEC", help="describe a generator (architecture, layers) without running it")
    info.add_argument("--size", type=output_size, metavar="WxH",
                      help="output size to describe --generator for: its native render size and how it is fitted")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--markdown", action="store_true", help="with --params: the README's Markdown table")
    add_max_params_argument(info)

    # `engine project` (engine.generators.project.cmd_project; torch is imported only when it runs).
    pr = sub.add_parser("project", help="find the StyleGAN latent (w or w+) that reproduces an image",
                        description="Project an image into a StyleGAN network's W space and save the latent (.npz/.pt); "
                                    "load it live with --set stylegan.w_file=PATH.")
    pr.add_argument("image", type=Path, help="target image (any PIL format; centre-cropped to a square)")
    pr.add_argument("--generator", default="stylegan2", metavar="SPEC", help="stylegan2 or a network file (.pkl/.pt/.safetensors)")
    pr.add_argument("--size", type=positive_int, default=None, metavar="N", help="size to render at (default: the network's own)")
    pr.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]", help="where to optimise (default auto: CUDA if available)")
    pr.add_argument("--steps", type=positive_int, default=300, metavar="N", help="optimisation steps (default 300; NVlabs uses 1000)")
    pr.add_argument("--mode", choices=("w", "w+"), default="w", help="w: one w for all layers (NVlabs); w+: one per layer (closer fit)")
    pr.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (default 0.1)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the exploration noise")
    pr.add_argument("--out", type=Path, default=None, metavar="PATH", help="latent file to write, .npz or .pt (default IMAGE_STEM.w.npz beside the image)")
    pr.add_argument("--save-image", type=Path, default=None, metavar="PNG", help="also write the projected image")
    add_threads_argument(pr)
    add_max_params_argument(pr)

    # The commands with rooms of their own: each room adds its options here and is imported to run only when chosen.
    for c in ROOM_COMMANDS:
        add_arguments = getattr(importlib.import_module(c.arguments[0]), c.arguments[1])
        add_arguments(sub.add_parser(c.name, help=c.help, description=c.description))
    return parser


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="engine: %(levelname)s: %(message)s", stream=sys.stderr)


def resolve_run_options(ns: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """Merge defaults < config file < command line. Returns (RunOptions, initial parameter values, the merged
    options as a namespace for the control layer)."""
    from engine.config import load_config
    from engine.loop import RunOptions

    given = vars(ns)
    all_options = config_run_options()
    cfg = load_config(given["config"], all_options) if given.get("config") else None

    # Live-control options stay absent unless given: build_controllers fills their defaults and tells given ones apart.
    merged: dict[str, Any] = dict(RUN_DEFAULTS)
    if cfg is not None:
        parser = Parser(prog="engine run")
        add_run_arguments(parser)
        merged.update(check_config_options(cfg.run, parser, {**RUN_DEFAULTS, **control_defaults()}, str(cfg.path)))
    merged.update({k: v for k, v in given.items() if k in all_options})

    sinks = merged["sink"]
    if isinstance(sinks, str):
        sinks = [sinks]
    if not sinks:
        from engine.sinks.window import WindowSink

        sinks = ["window"] if WindowSink.availability()[0] else ["null"]
        if sinks == ["null"]:
            log.warning("no display and no --sink: frames are rendered but not shown; add e.g. --sink file:out.mp4 or --sink ndi")
    try:
        opts = RunOptions(
            generator=str(merged["generator"]),
            size=None if merged["size"] is None else tuple(merged["size"]),
            device=str(merged["device"]),
            backend=str(merged["backend"]),
            sinks=[str(s) for s in sinks],
            frames=None if merged["frames"] is None else int(merged["frames"]),
            seconds=None if merged["seconds"] is None else float(merged["seconds"]),
            fps=float(merged["fps"]),
            clock=str(merged["clock"]),
            stats_json=None if merged["stats_json"] is None else Path(merged["stats_json"]),
            quiet=bool(merged["quiet"]),
            upload=str(merged["upload"]),
            engines=None if merged["engines"] is None else Path(merged["engines"]),
            flavor=str(merged["flavor"]),
            generator_options=dict(cfg.generator) if cfg else {},
        )
    except (TypeError, ValueError) as e:
        raise UsageError(f"bad option value in {cfg.path if cfg else 'the command line'}: {e}") from None
    if opts.clock not in ("auto", "wall", "frame"):
        raise UsageError(f"unknown clock {opts.clock!r}; use auto, wall or frame")

    values: dict[str, Any] = dict(cfg.params) if cfg else {}
    if merged["seed"] is not None:
        # The generator's own seed: StyleGAN's latent or diffusion's fixed noise (both set: harmless, and a
        # generator switched in a config file still gets the seed the command line asked for).
        values["latent.seed"] = values["diffusion.seed"] = merged["seed"]
    if merged["psi"] is not None:
        values["latent.psi"] = merged["psi"]
    if merged["source"]:
        from engine.sources import parse_source_spec

        values.update(parse_source_spec(str(merged["source"])))
    for key, value in merged["set"] or []:
        values[key] = parse_value(value)
    merged_ns = argparse.Namespace(**merged)
    return opts, values, merged_ns


def cmd_run(ns: argparse.Namespace) -> int:
    from engine.loop import run_engine
    from engine.params import ParamError, ParamStore

    opts, values, merged = resolve_run_options(ns)
    apply_process_options(*threads_option(merged.threads, ns), merged.max_params)
    store = ParamStore()
    try:
        store.update(values)
    except ParamError as e:
        raise UsageError(str(e)) from None
    from engine.control.prompts import parse_prompt_list

    parse_prompt_list(store.get("diffusion.prompt_list"))  # a bad starting list fails now, before a model loads
    controllers = []
    try:
        from engine.control import build_controllers
    except ImportError:
        build_controllers = None
    if build_controllers is not None:
        controllers = build_controllers(merged)
    summary = run_engine(opts, store, controllers)
    lost = [f"{label}: {st['failed']}" for label, st in (summary.get("sink_stats") or {}).items() if st.get("failed")]
    if not opts.quiet:
        sys.stderr.write("\n")
        fps = summary.get("fps_mean") or 0.0
        fm = (summary.get("frame_ms") or {}).get("median") or 0.0
        up = summary.get("upload", {})
        sys.stderr.write(
            f"engine: {summary.get('frames', 0)} frames in {summary.get('seconds', 0):.1f} s, {fps:.1f} fps "
            f"(median frame {fm:.1f} ms), upload {up.get('path')} ({up.get('host_copies_per_frame')} host copies/frame), "
            f"backend {summary.get('backend')}\n"
        )
    if lost:
        sys.stderr.write(f"engine: error: a recording was lost: {'; '.join(lost)}\n")
        return 1
    return 0


def cmd_info(ns: argparse.Namespace) -> int:
    from engine.info import collect_info, format_info, format_params

    if ns.params:
        from engine.params import SPECS

        if ns.json:
            print(json.dumps([_spec_json(s) for s in SPECS], indent=2))
        elif ns.markdown:
            from engine.info import params_markdown

            print(params_markdown())
        else:
            print(format_params())
        return 0
    data = collect_info(generator=ns.generator, size=ns.size)
    print(json.dumps(data, indent=2, default=str) if ns.json else format_info(data))
    return 0


def _spec_json(s) -> dict[str, Any]:
    return {"address": s.address, "path": s.path, "type": s.kind, "range": s.range_text(), "default": s.default, "doc": s.doc}


#: Commands that merge a config file's [run] table (which may set threads) and apply the thread choice themselves.
_THREADS_AFTER_CONFIG = ("run", "bench")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cpu_threads.prepare_process()  # OpenMP reads its wait settings when torch loads: before anything imports it
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
        _configure_logging(ns.verbose)
        if ns.command is None:
            parser.print_help()
            return 0
        handler = {"run": cmd_run, "info": cmd_info}.get(ns.command)
        if handler is None:
            handler = _extra_command(ns.command)
        if ns.command not in _THREADS_AFTER_CONFIG:
            apply_process_options(getattr(ns, "threads", None), "--threads", getattr(ns, "max_params", None))
        return handler(ns)
    except EngineError as e:
        sys.stderr.write(f"engine: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\nengine: interrupted\n")
        return 130


def _extra_command(name: str):
    """The handler of a command outside this module, imported only now (torch and friends load with it)."""
    if name in LAZY_HANDLERS:
        module, function = LAZY_HANDLERS[name]
        return getattr(importlib.import_module(module), function)
    raise UsageError(f"unknown command {name!r}; see `engine --help`")


if __name__ == "__main__":
    raise SystemExit(main())
