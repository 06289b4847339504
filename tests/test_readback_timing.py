"""With a host sink (pixels read back for NDI), the render loop's frame time stays within a stated margin of the
null sink's.

What is compared, and why
  * `engine run --sink null` against `engine run --sink ndi:NAME`, alternated four times each, same seed, size
    and frame count, unpaced (--fps 0 --clock wall) so both loops run flat out; per-stage medians from
    --stats-json.
  * The metric is the loop time *outside the generator*: upload + shaders + sinks (medians). The generator is a
    CPU StyleGAN here; on this shared 2-core box its time swings by 2x between identical runs with other
    processes' load (measured: 215-590 ms median per frame), which would drown a 0.3 ms effect and make any
    margin on the total either flaky or meaningless. Encoding and sending happen on the sink's worker and NDI's
    threads, not in the loop, and are not in the metric by construction.
  * Minimum over the four runs of each kind: contention only ever adds time, so the minimum is the cleanest
    estimate of each loop's own cost.

The margin: 2 ms + 50% of the null loop's time.
  On llvmpipe there is no GPU to overlap with: "GPU" work is CPU work, the PBO readback cannot run behind the
  next frame, and reading the frame back first waits for its rendering to finish. That wait is not extra work:
  without a readback the same wait happens in the next frame's upload (measured: null upload 2.6 ms and sinks
  0.005 ms; NDI upload 0.26 ms and sinks 0.21 ms). What the readback really adds is the 16 KB copy and the
  queue hand-off, ~0.3 ms at 64x64. Measured (min of runs, three sessions on a loaded box): null 0.68-2.95 ms,
  NDI 0.80-3.29 ms, NDI minus null 0.12-0.34 ms; single runs ranged up to 7.5 ms. The margin leaves room
  for scheduling noise on a loaded box while still failing a sink that encodes or sends on the render thread at
  realistic sizes, or a readback that maps its buffer before the copy is done on a GPU machine (there the
  synchronous stall is a full frame of GPU time). A second, tighter check bounds the sinks stage itself, which
  is the render thread's whole share of the host sink.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ndi_support import require_ndi

ROOT = Path(__file__).resolve().parent.parent
RUNS = 4
FRAMES = 20
SINKS_STAGE_MAX_MS = 1.5  # measured 0.21-0.30 ms median at 64x64 on llvmpipe


def _run(sink: str, stats: Path) -> dict:
    cmd = [
        sys.executable, "-m", "engine", "run", "--generator", "stylegan2", "--size", "64", "--seed", "1",
        "--sink", sink, "--frames", str(FRAMES), "--fps", "0", "--clock", "wall",
        "--stats-json", str(stats), "--quiet",
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(stats.read_text())


def _loop_ms(stats: dict) -> float:
    st = stats["stage_ms"]
    return st["upload"]["median"] + st["shaders"]["median"] + st["sinks"]["median"]


@pytest.mark.slow
def test_readback_keeps_loop_time_near_null_sink(tmp_path):
    require_ndi()
    name = f"timing-{time.monotonic_ns() % 10**8}"
    null_ms, ndi_ms, ndi_sinks_ms = [], [], []
    for i in range(RUNS):
        # Alternate so a burst of load from other processes hits both kinds alike.
        s = _run("null", tmp_path / f"null{i}.json")
        null_ms.append(_loop_ms(s))
        s = _run(f"ndi:{name}", tmp_path / f"ndi{i}.json")
        ndi_ms.append(_loop_ms(s))
        ndi_sinks_ms.append(s["stage_ms"]["sinks"]["median"])
        sink_stats = s["sink_stats"][f"ndi:{name}"]
        assert sink_stats["sent"] + sink_stats["dropped"] == FRAMES and sink_stats["errors"] == 0, sink_stats

    base, with_readback = min(null_ms), min(ndi_ms)
    margin = 2.0 + 0.5 * base
    report = (f"loop ms outside the generator, min of {RUNS}: null {base:.2f} (runs {[round(x, 2) for x in null_ms]}), "
              f"ndi {with_readback:.2f} (runs {[round(x, 2) for x in ndi_ms]}), margin {margin:.2f}")
    print(report)
    assert with_readback <= base + margin, report
    assert min(ndi_sinks_ms) <= SINKS_STAGE_MAX_MS, f"sinks stage {ndi_sinks_ms} ms: the render thread does sink work"
