"""One benchmark run: the real render loop (engine.loop.Engine) with a recording controller, a 10 Hz telemetry
sampler, optional mappings and governor, then optionally the seed projects' way on the same model.

Controllers, in loop order: thermal sampler (latches the frame's sample) -> mapping engine (--map) -> governor
(--target-fps) -> FrameProbe (records the frame, moves through the phases, stops the engine when done).

Frame time: on CUDA the device time between the ends of consecutive frames (a CUDA event recorded after each
frame, resolved later with query(), never a sync in the loop; the last ones after one sync at the end); elsewhere
the loop's own host measurement of the frame (time.perf_counter, monotonic). frames.csv has both (frame_ms, host_ms).
"""

from __future__ import annotations

import array
import collections
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.clock import FrameTime
from engine.control import Controller
from engine.control.thermal import FIELDS, Source, ThermalSampler
from engine.errors import SetupError, UsageError
from engine.params import ParamStore
from engine.stats import STAGES

log = logging.getLogger("engine.bench")

#: The loop needs this many frames before a phase may end (a backend's first frames compile and capture graphs).
MIN_WARMUP_FRAMES = 3
#: NVML clock-event reason bits (nvmlClocksEventReason*), for the throttle-reason summary.
THROTTLE_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x10: "sync_boost",
    0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}


@dataclass
class BenchOptions:
    generator: str = "stylegan2"
    size: tuple[int, int] | None = None  # output (width, height)
    device: str = "auto"
    backend: str = "auto"
    upload: str = "auto"
    sinks: list[str] = field(default_factory=lambda: ["null"])
    seconds: float = 30.0
    warmup: float = 3.0
    until_stable: bool = False
    stable_window: float = 60.0
    stable_slope: float = 0.5
    stable_seconds: float = 60.0
    max_seconds: float = 1800.0
    thermal: str = "auto"
    map: str | None = None
    compare: str | None = None
    compare_seconds: float | None = None
    sweep: str | None = None
    sweep_range: str = "30:90:10"
    sweep_hold: float = 4.0
    target_fps: float | None = None
    bin_width: float = 2.0
    out: Path = Path("bench-out")
    generator_options: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    #: CPU threads for torch (None: engine.threads chooses) and where the number came from.
    threads: int | None = None
    threads_source: str = "--threads"
    #: Largest network a file may ask for (pickle_loader.limits); None: the default.
    max_params: int | None = None

    def validate(self) -> None:
        if self.until_stable and self.sweep:
            raise UsageError("--until-stable and --sweep are different runs; pick one")
        if self.compare not in (None, "seeds"):
            raise UsageError(f"--compare {self.compare}: only 'seeds' is known")
        if self.compare and self.sweep:
            raise UsageError("--compare seeds measures one setting; run it without --sweep")
        if self.sweep not in (None, "temperature"):
            raise UsageError(f"--sweep {self.sweep}: only 'temperature' is known")
        if self.sweep and not self.map:
            raise UsageError("--sweep temperature shows what the temperature mappings do to fps: give --map FILE.toml")
        for name in ("seconds", "warmup", "stable_window", "stable_seconds", "max_seconds", "sweep_hold", "bin_width"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise UsageError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v!r}")
        if self.seconds <= 0 and not (self.until_stable or self.sweep):
            raise UsageError("--seconds must be > 0")
        if self.bin_width <= 0 or self.sweep_hold <= 0 or self.stable_window <= 0:
            raise UsageError("--bin, --sweep-hold and --stable-window must be > 0")
        if self.compare_seconds is not None and not self.compare_seconds > 0:
            raise UsageError("--compare-seconds must be > 0")


# ----------------------------------------------------------------------------------------------------------------
# Telemetry: the engine's thermal sources, tapped so every sample is kept
# ----------------------------------------------------------------------------------------------------------------


