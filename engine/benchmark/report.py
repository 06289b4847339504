"""What a benchmark leaves in its folder: frames.csv, telemetry.csv, summary.json, report.png (and frames_seeds.csv
with --compare seeds). The summary is computed from the recorded arrays only (engine.benchmark.analysis)."""

from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from engine.benchmark import analysis as A
from engine.benchmark.run import (
    THROTTLE_REASONS,
    BenchResult,
    SeedRun,
    telemetry_fields,
)
from engine.stats import STAGES, jsonable

DEFINITIONS = {
    "frame_ms": "CUDA: device time between the ends of consecutive frames (CUDA events); CPU: the loop's host time of the frame "
                "(time.perf_counter)",
    "fps_median": "1000 / median frame_ms",
    "fps_p1": "1000 / 99th-percentile frame_ms: 99 % of frames were faster",
    "stage_ms": "host milliseconds per stage (on CUDA the generate/upload launches; their device time is stage_gpu_ms_median)",
    "temperature_bins": "frames grouped by the temperature sample latched for them, bins [lo, hi) of --bin degrees",
    "cold_hot": "median fps of the coldest and the hottest bin with at least 10 frames; fps_lost = cold - hot",
    "compare.ratio": "engine fps_median / seed way fps_median, both measured in this run on the same model, size and device",
}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _headline_mask(result: BenchResult) -> np.ndarray:
    phases = np.asarray(result.probe.phases())
    if result.opts.sweep:
        return phases == "sweep"
    return phases == "measure"


def build_summary(result: BenchResult) -> dict[str, Any]:
    o, p = result.opts, result.probe
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in p.cols.items()}
    phases = np.asarray(p.phases())
    head = _headline_mask(result)
    not_warm = (phases != "warmup") & (phases != "settle")
    s: dict[str, Any] = {"command": "engine bench", "definitions": DEFINITIONS}
    s["machine"] = machine_description()
    gen = result.info.get("generator", {})
    s["run"] = {
        "generator": o.generator, "model": gen.get("model") or gen.get("source") or gen.get("name"), "generator_info": gen,
        "size": result.info.get("size"), "device": result.info.get("device"), "device_name": result.info.get("device_name"),
        "backend": result.info.get("backend"), "upload": result.info.get("upload"), "sinks": result.info.get("sinks"),
        "gl": result.info.get("gl"), "mode": "sweep" if o.sweep else "until-stable" if o.until_stable else "seconds",
        "seconds": o.seconds, "warmup_s": o.warmup, "stop_reason": p.stop_reason, "frames_recorded": len(p.index),
        "parameters_set": o.values,
    }
    s.update(A.frame_summary(cols["frame_ms"][head]))
    s["host_frame_ms_p50"] = A.frame_summary(cols["host_ms"][head])["frame_ms"]["p50"]
    s["stage_ms"] = A.stage_medians({st: cols[f"{st}_ms"][head] for st in STAGES})
    if result.engine_summary.get("stage_gpu_ms_median"):
        s["stage_gpu_ms_median"] = result.engine_summary["stage_gpu_ms_median"]
    temps = cols["temperature"]
    s["temperature"] = _temperature_block(result, temps[head])
    bins = A.temperature_bins(temps[not_warm], cols["frame_ms"][not_warm], o.bin_width)
    s["temperature_bins"] = bins
    s["cold_hot"] = A.cold_hot(bins)
    s["drift"] = A.drift(cols["t"][not_warm], cols["frame_ms"][not_warm])
    s["telemetry"] = _telemetry_summary(result)
    if o.until_stable:
        s["heat_soak"] = {"stable": p.stable, "stable_at_s": p.events["stable_at"], "window_s": o.stable_window,
                          "slope_threshold_c_per_min": o.stable_slope, "last_slope_c_per_min": p.detector.last_slope if p.detector else None,
                          "measured_after_stable_s": o.stable_seconds, "max_seconds": o.max_seconds,
                          "heat": A.frame_summary(cols["frame_ms"][phases == "heat"])}
    if o.sweep:
        s["sweep"] = _sweep_summary(result, cols, phases)
    if o.map:
        s["mapping"] = {"file": str(o.map), "parameters": p.params, "stats": result.controllers.get("MappingEngine")}
    if o.target_fps is not None:
        s["governor"] = dict(result.controllers.get("Governor") or {})
        s["governor"]["hold"] = A.target_hold(s["temperature_bins"], o.target_fps)
    if result.seed is not None:
        s["compare"] = _compare_summary(s, result.seed, temps[head])
    return jsonable(s)


