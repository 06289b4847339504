"""Live control: things that write into the ParamStore from outside the render loop (OSC, temperature
mappings, replay) and things that observe the loop (telemetry out, recording).

Control never touches GL. Anything slow runs on its own thread; the render thread only calls the cheap,
non-blocking hooks below.

Modules: osc (OscServer), telemetry (OscTelemetry), thermal (sources + ThermalSampler), mapping
(MappingEngine: curves, smoothing, LFOs, hot reload), governor (Governor: --target-fps), record (Recorder,
Replayer), presets, ratelimit.
`engine run` gets its flags from add_cli_arguments() and its controllers from build_controllers(), and calls
each controller's hooks in list order. All parameter writes happen in before_frame on the render thread (OSC
values wait in a latest-wins table until then), so a frame's snapshot is exactly what the recorder records.
"""

from __future__ import annotations

from typing import Any

from engine.clock import FrameTime
from engine.params import ParamStore


class Controller:
    """Hooks the render loop calls. All are optional; all run on the render thread and must return in
    microseconds (no I/O, no locks held for long): hand work to your own thread."""

    def start(self, store: ParamStore, info: dict[str, Any]) -> None:
        """Once at setup, after the generator and GL exist. `info`: generator/size/device/sinks description."""

    def before_frame(self, store: ParamStore, when: FrameTime) -> None:
        """Each frame, before the snapshot is taken: apply pending values (OSC, mappings, replay) into `store`.
        Called in list order, so later controllers see earlier ones' writes (the recorder runs last)."""

    def frame_time(self, index: int) -> float | None:
        """Show time t for frame `index`, or None to leave it to the loop's clock. A replay returns the recorded t,
        so a show recorded on the wall clock replays frame for frame (the walk and the shaders follow t)."""
        return None

    def after_frame(self, when: FrameTime, frame_stats: dict[str, float]) -> None:
        """Each frame, after the sinks: `frame_stats` has fps, frame_ms and per-stage ms."""

    def stats(self) -> dict[str, Any]:
        """Counters for the stats JSON (e.g. OSC messages accepted/rejected)."""
        return {}

    def stop(self) -> None:
        """Once at exit, also after errors."""


# ----------------------------------------------------------------------------------------------------------------
# CLI flags and the factory the `engine run` command calls. Submodules are imported lazily: they import
# Controller from this module.
# ----------------------------------------------------------------------------------------------------------------

#: Defaults of the flags below (dest -> default). The flags themselves default to argparse.SUPPRESS so that
#: the CLI can merge defaults < config [run] < command line; build_controllers fills in anything missing.
CONTROL_DEFAULTS: dict[str, Any] = {
    "osc_port": 7000,
    "osc_host": "127.0.0.1",
    "osc_out": [],
    "osc_out_rate": 10.0,
    "thermal": "auto",
    "map": None,
    "record": None,
    "replay": None,
    "preset_dir": None,
    "target_fps": None,
    "voice": None,
    "voice_bands": None,
    "voice_gap": 4.0,
    "voice_every": 0.0,
}


