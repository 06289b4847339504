"""`engine info`: what this machine offers, and why not where it doesn't.

Each probe is guarded: a missing driver or package becomes a reason string, never a crash.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

import torch

from engine import __version__
from engine import threads as cpu_threads


def _gl_info() -> dict[str, Any]:
    try:
        from engine.gl import GL

        gl = GL.headless()
        try:
            return {"available": True, **gl.info(), "max_texture_size": gl.ctx.info.get("GL_MAX_TEXTURE_SIZE")}
        finally:
            gl.release()
    except Exception as e:
        return {"available": False, "reason": str(e)}


def _cuda_info() -> dict[str, Any]:
    if not torch.cuda.is_available():
        built = torch.version.cuda
        why = "this torch build has no CUDA (CPU wheel)" if built is None else f"torch built for CUDA {built}, but no device/driver found"
        return {"available": False, "reason": why}
    devices = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        devices.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                        "capability": f"{p.major}.{p.minor}"})
    return {"available": True, "torch_cuda": torch.version.cuda, "devices": devices}


def _nvml_info() -> dict[str, Any]:
    try:
        import pynvml
    except ImportError:
        return {"available": False, "reason": "nvidia-ml-py is not installed (pip install nvidia-ml-py)"}
    try:
        pynvml.nvmlInit()
    except Exception as e:
        return {"available": False, "reason": f"NVML could not initialise ({e}): no NVIDIA driver on this machine"}
    try:
        out: dict[str, Any] = {"available": True, "driver": _s(pynvml.nvmlSystemGetDriverVersion()), "gpus": []}
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpu: dict[str, Any] = {"index": i, "name": _s(pynvml.nvmlDeviceGetName(h))}
            try:
                gpu["temperature_c"] = pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
            except Exception as e:
                gpu["temperature_c"] = f"unsupported ({e})"
            out["gpus"].append(gpu)
        return out
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _interop_info(cuda: dict[str, Any], gl: dict[str, Any]) -> dict[str, Any]:
    if not cuda.get("available"):
        return {"available": False, "reason": "no CUDA device: frames are staged through host memory"}
    try:
        from engine.interop import probe_interop
    except ImportError as e:
        return {"available": False, "reason": f"interop module unavailable: {e}"}
    ok, reason = probe_interop()
    return {"available": ok, "reason": reason}


def _tensorrt_info() -> dict[str, Any]:
    """Is a TensorRT builder importable (for --backend tensorrt and engine trt)? ONNX export works without it."""
    from importlib.util import find_spec

    onnx = all(find_spec(m) is not None for m in ("onnx", "onnxscript"))
    try:
        from engine.trt_build.builder import import_tensorrt

        trt = import_tensorrt()
        return {"available": True, "version": str(trt.__version__), "onnx_export": onnx}
    except Exception as e:  # SetupError with the install hint; a broken install raises anything
        return {"available": False, "reason": str(e), "onnx_export": onnx}


def _generator_info(spec: str, output: tuple[int, int] | None) -> dict[str, Any]:
    from engine.generators import create_generator

    device = torch.device("cpu")
    g = create_generator(spec, output=output, device=device)
    try:
        d = g.info()
        d["output"] = framing(g.width, g.height, output)
        return d
    finally:
        g.close()


def framing(width: int, height: int, output: tuple[int, int] | None) -> str:
    """One line: the generator's native render size and how it becomes the output (default output.fit)."""
    from engine.output import fit_transform

    if output is None or tuple(output) == (width, height):
        return f"{width}x{height}: rendered at the output size, no resampling"
    ow, oh = output
    sx, sy, _, _ = fit_transform((width, height), (ow, oh), "cover")
    if abs(sx - 1.0) < 1e-9 and abs(sy - 1.0) < 1e-9:
        how = f"scaled by {ow / width:.3g}x{oh / height:.3g} (same aspect)"
    else:
        crop = f"{(1 - sy) * 100:.0f}% of its height" if sy < 1 else f"{(1 - sx) * 100:.0f}% of its width"
        how = f"output.fit cover (default): scaled to cover, cropping {crop}; contain letterboxes, stretch ignores the aspect"
    return f"renders {width}x{height}, fitted on the GPU to {ow}x{oh}: {how}; output.zoom and output.pan_x/pan_y frame it"


