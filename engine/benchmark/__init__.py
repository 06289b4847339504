"""`engine bench`: fps against GPU temperature through the real frame path, and side by side with the seed projects.

    engine bench --generator SPEC [--size N] [--backend ...] [--seconds S | --until-stable | --sweep temperature --map F]
                 [--warmup S] [--compare seeds] [--target-fps N] [--thermal SOURCE] [--out DIR]

Runs engine.loop.Engine (generator -> upload -> shaders -> sinks, default sink null, unpaced) with a recording
controller, and writes DIR/frames.csv, telemetry.csv, summary.json and report.png (engine.benchmark.report).
Modules: run (options, the recording controller, the run), seeds (the seed projects' way), analysis (the numbers),
report (files and chart). torch, matplotlib and tqdm are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("engine.bench")

#: Defaults of the bench options (dest -> default). The flags default to SUPPRESS so a config file's [run] table can
#: fill in what the command line leaves out (defaults < config < command line), as for `engine run`.
BENCH_DEFAULTS: dict[str, Any] = {
    "generator": "stylegan2", "size": None, "device": "auto", "backend": "auto", "upload": "auto", "sink": [],
    "seed": None, "psi": None, "set": [], "seconds": 30.0, "warmup": 3.0, "until_stable": False, "stable_window": 60.0,
    "stable_slope": 0.5, "stable_seconds": 60.0, "max_seconds": 1800.0, "thermal": "auto", "map": None, "compare": None,
    "compare_seconds": None, "sweep": None, "sweep_range": "30:90:10", "sweep_hold": 4.0, "target_fps": None, "bin": 2.0,
    "out": None, "quiet": False, "threads": None, "max_params": None,
}


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    from engine.options import (
        SIZE_HELP,
        add_max_params_argument,
        add_threads_argument,
        assignment,
        non_negative_float,
        output_size,
    )

    S = argparse.SUPPRESS
    g = p.add_argument_group("what to measure")
    g.add_argument("--generator", default=S, metavar="SPEC", help="stylegan2, a StyleGAN network file, or diffusion:MODEL (default stylegan2)")
    g.add_argument("--size", type=output_size, default=S, metavar="WxH", help=SIZE_HELP)
    g.add_argument("--device", default=S, metavar="auto|cpu|cuda[:N]", help="where the generator runs (default auto)")
    g.add_argument("--backend", default=S, metavar="auto|eager|compile|tensorrt", help="as for engine run (default auto: compile on CUDA, eager on CPU)")
    g.add_argument("--upload", choices=("auto", "staged", "interop"), default=S, help="generator -> texture path (default auto)")
    g.add_argument("--sink", action="append", default=S, metavar="SPEC", help="where frames go (repeatable; default null: the frame path without an output)")
    g.add_argument("--config", default=S, metavar="FILE.toml", help="an engine run config: its [run] options, [generator] options and parameter groups")
    g.add_argument("--seed", type=int, default=S, metavar="N", help="latent.seed")
    g.add_argument("--psi", type=float, default=S, metavar="F", help="latent.psi")
    g.add_argument("--set", type=assignment, action="append", default=S, metavar="GROUP.NAME=VALUE", help="set a parameter (repeatable), e.g. --set diffusion.steps=2")
    d = p.add_argument_group("how long")
    d.add_argument("--seconds", type=non_negative_float, default=S, metavar="S", help="measure for S seconds after the warm-up (default 30)")
    d.add_argument("--warmup", type=non_negative_float, default=S, metavar="S",
                   help="seconds (and at least 3 frames) run first and not counted (default 3)")
    d.add_argument("--until-stable", action="store_true", default=S,
                   help="heat-soak: run until the temperature stops rising, then measure --stable-seconds more")
    d.add_argument("--stable-window", type=non_negative_float, default=S, metavar="S", help="--until-stable: slope window in seconds (default 60)")
    d.add_argument("--stable-slope", type=float, default=S, metavar="C_PER_MIN",
                   help="--until-stable: stable when the temperature rises slower than this, degrees C per minute (default 0.5)")
    d.add_argument("--stable-seconds", type=non_negative_float, default=S, metavar="S", help="--until-stable: measure this long once stable (default 60)")
    d.add_argument("--max-seconds", type=non_negative_float, default=S, metavar="S", help="--until-stable: give up after this long (default 1800)")
    t = p.add_argument_group("temperature, mappings, governor")
    t.add_argument("--thermal", default=S, metavar="SOURCE",
                   help="telemetry: auto (NVML for the benchmarked GPU, else Linux sysfs, else none), nvml[:GPU], sysfs[:ZONE], "
                        "synthetic[:sine|ramp|soak|const,...] (rehearsals, tests) or none (default auto)")
    t.add_argument("--map", default=S, metavar="FILE.toml", help="temperature mappings to run during the benchmark (as engine run --map)")
    t.add_argument("--sweep", choices=("temperature",), default=S,
                   help="drive a synthetic temperature through --sweep-range and measure fps per step with the --map mappings")
    t.add_argument("--sweep-range", default=S, metavar="LO:HI:STEP", help="temperatures of the sweep, degrees C (default 30:90:10)")
    t.add_argument("--sweep-hold", type=non_negative_float, default=S, metavar="S",
                   help="seconds per sweep step; the first half settles, the second half is measured (default 4)")
    t.add_argument("--target-fps", type=float, default=S, metavar="FPS", help="run the thermal governor with this target (see engine run --target-fps)")
    c = p.add_argument_group("comparison and output")
    c.add_argument("--compare", choices=("seeds",), default=S,
                   help="also measure the seed projects' way on the same model, size and device, and report the fps ratio")
    c.add_argument("--compare-seconds", type=non_negative_float, default=S, metavar="S",
                   help="how long to measure the seed way (default: as long as the engine was measured)")
    c.add_argument("--bin", type=non_negative_float, default=S, metavar="C", help="temperature bin width for fps per temperature, degrees C (default 2)")
    c.add_argument("--out", type=Path, default=S, metavar="DIR", help="output folder (default bench/results/<cpu|cuda>/bench-<generator>-<size>)")
    c.add_argument("--quiet", action="store_true", default=S, help="no progress bar")
    add_threads_argument(g, default=S)
    add_max_params_argument(g, default=S)


def _merge(ns: argparse.Namespace) -> dict[str, Any]:
    """defaults < config file [run] < command line; returns the merged options plus config generator/params."""
    from engine.config import load_config
    from engine.options import Parser, check_config_options, config_run_options

    given = vars(ns)
    merged = dict(BENCH_DEFAULTS)
    cfg = None
    if given.get("config"):
        # A config written for `engine run` is valid here: its run-only options (osc_port, fps, ...) are not used.
        cfg = load_config(given["config"], config_run_options() | set(BENCH_DEFAULTS))
        unused = sorted(k for k in cfg.run if k not in BENCH_DEFAULTS)
        if unused:
            log.info("config %s: [run] %s not used by engine bench", cfg.path, ", ".join(unused))
        parser = Parser(prog="engine bench")
        add_bench_arguments(parser)
        used = {k: v for k, v in cfg.run.items() if k in BENCH_DEFAULTS}
        merged.update(check_config_options(used, parser, BENCH_DEFAULTS, str(cfg.path)))
    merged.update({k: v for k, v in given.items() if k in BENCH_DEFAULTS})
    merged["_generator_options"] = dict(cfg.generator) if cfg else {}
    merged["_params"] = dict(cfg.params) if cfg else {}
    return merged


def options_from_args(ns: argparse.Namespace):
    from engine.benchmark.run import BenchOptions
    from engine.errors import UsageError
    from engine.options import parse_value, threads_option

    m = _merge(ns)
    threads, threads_source = threads_option(m["threads"], ns)
    values = dict(m["_params"])
    if m["seed"] is not None:
        values["latent.seed"] = m["seed"]
    if m["psi"] is not None:
        values["latent.psi"] = m["psi"]
    for key, value in m["set"] or []:
        values[key] = parse_value(value)
    sinks = m["sink"]
    sinks = [sinks] if isinstance(sinks, str) else list(sinks or [])
    try:
        opts = BenchOptions(
            generator=str(m["generator"]), size=None if m["size"] is None else tuple(m["size"]), device=str(m["device"]),
            backend=str(m["backend"]), upload=str(m["upload"]), sinks=[str(s) for s in sinks] or ["null"],
            seconds=float(m["seconds"]), warmup=float(m["warmup"]), until_stable=bool(m["until_stable"]),
            stable_window=float(m["stable_window"]), stable_slope=float(m["stable_slope"]), stable_seconds=float(m["stable_seconds"]),
            max_seconds=float(m["max_seconds"]), thermal=str(m["thermal"]), map=None if m["map"] is None else str(m["map"]),
            compare=m["compare"], compare_seconds=None if m["compare_seconds"] is None else float(m["compare_seconds"]),
            sweep=m["sweep"], sweep_range=str(m["sweep_range"]), sweep_hold=float(m["sweep_hold"]),
            target_fps=None if m["target_fps"] is None else float(m["target_fps"]), bin_width=float(m["bin"]),
            out=Path(m["out"]) if m["out"] else Path(), generator_options=m["_generator_options"], values=values,
            progress=not bool(m["quiet"]),
            threads=threads, threads_source=threads_source, max_params=m["max_params"],
        )
    except (TypeError, ValueError) as e:
        raise UsageError(f"bad option value: {e}") from None
    opts.validate()
    return opts, m["out"] is None


def default_out(opts, device_type: str) -> Path:
    name = opts.generator.replace("diffusion:", "diffusion-")
    name = Path(name).stem if any(name.endswith(s) for s in (".pkl", ".pt", ".pth", ".safetensors")) else name
    name = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-") or "generator"
    return Path("bench") / "results" / device_type / f"bench-{name}-{_size_name(opts.size)}"


def _size_name(size: tuple[int, int] | None) -> str:
    if size is None:
        return "native"
    return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"  # a square keeps its old folder name


def cmd_bench(ns: argparse.Namespace) -> int:
    from engine.benchmark.report import write_outputs
    from engine.benchmark.run import run_bench
    from engine.options import apply_process_options

    opts, default_folder = options_from_args(ns)
    apply_process_options(opts.threads, opts.threads_source, opts.max_params)
    if default_folder:
        from engine.loop import resolve_device

        opts.out = default_out(opts, resolve_device(opts.device).type)
    result = run_bench(opts)
    summary = write_outputs(result, opts.out)
    sys.stderr.write(format_result(summary, opts.out) + "\n")
    return 130 if result.probe.stop_reason == "interrupted" else 0


def format_result(s: dict[str, Any], out: Path) -> str:
    def f(v, spec=".2f"):
        return "n/a" if v is None else format(v, spec)

    lines = [f"engine bench: {s['frames']} frames measured ({s['run']['stop_reason']}): {f(s['fps_median'])} fps median, "
             f"p1 {f(s['fps_p1'])}; frame p50 {f(s['frame_ms']['p50'])} ms, p99 {f(s['frame_ms']['p99'])} ms"]
    st = s.get("stage_ms") or {}
    lines.append("  stages (median ms): " + ", ".join(f"{k} {f(v)}" for k, v in st.items()))
    temp = s["temperature"]
    if temp.get("median") is not None:
        ch = s["cold_hot"]
        lines.append(f"  temperature {f(temp['min'], '.1f')}..{f(temp['max'], '.1f')} C ({temp['source']}); "
                     f"fps lost cold -> hot: {f(ch.get('fps_lost'))} ({f(ch.get('fps_lost_pct'), '.1f')} %)")
    else:
        lines.append(f"  no temperature: {temp.get('reason_missing')}")
    if s.get("compare"):
        c = s["compare"]
        lines.append(f"  {c['seeds']['way']} way: {f(c['seeds']['fps_median'])} fps median -> engine is {f(c['ratio'])}x")
    for e in s.get("sweep") or []:
        params = ", ".join(f"{k} {v['median']:g}" for k, v in e["parameters"].items())
        lines.append(f"  sweep {e['temperature']:g} C: {f(e['fps_median'])} fps ({params})")
    if s.get("governor"):
        g = s["governor"]
        lines.append(f"  governor: target {g['target_fps']:g} fps, level {g['level']}, {g['changes']} change(s)"
                     + (f"; {g['no_knob_reason']}" if g.get("no_knob_reason") else ""))
        hold = g.get("hold") or {}
        if hold.get("held") is not None:
            verdict = "held" if hold["held"] else "missed"
            lines.append(f"  governor hold: {verdict}: the slowest temperature bin ran {hold['worst_deviation_pct']:+.1f}% "
                         f"against the target (tolerance -{hold['tolerance_pct']:g}%)")
    lines.append(f"  wrote {out}/ (frames.csv, telemetry.csv, summary.json, report.png)")
    return "\n".join(lines)