def add_cli_arguments(parser) -> None:
    """Add the live-control flags to the `engine run` parser."""
    import argparse

    S = argparse.SUPPRESS
    g = parser.add_argument_group("live control (OSC, temperature, mappings)")
    g.add_argument("--osc-port", type=int, default=S, metavar="PORT",
                   help="UDP port of the OSC server: /engine/<group>/<name> sets a parameter, /engine/list lists them "
                        "(default 7000; 0 disables OSC)")
    g.add_argument("--osc-host", default=S, metavar="ADDR",
                   help="address the OSC server listens on (default 127.0.0.1; 0.0.0.0 for other machines)")
    g.add_argument("--osc-out", action="append", default=S, metavar="HOST:PORT",
                   help="send telemetry (/engine/fps, /engine/gpu/temperature, mapped parameters, ...) to HOST:PORT (repeatable)")
    g.add_argument("--osc-out-rate", type=float, default=S, metavar="HZ", help="telemetry rate (default 10)")
    g.add_argument("--thermal", default=S, metavar="SOURCE",
                   help="temperature input: auto (default: NVML, else Linux sysfs, else OSC), nvml[:GPU], sysfs[:ZONE|PATH], "
                        "osc (/engine/input/temperature), synthetic[:sine|ramp|soak|const,lo=..,hi=..,period=..|tau=..|value=..]")
    g.add_argument("--map", default=S, metavar="FILE.toml",
                   help="mappings (temperature -> parameter, LFOs); reloaded when the file changes")
    g.add_argument("--record", default=S, metavar="FILE.jsonl",
                   help="record every accepted OSC message, temperature sample and parameter change, by frame")
    g.add_argument("--replay", default=S, metavar="FILE.jsonl", help="replay a --record file frame for frame")
    g.add_argument("--preset-dir", default=S, metavar="DIR",
                   help="folder of /engine/preset/save|load NAME (default ~/.config/engine/presets)")
    g.add_argument("--voice", default=S, metavar="HOST:PORT",
                   help="send spoken-word events (temperature bands, prompt, seed, mode, network changes) to `engine voice` "
                        "listening there, e.g. 127.0.0.1:9000 (default: off)")
    g.add_argument("--voice-bands", default=S, metavar="T,T,...",
                   help="temperature band edges for the voice's temperature_band event (default 40,50,60,70,80,90)")
    g.add_argument("--voice-gap", type=float, default=S, metavar="S",
                   help="at most one voice event every S seconds; events inside the gap are coalesced (default 4)")
    g.add_argument("--voice-every", type=float, default=S, metavar="S",
                   help="also send a tick event every S seconds (default 0: off)")
    g.add_argument("--target-fps", type=float, default=S, metavar="FPS",
                   help="thermal governor: lower live cost (diffusion: steps, then the similarity filter) when the frame rate "
                        "falls below FPS, raise it back when there is headroom: diffusion steps and similarity filter, StyleGAN2 render scale (default: off; StyleGAN3 has no live cost knob)")


def _options(args: Any) -> tuple[dict[str, Any], set[str]]:
    """(options with defaults filled in, the names that were given explicitly)."""
    import argparse

    given = dict(vars(args)) if not isinstance(args, dict) else dict(args)
    opts: dict[str, Any] = {}
    explicit: set[str] = set()
    for k, default in CONTROL_DEFAULTS.items():
        v = given.get(k)
        if k not in given or v is None or v is argparse.SUPPRESS or v == argparse.SUPPRESS:
            v = default
        else:
            explicit.add(k)
        opts[k] = v
    if isinstance(opts["osc_out"], str):
        opts["osc_out"] = [opts["osc_out"]]
    return opts, explicit


