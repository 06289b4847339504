"""CPU threads: how many intra-op threads torch gets, and how its OpenMP threads wait, chosen once at start-up.

Why it matters: torch's CPU kernels run as OpenMP parallel regions that end in a barrier. By default every core
gets a thread and idle threads spin before they sleep. A show machine is never idle (TouchDesigner, OBS, Resolume,
the GL driver, the video encoder): when one of those takes a core, the thread that shares it is descheduled, and
the others spin at every barrier waiting for it. On a 2-core machine with one busy neighbour that made a frame
10-40x slower (StyleGAN2 at 128-256 px, measured here; bench/bench_threads.py records the figures).

The choice (engine run, bench, trt and project call `prepare_process()` first thing and `apply()` once the options
are merged):
  * threads: `--threads N` (or `threads = N` in the config's [run] table), else OMP_NUM_THREADS from the
    environment, else half the cores this process may use (affinity and cgroup quota), at least 1. The other half
    is left to the neighbours a show always has, so they cost the engine about their share, never a collapse.
  * waiting: OpenMP threads spin only briefly before they sleep (GOMP_SPINCOUNT for GNU OpenMP, torch's Linux
    wheels; KMP_BLOCKTIME for LLVM/Intel OpenMP, e.g. macOS and conda builds, not verified here), unless those
    variables or OMP_WAIT_POLICY are already set. OpenMP reads them when torch loads, so they are set before torch is imported; a
    process that had already imported torch (a test calling engine.cli.main) keeps its own and the report says so.
  * Mesa's llvmpipe (software GL) starts one rasterizer thread per core unless LP_NUM_THREADS is set: it is set to
    the same count, so GL and torch do not fight over the cores either. GPU drivers ignore it.

The GPU path barely uses CPU threads; this matters for the CPU fallback and for everything running beside a show.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

#: OpenMP spin before sleeping: GNU OpenMP counts spin iterations (its default, 300000, is ~ms), LLVM/Intel OpenMP
#: milliseconds. 1000 iterations is a few microseconds: enough to catch the next parallel region of a busy frame
#: loop, short enough that a descheduled sibling costs no spinning. Measured here with 2 threads beside one busy
#: core: 100000 collapsed (150 ms frames against 10 ms alone, bench/results/cpu/threads-128.json; 10000 did too in
#: trial runs), 1000 did not (29 ms).
WAIT_ENV = {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "1"}


@dataclass(frozen=True)
class ThreadPlan:
    threads: int
    cores: int
    reason: str
    #: Environment variables this process set for OpenMP / llvmpipe (name -> value), and the ones it found set.
    set_env: dict[str, str] = field(default_factory=dict)
    kept_env: dict[str, str] = field(default_factory=dict)
    #: Why the OpenMP wait settings could not be applied (torch loaded before the engine chose), or None.
    wait_note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"threads": self.threads, "cores": self.cores, "reason": self.reason, "set_env": dict(self.set_env),
                "kept_env": dict(self.kept_env), "wait_note": self.wait_note}


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cores = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max", encoding="ascii").read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def choose_threads(requested: int | None, cores: int, environ: Mapping[str, str],
                   source: str = "--threads") -> tuple[int, str]:
    """The intra-op thread count and why (pure: tested directly). `source` names where `requested` came from."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be at least 1, got {requested}")
        return requested, source
    env = environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env.split(",")[0])
        except ValueError:
            n = 0
        if n >= 1:
            return n, "OMP_NUM_THREADS from the environment"
    n = max(1, cores // 2)
    return n, "half the usable cores, the rest left to the show's other programs"


_state: dict[str, Any] = {"wait_set": {}, "wait_kept": {}, "late": None, "lp_set": False}


def prepare_process(environ: dict[str, str] | None = None) -> None:
    """Set the OpenMP wait variables (unless the user set them) before torch is imported. Call first thing."""
    environ = os.environ if environ is None else environ
    if "torch" in sys.modules:
        _state["late"] = "torch was loaded before the engine chose: OpenMP wait settings left as they were"
        return
    if "OMP_WAIT_POLICY" in environ:  # the user's own policy (ACTIVE/PASSIVE) decides; a spin count would override it
        _state["wait_kept"]["OMP_WAIT_POLICY"] = environ["OMP_WAIT_POLICY"]
        return
    for name, value in WAIT_ENV.items():
        if name in environ:
            _state["wait_kept"][name] = environ[name]
        else:
            environ[name] = value
            _state["wait_set"][name] = value


_plan: ThreadPlan | None = None


def apply(requested: int | None = None, source: str = "--threads") -> ThreadPlan:
    """Choose the thread count, give it to torch (and to llvmpipe, before any GL context exists), remember it for
    `current()`. `source` names where `requested` came from. Raises ValueError for a count below 1."""
    global _plan
    import torch

    cores = usable_cores()
    threads, reason = choose_threads(requested, cores, os.environ, source)
    torch.set_num_threads(threads)
    set_env, kept_env = dict(_state["wait_set"]), dict(_state["wait_kept"])
    if "LP_NUM_THREADS" in os.environ and not _state["lp_set"]:
        kept_env["LP_NUM_THREADS"] = os.environ["LP_NUM_THREADS"]
    else:  # unset, or set by an earlier apply() in this process: follow the new count
        os.environ["LP_NUM_THREADS"] = set_env["LP_NUM_THREADS"] = str(threads)
        _state["lp_set"] = True
    _plan = ThreadPlan(threads=threads, cores=cores, reason=reason, set_env=set_env, kept_env=kept_env,
                       wait_note=_state["late"])
    return _plan


def current() -> dict[str, Any]:
    """What this process runs with, for `engine info` and the stats JSON: the plan, or torch's own count when the
    engine chose nothing (a library caller)."""
    if _plan is not None:
        return {**_plan.as_dict(), "torch_threads": _torch_threads()}
    cores = usable_cores()
    threads, reason = choose_threads(None, cores, os.environ)
    return {"threads": None, "cores": cores, "reason": "not chosen by the engine (it was not started by its command)",
            "would_choose": threads, "would_choose_reason": reason, "torch_threads": _torch_threads()}


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None