def collect_info(generator: str | None = None, size: tuple[int, int] | None = None) -> dict[str, Any]:
    from engine.sinks import availability

    # A generator (diffusers pulls in Triton) must be built before the GL context: Triton's LLVM loaded after
    # Mesa's llvmpipe crashes the process.
    gen = _generator_info(generator, size) if generator else None
    gl = _gl_info()
    cuda = _cuda_info()
    data: dict[str, Any] = {
        "engine": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_threads": cpu_threads.current(),
        "gl": gl,
        "cuda": cuda,
        "nvml": _nvml_info(),
        "interop": _interop_info(cuda, gl),
        "tensorrt": _tensorrt_info(),
        "sinks": {k: {"available": ok, "reason": why} for k, (ok, why) in availability().items()},
    }
    if gen is not None:
        data["generator"] = gen
    return data


def format_info(d: dict[str, Any]) -> str:
    lines = [f"engine {d['engine']}  python {d['python']}  torch {d['torch']}  {d['platform']}"]
    th = d["cpu_threads"]
    if th.get("threads") is not None:
        lines.append(f"CPU:     torch uses {th['threads']} of {th['cores']} usable cores ({th['reason']})"
                     + (f"; {th['wait_note']}" if th.get("wait_note") else ""))
    else:
        lines.append(f"CPU:     {th['cores']} usable cores; engine run would use {th['would_choose']} ({th['would_choose_reason']})")
    gl = d["gl"]
    lines.append("GL:      " + (f"{gl['renderer']} | {gl['version']} ({gl['context']})" if gl["available"] else f"unavailable: {gl['reason']}"))
    cuda = d["cuda"]
    if cuda["available"]:
        for dev in cuda["devices"]:
            lines.append(f"CUDA:    [{dev['index']}] {dev['name']} {dev['memory_gib']} GiB sm_{dev['capability']} (torch CUDA {cuda['torch_cuda']})")
    else:
        lines.append(f"CUDA:    none ({cuda['reason']})")
    nv = d["nvml"]
    if nv["available"]:
        gpus = ", ".join(f"{g['name']} {g['temperature_c']} C" for g in nv["gpus"])
        lines.append(f"NVML:    driver {nv['driver']}: {gpus}")
    else:
        lines.append(f"NVML:    unavailable ({nv['reason']})")
    io = d["interop"]
    lines.append("Interop: " + ("CUDA-GL zero-copy available" if io["available"] else f"not available: {io['reason']}"))
    trt = d["tensorrt"]
    export = "ONNX export available" if trt["onnx_export"] else "ONNX export needs pip install onnx onnxscript"
    lines.append("TensorRT: " + (f"{trt['version']} (--backend tensorrt, engine trt); {export}" if trt["available"]
                                 else f"not installed: --backend tensorrt unavailable; engine trt --onnx-only works; {export}"))
    lines.append("Sinks:")
    for kind, s in d["sinks"].items():
        lines.append(f"  {kind:8s} {'available' if s['available'] else 'unavailable: ' + s['reason']}")
    if "generator" in d:
        lines.append("Generator:")
        for k, v in d["generator"].items():
            if isinstance(v, (list, tuple)) and len(v) > 8:
                lines.append(f"  {k}:")
                lines.extend(f"    {x}" for x in v)
            else:
                lines.append(f"  {k}: {v}")
    return "\n".join(lines)


def format_params() -> str:
    from engine.params import SPECS

    rows = [("address", "type", "range", "default", "description")]
    for s in SPECS:
        default = s.default if s.kind != "vector" else ("()" if not s.default else ",".join(f"{x:g}" for x in s.default))
        rows.append((s.address, s.kind, s.range_text(), repr(default) if isinstance(default, str) else str(default), s.doc))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows)


def params_markdown() -> str:
    """The README's parameter table (kept in sync by tests/test_docs.py): `engine info --params --markdown`."""
    from engine.params import SPECS

    lines = ["| OSC address | type | range | default | what it does |", "|---|---|---|---|---|"]
    for s in SPECS:
        if s.kind == "vector":
            default = f"`{','.join(f'{x:g}' for x in s.default)}`" if s.default else "empty"
        elif s.kind == "str" or s.kind == "enum":
            default = f"`{s.default!r}`" if s.default else "`''`"
        else:
            default = f"`{s.default}`"
        doc = s.doc.replace("|", "\\|")
        rng = s.range_text().replace("|", " \\| ")
        lines.append(f"| `{s.address}` | {s.kind} | {rng} | {default} | {doc} |")
    return "\n".join(lines)