class _Tap(Source):
    """Passes reads through to `inner` and keeps each one with its time (the sampler keeps only the latest)."""

    def __init__(self, inner: Source):
        self.inner = inner
        self.name = inner.name
        self.rows: list[tuple[float, dict[str, float | None]]] = []

    @property
    def unsupported(self):
        return getattr(self.inner, "unsupported", None)

    def read(self) -> dict[str, float | None]:
        values = self.inner.read()
        self.rows.append((time.monotonic(), dict(values)))  # list.append is atomic: the loop thread reads later
        return values

    def describe(self) -> str:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()


class SweepSource(Source):
    """The temperature a --sweep sets, step by step (the FrameProbe moves it)."""

    name = "sweep"

    def __init__(self, first: float):
        self.value = float(first)

    def read(self) -> dict[str, float | None]:
        return {"temperature": self.value}

    def describe(self) -> str:
        return f"sweep (temperature set by engine bench, now {self.value:g} C)"


def _nvml_source(index: int):
    from engine.control.thermal import NvmlSource

    class NvmlWithReasons(NvmlSource):
        """NVML plus the raw clock-event (throttle) reason bits, for telemetry.csv."""

        def read(self) -> dict[str, float | None]:
            out = super().read()
            out["throttle_reasons"] = self._guard("throttle_reasons", lambda: float(int(self._reasons_fn(self.handle))))
            return out

    return NvmlWithReasons(index)


def _nvml_index(device) -> int:
    """NVML's index of a CUDA device: matched by PCI bus id (CUDA orders devices fastest first, NVML by PCI bus),
    else the CUDA index."""
    index = device.index or 0
    try:
        import pynvml
        import torch

        props = torch.cuda.get_device_properties(index)
        bus = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetIndex(pynvml.nvmlDeviceGetHandleByPciBusId_v2(bus.encode())))
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # an old torch without PCI ids, or NVML without the device: the indices agree on most machines
        return index


def telemetry_source(spec: str, device) -> tuple[Source | None, str | None]:
    """(source, None) or (None, why there is none) for a bench --thermal spec. auto: NVML for the benchmarked GPU,
    else a Linux thermal zone, else none (a benchmark has no OSC server to receive a temperature)."""
    from engine.control.thermal import SysfsSource, create_source

    kind, _, arg = (spec or "auto").strip().partition(":")
    if kind == "none":
        return None, "--thermal none"
    if kind == "osc":
        raise UsageError("engine bench runs no OSC server; use --thermal auto, nvml[:GPU], sysfs[:ZONE], synthetic[:SPEC] or none")
    if kind == "nvml":
        if arg and not arg.isdigit():
            raise UsageError(f"--thermal {spec}: the GPU index must be a whole number")
        return _nvml_source(int(arg or 0)), None
    if kind == "auto":
        if arg:
            raise UsageError(f"--thermal {spec}: auto takes no options")
        reasons = []
        makers = ([lambda: _nvml_source(_nvml_index(device))] if device.type == "cuda" else []) + [lambda: SysfsSource("")]
        if device.type != "cuda":
            reasons.append("nvml: not used, the benchmark runs on the CPU")
        for make in makers:
            try:
                return make(), None
            except SetupError as e:
                reasons.append(str(e).replace("--thermal ", "").split("; use ")[0])  # engine run's advice does not fit here
        return None, "; ".join(reasons)
    return create_source(spec), None


# ----------------------------------------------------------------------------------------------------------------
# Frame timing on CUDA
# ----------------------------------------------------------------------------------------------------------------


class _CudaFrameTimer:
    """Device time between consecutive frame ends: one CUDA event per frame, resolved with query() (no sync)."""

    def __init__(self, torch_mod):
        self.torch = torch_mod
        self.pool: list[Any] = []
        self.pending: collections.deque = collections.deque()
        self.prev = self._event()
        self.prev.record()

    def _event(self):
        return self.pool.pop() if self.pool else self.torch.cuda.Event(enable_timing=True)

    def mark(self, row: int, out: array.array) -> None:
        ev = self._event()
        ev.record()
        self.pending.append((row, ev))
        self.resolve(out)

    def resolve(self, out: array.array, wait: bool = False) -> None:
        if wait and self.pending:
            self.pending[-1][1].synchronize()
        while self.pending and self.pending[0][1].query():
            row, ev = self.pending.popleft()
            out[row] = self.prev.elapsed_time(ev)
            self.pool.append(self.prev)
            self.prev = ev


