"""Where ONNX graphs and TensorRT plans are kept, and the keys that name them.

An artefact is found again only when everything that shaped it is the same (NVIDIA's TensorRT demo/Diffusion keys
its engines by model and shapes; StreamDiffusion's cache left the resolution out and served 512 px engines at other
sizes). Two keys:

    onnx key   the module's weights (content hash of every parameter and buffer), its class and the source file
               that defines it, the call signature (shapes, dtypes, the Python values baked in), the exporter's
               versions (torch, onnxscript) and the ONNX opset;
    plan key   the onnx key plus the precision, the builder settings, TensorRT's version and the GPU (name and
               compute capability): a plan runs only on the GPU model and TensorRT release it was built for.

Layout: CACHE/<role>-<onnx key[:16]>/model.onnx (+ model.onnx.data), <plan key[:16]>.plan, manifest.json.
CACHE = $ENGINE_CACHE_DIR/trt, else ~/.cache/engine/trt.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from engine.trt_build.onnx_export import OPSET
from engine.trt_build.record import Call


def cache_root(override: str | Path | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    base = os.environ.get("ENGINE_CACHE_DIR")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "engine") / "trt"


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer: name, dtype, shape and bytes. A live weight edit or a blend changes
    it (and the engine built from the old weights would be wrong), so it is taken when the engine is prepared."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict(keep_vars=False).items()):
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.contiguous().reshape(-1).cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def source_digest(module: torch.nn.Module) -> str:
    """sha256 of the file that defines the module's class: a fix to the network code is a new graph."""
    try:
        return hashlib.sha256(Path(inspect.getsourcefile(type(module)) or "").read_bytes()).hexdigest()
    except (OSError, TypeError):
        return "unknown"


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "none"


def signature_text(key: Any) -> str:
    """The call signature for the key: shapes, dtypes, Python values; the device's type but not its index (the
    graph is the same on cuda:0 and cuda:1; the plan key names the GPU)."""
    return re.sub(r"device\(type='(\w+)'(?:, index=\d+)?\)", r"\1", repr(key))


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Target:
    """What a plan is built for: precision, builder settings, TensorRT's version and the GPU."""

    precision: str  # fp16 | bf16 | fp32
    tensorrt: str  # TensorRT version, "none" when it is not installed
    gpu: str  # e.g. "NVIDIA H200 (sm_90)", "cpu" without CUDA
    workspace_gb: float = 8.0
    optimization_level: int = 3

    @property
    def timing_cache_name(self) -> str:
        """Timing caches are only valid for one TensorRT version on one GPU model."""
        return f"timing-{_digest({'tensorrt': self.tensorrt, 'gpu': self.gpu})[:16]}.cache"

    @classmethod
    def here(cls, precision: str, device: torch.device, **settings: Any) -> "Target":
        try:
            import tensorrt as trt  # noqa: F401  (only its version)

            version = str(trt.__version__)
        except ImportError:
            version = "none"
        if device.type == "cuda" and torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device)
            gpu = f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"
        else:
            gpu = "cpu"
        return cls(precision, version, gpu, **settings)


@dataclass
class Entry:
    """One module call signature's artefacts."""

    role: str
    signature: str
    onnx_key: str
    plan_key: str
    folder: Path
    parts: dict[str, Any] = field(default_factory=dict)

    @property
    def onnx(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def plan(self) -> Path:
        return self.folder / f"{self.plan_key[:16]}.plan"

    def write_manifest(self, **extra: Any) -> Path:
        path = self.folder / "manifest.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        data.update({"role": self.role, "signature": self.signature, "onnx_key": self.onnx_key, **self.parts})
        plans = data.setdefault("plans", {})
        if extra:
            plans[self.plan_key[:16]] = {"plan_key": self.plan_key, **extra}
        path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        return path


def entry_for(call: Call, target: Target, root: Path, *, digest: str | None = None) -> Entry:
    """The cache entry of `call` for `target` (nothing is read or written). `digest`: the module's weights_digest
    when the caller has it already (one module, several signatures)."""
    module = call.module
    onnx_parts = {
        "weights": digest or weights_digest(module),
        "class": f"{type(module).__module__}.{type(module).__qualname__}",
        "source": source_digest(module),
        "signature": signature_text(call.key),
        "torch": torch.__version__,
        "onnxscript": _version("onnxscript"),
        "opset": OPSET,
    }
    onnx_key = _digest(onnx_parts)
    plan_key = _digest({"onnx": onnx_key, **asdict(target)})
    return Entry(call.role, call.describe(), onnx_key, plan_key, root / f"{call.role}-{onnx_key[:16]}",
                 {"onnx_parts": onnx_parts, "target": asdict(target)})
