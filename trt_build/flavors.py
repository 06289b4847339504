"""The two TensorRTs, and the differences between them in one place.

    trt   the full TensorRT (`tensorrt`, NVIDIA's index: pip install tensorrt-cu12|cu13 --extra-index-url
          https://pypi.nvidia.com). Builds on the GPU it will run on (a plan is for one GPU model and one TensorRT
          release); precision by builder flags (fp16/bf16); a timing cache per GPU makes rebuilds fast.
    rtx   TensorRT for RTX (`tensorrt_rtx`, PyPI: pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings, the
          engine's [rtx] extra). Builds ahead of time on any machine, a CPU-only one included, for a list of compute
          capabilities (GeForce/RTX: 7.5, 8.6, 8.9, 12.0; not Hopper); strongly typed (the precision is the ONNX graph's
          dtypes, so an fp16 model exports an fp16 graph); no timing cache for CPU builds (it queries a GPU); kernels
          are compiled on the user's GPU at first load, kept in a runtime cache file per GPU.

`auto` picks what is installed and suits the GPU: rtx when TensorRT for RTX is installed and there is no CUDA device
(building ahead of time) or the GPU is one it runs on; else trt when the full TensorRT is installed; the reason is
returned with the choice.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch

from engine.errors import SetupError, UsageError

FLAVOR_NAMES = ("auto", "trt", "rtx")

#: The compute capabilities TensorRT for RTX builds for by default: the GeForce/RTX generations (Turing, Ampere,
#: Ada, Blackwell). Hopper (9.0) and the data-centre Ampere (8.0) are not RTX-for-RTX targets.
RTX_TARGETS = ("SM75", "SM86", "SM89", "SM120")


@dataclass(frozen=True)
class Flavor:
    name: str
    modules: tuple[str, ...]  # import names, tried in order
    install: str
    cpu_build: bool  # builds without a GPU (ahead of time)
    timing_cache: bool  # a timing cache helps (and does not need a GPU query that a CPU build cannot make)
    runtime_cache: bool  # kernels compiled at load, kept in a runtime cache
    strongly_typed: bool  # precision comes from the graph, not from builder flags

    def load(self):
        """The module, or SetupError saying how to install it."""
        errors = []
        for name in self.modules:
            try:
                module = importlib.import_module(name)
            except ImportError as e:
                errors.append(f"{name}: {e}")
                continue
            if not hasattr(module, "Builder") and not hasattr(module, "Runtime"):
                errors.append(f"{name}: no Builder or Runtime in it")
                continue
            return module
        raise SetupError(f"{self.label} is not installed ({'; '.join(errors)}); {self.install}")

    def available(self) -> bool:
        try:
            self.load()
            return True
        except SetupError:
            return False

    def version(self) -> str:
        try:
            return str(getattr(self.load(), "__version__", "?"))
        except SetupError:
            return "none"

    @property
    def label(self) -> str:
        return "TensorRT for RTX" if self.name == "rtx" else "TensorRT"


FLAVORS = {
    "trt": Flavor("trt", ("tensorrt",), "pip install tensorrt-cu13 --extra-index-url https://pypi.nvidia.com (the full "
                  "builder; tensorrt-lean only runs prebuilt plans)", cpu_build=False, timing_cache=True, runtime_cache=False,
                  strongly_typed=False),
    "rtx": Flavor("rtx", ("tensorrt_rtx", "tensorrt_rtx_bindings"), "pip install 'engine[rtx]' (tensorrt-rtx-cu13-libs "
                  "tensorrt-rtx-cu13-bindings from PyPI)", cpu_build=True, timing_cache=False, runtime_cache=True,
                  strongly_typed=True),
}


#: Every compute capability TensorRT for RTX knows (its ComputeCapability enum): what it runs on.
RTX_RUNS_ON = ("SM75", "SM80", "SM86", "SM89", "SM120", "SM121")


def rtx_supports(capability: tuple[int, int]) -> bool:
    return f"SM{capability[0]}{capability[1]}" in RTX_RUNS_ON


def resolve_flavor(name: str, device: torch.device | None = None) -> tuple[Flavor, str]:
    """(flavor, why). UsageError for an unknown name; SetupError when the named one (or, for auto, any) is missing."""
    if name not in FLAVOR_NAMES:
        raise UsageError(f"--flavor {name!r}: use {', '.join(FLAVOR_NAMES)}")
    if name != "auto":
        flavor = FLAVORS[name]
        flavor.load()
        return flavor, f"--flavor {name}"
    rtx, trt = FLAVORS["rtx"], FLAVORS["trt"]
    cuda = device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()
    capability = torch.cuda.get_device_capability(device) if cuda else None
    if rtx.available():
        if not cuda:
            return rtx, "TensorRT for RTX is installed and there is no CUDA device here: engines are built ahead of time"
        if rtx_supports(capability):
            return rtx, f"TensorRT for RTX is installed and runs on this GPU (sm_{capability[0]}{capability[1]})"
    if trt.available():
        why = "the full TensorRT is installed"
        if capability is not None and rtx.available():
            why += f"; TensorRT for RTX does not run on sm_{capability[0]}{capability[1]}"
        return trt, why
    if rtx.available():
        raise SetupError(f"TensorRT for RTX does not run on this GPU (sm_{capability[0]}{capability[1]}: Hopper and data-"
                         f"centre GPUs need the full TensorRT); {trt.install}")
    raise SetupError(f"no TensorRT is installed: for RTX/GeForce cards {rtx.install}; for others {trt.install}")