# ----------------------------------------------------------------------------------------------------------------
# The recording controller
# ----------------------------------------------------------------------------------------------------------------


class FrameProbe(Controller):
    """Records every frame (time, frame ms, stage ms, the frame's temperature sample, watched parameters), moves
    through the phases warmup -> measure (| heat -> measure | settle/sweep per step) and stops the engine."""

    def __init__(self, opts: BenchOptions, *, sampler: ThermalSampler | None, stop_event: threading.Event,
                 params: list[str], governor=None, sweep: SweepSource | None = None, sweep_steps: list[float] | None = None):
        from engine.benchmark.analysis import StabilityDetector

        self.opts = opts
        self.sampler = sampler
        self.stop_event = stop_event
        self.params = params
        self.governor = governor
        self.sweep = sweep
        self.sweep_steps = sweep_steps or []
        self.detector = StabilityDetector(opts.stable_window, opts.stable_slope) if opts.until_stable else None
        self.cols: dict[str, array.array] = {k: array.array("d") for k in
                                             ["t", "frame_ms", "host_ms", *(f"{s}_ms" for s in STAGES), "temperature", "sweep_c", "level"]}
        self.index = array.array("q")
        self.phase = array.array("b")
        self.phase_names = ["warmup", "heat", "measure", "settle", "sweep", "done"]
        self.param_cols: dict[str, list[Any]] = {p: [] for p in params}
        self.state = "warmup"
        self.phase_start = 0.0
        self.step = 0
        self.events: dict[str, float | None] = {"measure_start": None, "stable_at": None}
        self.stable: bool | None = None
        self.stop_reason: str | None = None
        self._store: ParamStore | None = None
        self._timer: _CudaFrameTimer | None = None
        self._t0: float | None = None  # time.monotonic() when the first frame began (the time base of t)
        self._frames_in_phase = 0
        self._recent: collections.deque = collections.deque(maxlen=240)
        self._bar = None
        self._bar_last = 0.0

    # -- lifecycle ------------------------------------------------------------------------------------------
    def set_params(self, params: list[str]) -> None:
        self.params = list(params)
        self.param_cols = {p: [] for p in self.params}

    @property
    def t0(self) -> float:
        return self._t0 if self._t0 is not None else time.monotonic()

    def start(self, store: ParamStore, info: dict[str, Any]) -> None:
        self._store = store
        if str(info.get("device", "cpu")).startswith("cuda"):
            import torch

            self._timer = _CudaFrameTimer(torch)
        if self.opts.progress:
            self._bar = _progress(self.planned_seconds(), "warmup")

    def planned_seconds(self) -> float | None:
        o = self.opts
        if o.sweep:
            return o.warmup + len(self.sweep_steps) * o.sweep_hold
        if o.until_stable:
            return None  # until the temperature settles (at most --max-seconds)
        return o.warmup + o.seconds

    def finish(self) -> None:
        """After the loop: resolve the frame times still on the device, close the progress bar."""
        if self._timer is not None:
            self._timer.resolve(self.cols["frame_ms"], wait=True)
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # -- per frame ------------------------------------------------------------------------------------------
    def after_frame(self, when: FrameTime, frame_stats: dict[str, float]) -> None:
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now - frame_stats.get("frame_ms", 0.0) / 1e3  # the first frame's start
        t = now - self._t0
        sample = self.sampler.current if self.sampler is not None else None
        temp = sample.temperature if sample is not None and sample.temperature is not None else math.nan
        row = len(self.index)
        c = self.cols
        self.index.append(when.index)
        self.phase.append(self.phase_names.index(self.state))
        c["t"].append(t)
        host = float(frame_stats.get("frame_ms", math.nan))
        c["host_ms"].append(host)
        c["frame_ms"].append(host if self._timer is None else math.nan)
        for s in STAGES:
            c[f"{s}_ms"].append(float(frame_stats.get(f"{s}_ms", math.nan)))
        c["temperature"].append(temp)
        c["sweep_c"].append(self.sweep.value if self.sweep is not None else math.nan)
        c["level"].append(float(self.governor.level) if self.governor is not None and self.governor.ladder else math.nan)
        if self.params and self._store is not None:
            for p in self.params:
                self.param_cols[p].append(self._store.get(p))
        if self._timer is not None:
            self._timer.mark(row, c["frame_ms"])
        self._recent.append(now)
        self._frames_in_phase += 1
        if self.detector is not None and sample is not None and self.state in ("heat", "warmup"):
            self.detector.add(sample.t, sample.temperature)
        self._advance(t)
        self._progress(t, temp)

    def _enter(self, state: str, t: float) -> None:
        self.state = state
        self.phase_start = t
        self._frames_in_phase = 0

    def _done(self, reason: str) -> None:
        self.stop_reason = reason
        self.state = "done"
        self.stop_event.set()

    def _advance(self, t: float) -> None:
        o = self.opts
        elapsed = t - self.phase_start
        if self.state == "warmup":
            if elapsed >= o.warmup and self._frames_in_phase >= MIN_WARMUP_FRAMES:
                self.events["measure_start"] = t
                self._enter("settle" if o.sweep else "heat" if o.until_stable else "measure", t)
            return
        if self.state == "measure":
            budget = o.stable_seconds if o.until_stable else o.seconds
            if o.until_stable and t - self.events["measure_start"] >= o.max_seconds:
                self._done(f"--max-seconds {o.max_seconds:g} reached while measuring")
            elif elapsed >= budget:
                self._done("measured" if not o.until_stable else "measured after the temperature settled")
            return
        if self.state == "heat":
            assert self.detector is not None
            if self.detector.stable():
                self.stable = True
                self.events["stable_at"] = t
                self._enter("measure", t)
            elif elapsed >= o.max_seconds:
                self.stable = False
                self._done(f"temperature still rising after --max-seconds {o.max_seconds:g}")
            return
        if self.state == "settle":
            # Half of each step lets the mapping's smoothing (and the sampler's 10 Hz) catch up before measuring.
            if elapsed >= o.sweep_hold / 2:
                self.state = "sweep"  # same step: phase_start stays at the step's start
            return
        if self.state == "sweep":
            if elapsed >= o.sweep_hold:
                self.step += 1
                if self.step >= len(self.sweep_steps):
                    self._done("sweep complete")
                else:
                    assert self.sweep is not None
                    self.sweep.value = self.sweep_steps[self.step]
                    self._enter("settle", t)

    def _progress(self, t: float, temp: float) -> None:
        if self._bar is None or t - self._bar_last < 0.25:
            return
        self._bar_last = t
        r = self._recent
        fps = (len(r) - 1) / (r[-1] - r[0]) if len(r) > 1 and r[-1] > r[0] else 0.0
        self._bar.set_description_str(self.state if not self.sweep else f"{self.state} {self.sweep.value:g}C", refresh=False)
        post = {"fps": f"{fps:.1f}", "temp": "n/a" if math.isnan(temp) else f"{temp:.1f}C"}
        if self.detector is not None and self.detector.last_slope is not None:
            post["slope"] = f"{self.detector.last_slope:+.2f}C/min"
        if self.governor is not None and self.governor.label:
            post["level"] = self.governor.label
        self._bar.set_postfix(post, refresh=False)
        if self._bar.total is not None and t > self._bar.total:
            self._bar.total = math.ceil(t)  # the warm-up waits for its frames, a phase ends on a frame: runs over a little
        self._bar.update(t - self._bar.n)

    # -- results --------------------------------------------------------------------------------------------
    def phases(self) -> list[str]:
        return [self.phase_names[i] for i in self.phase]