def build_controllers(args: Any) -> list[Controller]:
    """The controllers for `engine run`, in the order the loop must call them:

        thermal sampler (latches this frame's sample) -> OSC server (applies accepted values)
        -> replayer -> mapping engine (mapped values, LFOs) -> prompt list (diffusion.prompt_list)
        -> governor (--target-fps: caps cost) -> recorder (records the final diff) -> telemetry (after_frame only)
        -> voice events (--voice, after_frame only)

    `args`: the argparse namespace (or a dict) with the flags of add_cli_arguments. Raises UsageError or
    SetupError with one line. Sockets are bound here, so a busy port fails before any model loads.
    """
    import logging

    from engine.errors import UsageError

    log = logging.getLogger("engine.control")
    o, explicit = _options(args)
    try:
        port = int(o["osc_port"])
        rate = float(o["osc_out_rate"])
    except (TypeError, ValueError):
        raise UsageError(f"--osc-port must be a whole number and --osc-out-rate a number (got {o['osc_port']!r}, {o['osc_out_rate']!r})") from None
    if o["replay"] and o["map"]:
        raise UsageError("--replay restores what the recorded mappings produced; drop --map (or record a new show with it)")
    if o["replay"] and "thermal" in explicit:
        raise UsageError("--replay replays the recorded temperature; drop --thermal")
    if o["replay"] and o["target_fps"] is not None:
        raise UsageError("--replay restores the governor's recorded choices; drop --target-fps")

    made: list[Controller] = []
    try:
        from engine.control.thermal import (
            OscTemperatureSource,
            ThermalSampler,
            create_source,
        )

        replayer = thermal = osc = mapping = governor = recorder = telemetry = voice = None
        if o["replay"]:
            from engine.control.record import Replayer

            replayer = Replayer(o["replay"])
            made.append(replayer)
        else:
            # Also when nothing asks for it: the overlay (overlay.enabled, live) draws the temperature. Without a sensor
            # that is an info line, not a warning: only an explicit --thermal or a consumer makes it a warning.
            wanted = "thermal" in explicit or o["map"] or o["osc_out"] or o["record"] or o["voice"]
            thermal = ThermalSampler(create_source(str(o["thermal"]), quiet=not wanted))
            made.append(thermal)

        if port != 0:
            from engine.control.osc import OscServer

            temp_src = thermal.source if thermal is not None and isinstance(thermal.source, OscTemperatureSource) else None
            note = ("the show is replaying a recording" if replayer is not None else
                    f"the temperature source is {thermal.source.describe()} (use --thermal osc)" if thermal is not None else
                    "no temperature input is in use (add --thermal osc)")
            try:
                osc = OscServer(str(o["osc_host"]), port, preset_dir=o["preset_dir"], temperature=temp_src, temperature_note=note)
                made.append(osc)
            except UsageError as e:
                if "osc_port" in explicit or "osc_host" in explicit:
                    raise
                # The default port is taken (often another OSC app): the show runs without OSC rather than not at all.
                log.warning("OSC is off: %s", e)

        if o["map"]:
            from engine.control.mapping import MappingEngine

            mapping = MappingEngine(o["map"], feed=thermal)
            made.append(mapping)
        from engine.control.prompts import PromptList

        prompts = PromptList()  # idle unless diffusion.prompt_list is set (at start or live)
        made.append(prompts)
        if o["target_fps"] is not None:
            from engine.control.governor import WATCHED, Governor

            clash = sorted(set(WATCHED) & set(mapping.mapped_paths())) if mapping is not None else []
            if clash:
                raise UsageError(f"--map {o['map']} drives {', '.join(clash)}, which --target-fps adjusts too; drop one of them")
            governor = Governor(o["target_fps"])
            made.append(governor)
        if o["record"]:
            from engine.control.record import Recorder

            recorder = Recorder(o["record"], thermal=thermal or replayer)
            made.append(recorder)
        if o["osc_out"]:
            from engine.control.telemetry import OscTelemetry

            telemetry = OscTelemetry(list(o["osc_out"]), rate, thermal=thermal or replayer,
                                     mapped=mapping.mapped_paths if mapping is not None else None)
            made.append(telemetry)
            if osc is not None:
                for family, addr in telemetry.targets:
                    if addr[1] == osc.port and (addr[0] in ("127.0.0.1", "::1", osc.host) or osc.host in ("0.0.0.0", "::")):
                        raise UsageError(f"--osc-out {addr[0]}:{addr[1]} is the engine's own OSC port: telemetry would set the parameters it reports")

        if o["voice"]:
            from engine.control.voice_out import VoiceEmitter, parse_bands

            try:
                gap, every = float(o["voice_gap"]), float(o["voice_every"])
            except (TypeError, ValueError):
                raise UsageError(f"--voice-gap and --voice-every must be numbers (got {o['voice_gap']!r}, {o['voice_every']!r})") from None
            voice = VoiceEmitter(str(o["voice"]), bands=parse_bands(o["voice_bands"]), gap=gap, every=every,
                                 thermal=thermal or replayer, governor=governor)
            made.append(voice)

        if osc is not None:
            if mapping is not None:
                osc.on_release = mapping.release
                osc.preset_view = mapping.preset_view
            if recorder is not None:
                osc.on_applied = recorder.record_osc
        return [c for c in (thermal, osc, replayer, mapping, prompts, governor, recorder, telemetry, voice) if c is not None]
    except BaseException:
        for c in reversed(made):  # release sockets, NVML and files of the controllers already made
            try:
                c.stop()
            except Exception:
                pass
        raise