def _temperature_block(result: BenchResult, temps: np.ndarray) -> dict[str, Any]:
    t = temps[np.isfinite(temps)]
    out: dict[str, Any] = {"source": result.telemetry_source, "reason_missing": result.telemetry_reason}
    if t.size:
        out.update(min=float(t.min()), median=float(np.median(t)), max=float(t.max()))
    else:
        out.update(min=None, median=None, max=None)
    return out


def _telemetry_summary(result: BenchResult) -> dict[str, Any]:
    rows = result.telemetry_rows
    out: dict[str, Any] = {"samples": len(rows), "rate_hz": 10.0, "source": result.telemetry_source,
                           "reason_missing": result.telemetry_reason}
    for f in telemetry_fields(rows):
        if f == "throttle_reasons":
            continue
        v = np.asarray([r.get(f) if r.get(f) is not None else np.nan for _, r in rows], dtype=np.float64)
        v = v[np.isfinite(v)]
        out[f] = {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())} if v.size else None
    reasons = [int(r["throttle_reasons"]) for _, r in rows if r.get("throttle_reasons") is not None]
    if reasons:
        out["throttle_reasons_fraction"] = {name: sum(1 for x in reasons if x & bit) / len(reasons) for bit, name in THROTTLE_REASONS.items()}
    return out


def _sweep_summary(result: BenchResult, cols: dict[str, np.ndarray], phases: np.ndarray) -> list[dict[str, Any]]:
    p = result.probe
    out = []
    for value in result.sweep_steps:
        sel = (phases == "sweep") & (cols["sweep_c"] == value)
        entry: dict[str, Any] = {"temperature": value, **A.frame_summary(cols["frame_ms"][sel])}
        idx = np.nonzero(sel)[0]
        params = {}
        for name, values in p.param_cols.items():
            vals = [values[i] for i in idx if i < len(values)]
            if vals and all(isinstance(v, (int, float)) for v in vals):
                params[name] = {"median": float(np.median(vals)), "min": float(min(vals)), "max": float(max(vals))}
        entry["parameters"] = params
        out.append(entry)
    return out


def _compare_summary(s: dict[str, Any], seed: SeedRun, engine_temps: np.ndarray) -> dict[str, Any]:
    ph = np.asarray(seed.phase)
    sel = ph == "measure"
    ms = np.asarray(seed.frame_ms, dtype=np.float64)[sel]
    seed_sum = A.frame_summary(ms)
    temps = np.asarray(seed.temperature, dtype=np.float64)[sel]
    e_t, s_t = engine_temps[np.isfinite(engine_temps)], temps[np.isfinite(temps)]
    seed_block = {"way": seed.name, "description": seed.description, "size": seed.size, **seed_sum,
                  "stage_ms": A.stage_medians({k: np.asarray(v)[sel] for k, v in seed.stage_ms.items()}),
                  "temperature_median": float(np.median(s_t)) if s_t.size else None, **seed.details}
    engine_block = {"fps_median": s["fps_median"], "fps_p1": s["fps_p1"], "frame_ms": s["frame_ms"], "frames": s["frames"],
                    "temperature_median": float(np.median(e_t)) if e_t.size else None}
    ratio = None
    if s["fps_median"] and seed_sum["fps_median"]:
        ratio = s["fps_median"] / seed_sum["fps_median"]
    return {"engine": engine_block, "seeds": seed_block, "ratio": ratio,
            "note": "the seed way ran after the engine, on the same device; compare their temperature_median for heat"}


def machine_description() -> dict[str, Any]:
    """engine.machine's record (host, CPU, torch, CUDA device, and through NVML the driver, clocks, power limit):
    the same record every bench/ script keeps."""
    from engine.machine import machine_info

    return machine_info()


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