def _progress(total: float | None, desc: str):
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="s", file=sys.stderr, dynamic_ncols=True, leave=True,
                bar_format="{desc} {n:.0f}/{total_fmt} s |{bar}| [{elapsed}{postfix}]" if total else "{desc} [{elapsed}{postfix}]",
                mininterval=0.25 if sys.stderr.isatty() else 5.0)


# ----------------------------------------------------------------------------------------------------------------
# The seed way, measured
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SeedRun:
    name: str
    description: str
    stages: tuple[str, ...]
    size: int
    t: list[float]
    frame_ms: list[float]
    stage_ms: dict[str, list[float]]
    temperature: list[float]
    phase: list[str]
    details: dict[str, Any]


def measure_seed_way(generator, snap, seconds: float, warmup: float, sampler: ThermalSampler | None, progress: bool,
                     t_base: float | None = None) -> SeedRun:
    """Frames the seed's way for `warmup` then `seconds` seconds. t is seconds since `t_base` (time.monotonic(); the
    engine run's start, so both runs share one time axis), frame ms by time.perf_counter."""
    from engine.benchmark.seeds import seed_way

    way = seed_way(generator, snap)
    t_list: list[float] = []
    ms_list: list[float] = []
    stage: dict[str, list[float]] = {s: [] for s in way.stages}
    temps: list[float] = []
    phases: list[str] = []
    bar = _progress(warmup + seconds, f"{way.name} warmup") if progress else None
    t_base = time.monotonic() if t_base is None else t_base
    t_start = time.monotonic() - t_base
    state, start, n_phase = "warmup", t_start, 0
    bar_last = -1.0
    recent: collections.deque = collections.deque(maxlen=240)
    try:
        while True:
            f0 = time.perf_counter()
            ms = way.frame()
            f1 = time.perf_counter()
            t = time.monotonic() - t_base
            latest = sampler.latest if sampler is not None else None
            temp = latest.temperature if latest is not None and latest.temperature is not None else math.nan
            t_list.append(t)
            ms_list.append((f1 - f0) * 1e3)
            for s in way.stages:
                stage[s].append(ms.get(s, math.nan))
            temps.append(temp)
            phases.append(state)
            recent.append(f1)
            n_phase += 1
            if state == "warmup" and t - start >= warmup and n_phase >= MIN_WARMUP_FRAMES:
                state, start, n_phase = "measure", t, 0
            elif state == "measure" and t - start >= seconds:
                break
            if bar is not None and t - bar_last >= 0.25:
                bar_last = t
                fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
                bar.set_description_str(f"{way.name} {state}", refresh=False)
                bar.set_postfix({"fps": f"{fps:.1f}", "temp": "n/a" if math.isnan(temp) else f"{temp:.1f}C"}, refresh=False)
                if t - t_start > bar.total:
                    bar.total = math.ceil(t - t_start)
                bar.update(t - t_start - bar.n)
    finally:
        if bar is not None:
            bar.close()
        way.close()
    details = way.describe() if hasattr(way, "describe") else {}
    return SeedRun(way.name, way.description, way.stages, way.size, t_list, ms_list, stage, temps, phases, details)


# ----------------------------------------------------------------------------------------------------------------
# The whole run
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class BenchResult:
    opts: BenchOptions
    info: dict[str, Any]
    probe: FrameProbe
    telemetry_source: str | None
    telemetry_reason: str | None
    telemetry_rows: list[tuple[float, dict[str, float | None]]]
    telemetry_t0: float
    engine_summary: dict[str, Any]
    controllers: dict[str, Any]
    seed: SeedRun | None
    mapping_file: str | None
    sweep_steps: list[float]


def run_bench(opts: BenchOptions) -> BenchResult:
    """Run the benchmark (no files written: see engine.benchmark.report.write_outputs)."""
    from engine.benchmark.analysis import parse_range
    from engine.control.governor import WATCHED, Governor
    from engine.loop import Engine, RunOptions, resolve_device

    opts.validate()
    device = resolve_device(opts.device)
    sweep = None
    steps: list[float] = []
    if opts.sweep:
        try:
            steps = parse_range(opts.sweep_range)
        except ValueError as e:
            raise UsageError(f"--sweep-range {e}") from None
        sweep = SweepSource(steps[0])
        source, reason = sweep, None
    else:
        source, reason = telemetry_source(opts.thermal, device)
    if opts.until_stable and source is None:
        raise SetupError(f"--until-stable needs a temperature, and there is none here ({reason}); "
                         "rehearse with --thermal synthetic:soak,lo=35,hi=80,tau=60")
    tap = _Tap(source) if source is not None else None
    sampler = ThermalSampler(tap) if tap is not None else None

    store = ParamStore()
    from engine.params import ParamError

    try:
        store.update(opts.values)
    except ParamError as e:
        raise UsageError(str(e)) from None

    controllers: list[Controller] = []
    made: list[Controller] = []
    mapping = governor = None
    try:
        if sampler is not None:
            controllers.append(sampler)
        if opts.map:
            from engine.control.mapping import MappingEngine

            mapping = MappingEngine(opts.map, feed=sampler)
            made.append(mapping)
            controllers.append(mapping)
        from engine.control.prompts import PromptList

        controllers.append(PromptList())  # a benchmarked show with a prompt list steps through it as engine run does
        if opts.target_fps is not None:
            clash = sorted(set(WATCHED) & set(mapping.mapped_paths())) if mapping is not None else []
            if clash:
                raise UsageError(f"--map {opts.map} drives {', '.join(clash)}, which --target-fps adjusts too; drop one of them")
            governor = Governor(opts.target_fps)
            controllers.append(governor)
    except BaseException:
        for c in made:
            c.stop()
        if tap is not None:
            tap.close()
        raise
    run_opts = RunOptions(generator=opts.generator, size=opts.size, device=str(device), backend=opts.backend,
                          sinks=list(opts.sinks), fps=0.0, clock="wall", quiet=True, upload=opts.upload,
                          generator_options=dict(opts.generator_options))
    engine = Engine(run_opts, store, controllers)
    probe = FrameProbe(opts, sampler=sampler, stop_event=engine.stop_event, params=[], governor=governor,
                       sweep=sweep, sweep_steps=steps)
    engine.controllers.append(probe)

    handlers = _save_signal_handlers()
    seed = None
    try:
        if handlers is not None:
            engine.install_signal_handlers()
        engine.setup()
        # The parameters worth a column: what the mappings drive, and what the governor turns (when it has a knob).
        params = list(mapping.mapped_paths()) if mapping is not None else []
        if governor is not None and governor.knob is not None:
            params += [p for p in governor.knob_params if p not in params]
        probe.set_params(params)
        engine.run()
        probe.finish()
        interrupted = probe.stop_reason is None
        if interrupted:
            probe.stop_reason = "interrupted"
        if opts.compare and not interrupted:
            seconds = opts.compare_seconds or (opts.stable_seconds if opts.until_stable else opts.seconds)
            seed = measure_seed_way(engine.generator, store.snapshot(), seconds, opts.warmup, sampler, opts.progress,
                                    t_base=probe.t0)
        engine_summary = engine.stats.summary() if engine.stats else {}
    finally:
        try:
            engine.close()
        finally:
            _restore_signal_handlers(handlers)
    ctrl = engine.stats.info.get("controllers", {}) if engine.stats else {}
    return BenchResult(opts=opts, info=dict(engine.info), probe=probe,
                       telemetry_source=source.describe() if source is not None else None, telemetry_reason=reason,
                       telemetry_rows=list(tap.rows) if tap is not None else [], telemetry_t0=probe.t0,
                       engine_summary=engine_summary, controllers=ctrl, seed=seed,
                       mapping_file=str(opts.map) if opts.map else None, sweep_steps=steps)


def _save_signal_handlers():
    # Ctrl-C ends the measurement cleanly (the files are still written). Only the main thread may set handlers;
    # the old ones are put back afterwards, so a caller (a test runner) keeps its own.
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


def _restore_signal_handlers(handlers) -> None:
    if handlers is not None:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])


def telemetry_fields(rows: list[tuple[float, dict[str, float | None]]]) -> list[str]:
    extra = sorted({k for _, v in rows for k in v} - set(FIELDS))
    return list(FIELDS) + extra