def write_outputs(result: BenchResult, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(result)
    _write_frames(result, out / "frames.csv")
    _write_telemetry(result, out / "telemetry.csv")
    if result.seed is not None:
        _write_seed_frames(result.seed, out / "frames_seeds.csv")
    summary["files"] = ["frames.csv", "telemetry.csv", "summary.json", "report.png"] + (["frames_seeds.csv"] if result.seed else [])
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    plot_report(result, summary, out / "report.png")
    return summary


def _write_frames(result: BenchResult, path: Path) -> None:
    p = result.probe
    stage_cols = [f"{s}_ms" for s in STAGES]
    header = ["index", "t", "phase", "frame_ms", "host_ms", *stage_cols, "temperature"]
    if result.opts.sweep:
        header.append("sweep_c")
    if result.opts.target_fps is not None:
        header.append("governor_level")
    header += p.params
    phases = p.phases()
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(len(p.index)):
            row = [p.index[i], _fmt(p.cols["t"][i]), phases[i], _fmt(p.cols["frame_ms"][i]), _fmt(p.cols["host_ms"][i])]
            row += [_fmt(p.cols[c][i]) for c in stage_cols]
            row.append(_fmt(p.cols["temperature"][i]))
            if result.opts.sweep:
                row.append(_fmt(p.cols["sweep_c"][i]))
            if result.opts.target_fps is not None:
                lv = p.cols["level"][i]
                row.append("" if math.isnan(lv) else int(lv))
            row += [_fmt(p.param_cols[name][i]) for name in p.params]
            w.writerow(row)


def _write_telemetry(result: BenchResult, path: Path) -> None:
    fields = telemetry_fields(result.telemetry_rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", *fields, "source"])
        for t, values in result.telemetry_rows:
            row = [_fmt(t - result.telemetry_t0)]
            for k in fields:
                v = values.get(k)
                row.append("" if v is None else (f"0x{int(v):x}" if k == "throttle_reasons" else _fmt(float(v))))
            row.append(result.telemetry_source or "")
            w.writerow(row)


def _write_seed_frames(seed: SeedRun, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "t", "phase", "frame_ms", *(f"{s}_ms" for s in seed.stages), "temperature", "way"])
        for i in range(len(seed.t)):
            w.writerow([i, _fmt(seed.t[i]), seed.phase[i], _fmt(seed.frame_ms[i]), *(_fmt(seed.stage_ms[s][i]) for s in seed.stages),
                        _fmt(seed.temperature[i]), seed.name])


# ----------------------------------------------------------------------------------------------------------------
# report.png
# ----------------------------------------------------------------------------------------------------------------


def _rolling_median(x: np.ndarray, n: int) -> np.ndarray:
    if x.size == 0 or n <= 1:
        return x
    n = min(n, x.size)
    pad = np.concatenate([np.full(n // 2, np.nan), x, np.full(n - 1 - n // 2, np.nan)])
    win = np.lib.stride_tricks.sliding_window_view(pad, n)
    return np.nanmedian(win, axis=1)


def plot_report(result: BenchResult, summary: dict[str, Any], path: Path) -> None:
    """Four panels: fps and temperature over time; fps against temperature (or per sweep step); median ms per stage;
    the comparison with the seed way (or the governor's levels, or the headline numbers)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    p = result.probe
    t = np.asarray(p.cols["t"])
    ms = np.asarray(p.cols["frame_ms"])
    fps = np.where(ms > 0, 1000.0 / np.where(ms > 0, ms, 1.0), np.nan)
    temp = np.asarray(p.cols["temperature"])
    phases = np.asarray(p.phases())
    has_temp = bool(np.isfinite(temp).any())

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    run = summary["run"]
    title = (f"engine bench: {run['generator']} {run['size'][0] if run.get('size') else ''}px on {run.get('device_name')} "
             f"({run.get('backend')}) - {summary['fps_median'] or 0:.1f} fps median, p1 {summary['fps_p1'] or 0:.1f}")
    fig.suptitle(title, fontsize=11)

    # 1. fps and temperature over time
    ax = axes[0][0]
    ax.plot(t, fps, ".", ms=2, alpha=0.3, color="tab:blue", label="fps (per frame)")
    ax.plot(t, _rolling_median(fps, max(5, len(fps) // 100)), color="tab:blue", lw=1.5, label="fps (rolling median)")
    warm = t[phases == "warmup"]
    if warm.size:
        ax.axvspan(0, warm.max(), color="grey", alpha=0.15, label="warm-up (not counted)")
    if result.seed is not None:
        st = np.asarray(result.seed.t)
        sms = np.asarray(result.seed.frame_ms)
        ax.plot(st, 1000.0 / sms, ".", ms=2, alpha=0.4, color="tab:red", label=f"{result.seed.name} way (per frame)")
    if p.events.get("stable_at") is not None:
        ax.axvline(p.events["stable_at"], color="k", ls="--", lw=1, label="temperature stable")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("fps")
    ax.set_title("fps and temperature over time")
    ax2 = ax.twinx()
    tel = result.telemetry_rows
    if has_temp and tel:
        tt = np.asarray([r[0] - result.telemetry_t0 for r in tel])
        tv = np.asarray([r[1].get("temperature") if r[1].get("temperature") is not None else np.nan for r in tel], dtype=float)
        ax2.plot(tt, tv, color="tab:orange", lw=1.5, label="temperature")
        ax2.set_ylabel("temperature (C)", color="tab:orange")
    else:
        ax2.set_yticks([])
        ax.set_title("fps over time (no temperature: see the right)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")

    # 2. fps against temperature, or per sweep step
    ax = axes[0][1]
    if result.opts.sweep and summary.get("sweep"):
        steps = summary["sweep"]
        xs = [e["temperature"] for e in steps]
        ys = [e["fps_median"] or 0 for e in steps]
        ax.bar(xs, ys, width=0.8 * (abs(xs[1] - xs[0]) if len(xs) > 1 else 1.0), color="tab:blue", alpha=0.7)
        for x, y, e in zip(xs, ys, steps):
            label = "\n".join(f"{k.split('.')[-1]} {v['median']:g}" for k, v in e["parameters"].items())
            ax.text(x, y, label, ha="center", va="bottom", fontsize=7)
        ax.set_xlabel("swept temperature (C)")
        ax.set_ylabel("fps (median of the step's second half)")
        ax.set_title(f"what {Path(result.opts.map).name} does to fps")
    elif has_temp:
        sel = (phases != "warmup") & np.isfinite(temp)
        ax.scatter(temp[sel], fps[sel], s=4, alpha=0.25, color="tab:blue", label="frames")
        bins = summary["temperature_bins"]
        if bins:
            ax.plot([(b["lo"] + b["hi"]) / 2 for b in bins], [b["fps_median"] for b in bins], "o-", color="tab:red",
                    label=f"median per {result.opts.bin_width:g} C bin")
        ch = summary["cold_hot"]
        if ch.get("fps_lost_pct") is not None and not ch.get("reason"):
            ax.set_title(f"fps against temperature: {ch['fps_lost']:.1f} fps ({ch['fps_lost_pct']:.1f} %) lost cold -> hot")
        elif ch.get("reason"):
            ax.set_title(f"fps against temperature ({ch['reason']})", fontsize=9)
        else:
            ax.set_title("fps against temperature")
        ax.set_xlabel("temperature (C)")
        ax.set_ylabel("fps")
        ax.legend(fontsize=7)
    else:
        why = textwrap.fill(str(result.telemetry_reason or ""), 70)
        ax.text(0.5, 0.5, f"no temperature readings, so no fps against temperature\n\n{why}", ha="center", va="center",
                fontsize=8, transform=ax.transAxes)
        ax.set_axis_off()

    # 3. per-stage time
    ax = axes[1][0]
    stages = summary["stage_ms"]
    names = [k for k, v in stages.items() if v is not None]
    vals = [stages[k] for k in names]
    ax.barh(names, vals, color="tab:blue", alpha=0.8)
    for y, v in enumerate(vals):
        ax.text(v, y, f" {v:.2f} ms", va="center", fontsize=8)
    if result.seed is not None:
        seed_st = summary["compare"]["seeds"]["stage_ms"]
        sn = [f"{result.seed.name}: {k}" for k in seed_st]
        sv = [seed_st[k] or 0.0 for k in seed_st]
        ax.barh(sn, sv, color="tab:red", alpha=0.8)
        for y, v in enumerate(sv, start=len(names)):
            ax.text(v, y, f" {v:.2f} ms", va="center", fontsize=8)
    ax.set_xlabel("median ms per frame (host)")
    ax.set_title("per-stage time")
    ax.invert_yaxis()

    # 4. comparison / governor / numbers
    ax = axes[1][1]
    if result.seed is not None:
        c = summary["compare"]
        labels = ["engine", c["seeds"]["way"]]
        vals = [c["engine"]["fps_median"] or 0, c["seeds"]["fps_median"] or 0]
        bars = ax.bar(labels, vals, color=["tab:blue", "tab:red"])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.2f} fps", ha="center", va="bottom", fontsize=9)
        ax.set_ylabel("fps (median)")
        ratio = c["ratio"]
        ax.set_title(f"engine vs the seed way: {ratio:.2f}x" if ratio else "engine vs the seed way")
    elif result.opts.target_fps is not None and summary.get("governor") and summary["governor"].get("levels"):
        lv = np.asarray(p.cols["level"])
        ax.step(t, lv, where="post", color="tab:purple")
        levels = summary["governor"]["levels"]
        ax.set_yticks(range(len(levels)), levels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("time (s)")
        ax.set_title(f"governor level (target {result.opts.target_fps:g} fps; top = dearest)")
    else:
        lines = [f"fps median {summary['fps_median'] or 0:.2f}, p1 {summary['fps_p1'] or 0:.2f}",
                 f"frame ms p50 {summary['frame_ms']['p50'] or 0:.2f}, p99 {summary['frame_ms']['p99'] or 0:.2f}",
                 f"frames {summary['frames']}"]
        if result.opts.target_fps is not None and summary.get("governor"):
            lines.append(textwrap.fill(f"governor: {summary['governor'].get('no_knob_reason')}", 70))
        ax.text(0.02, 0.95, "\n".join(lines), va="top", fontsize=9, transform=ax.transAxes)
        ax.set_axis_off()

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
