"""engine.threads: the CPU thread choice (pure rule), and what a fresh `engine run` process applies and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.threads import choose_threads, usable_cores

ROOT = Path(__file__).resolve().parent.parent
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "LP_NUM_THREADS")


def test_half_the_cores_by_default_at_least_one():
    assert choose_threads(None, 2, {}) == (1, "half the usable cores, the rest left to the show's other programs")
    assert choose_threads(None, 1, {})[0] == 1
    assert choose_threads(None, 16, {})[0] == 8
    assert choose_threads(None, 3, {})[0] == 1


def test_threads_flag_wins_over_omp_num_threads_which_wins_over_the_default():
    assert choose_threads(3, 2, {"OMP_NUM_THREADS": "2"}) == (3, "--threads")
    assert choose_threads(None, 8, {"OMP_NUM_THREADS": "2"}) == (2, "OMP_NUM_THREADS from the environment")
    assert choose_threads(None, 8, {"OMP_NUM_THREADS": "6,2"})[0] == 6  # nested-parallelism list: the outer level
    assert choose_threads(None, 8, {"OMP_NUM_THREADS": "lots"})[0] == 4  # unusable: the default
    with pytest.raises(ValueError):
        choose_threads(0, 2, {})


def test_usable_cores_is_within_the_machine():
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def run_engine(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict | None]:
    stats = tmp_path / "stats.json"
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    p = subprocess.run([sys.executable, "-m", "engine", "run", "--frames", "2", "--size", "64", "--sink", "null",
                        "--osc-port", "0", "--quiet", "--stats-json", str(stats), *args], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=dict(clean, **(env or {})))
    return p, (json.loads(stats.read_text()) if stats.exists() else None)


def test_a_fresh_run_applies_the_choice_before_torch_loads_and_reports_it(tmp_path):
    p, stats = run_engine(tmp_path, "--threads", "1")
    assert p.returncode == 0, p.stderr
    th = stats["cpu_threads"]
    assert th["threads"] == 1 and th["torch_threads"] == 1 and th["reason"] == "--threads"
    # OpenMP's short spin was set before torch loaded (nothing was set by the caller), llvmpipe matches torch.
    assert th["set_env"] == {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "1", "LP_NUM_THREADS": "1"}
    assert th["wait_note"] is None and th["cores"] == usable_cores()


def test_the_users_own_settings_are_kept(tmp_path):
    p, stats = run_engine(tmp_path, env={"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": "5", "LP_NUM_THREADS": "3"})
    assert p.returncode == 0, p.stderr
    th = stats["cpu_threads"]
    assert (th["threads"], th["reason"], th["torch_threads"]) == (2, "OMP_NUM_THREADS from the environment", 2)
    assert th["kept_env"] == {"GOMP_SPINCOUNT": "5", "LP_NUM_THREADS": "3"}
    assert th["set_env"] == {"KMP_BLOCKTIME": "1"}
    # An explicit OpenMP wait policy decides alone: no spin count is set over it.
    p, stats = run_engine(tmp_path, "--threads", "1", env={"OMP_WAIT_POLICY": "PASSIVE"})
    assert p.returncode == 0, p.stderr
    th = stats["cpu_threads"]
    assert th["kept_env"] == {"OMP_WAIT_POLICY": "PASSIVE"} and th["set_env"] == {"LP_NUM_THREADS": "1"}


def test_threads_from_the_config_file_and_a_bad_value_is_one_line(tmp_path):
    good = tmp_path / "show.toml"
    good.write_text("[run]\nthreads = 2\n")
    p, stats = run_engine(tmp_path, "--config", str(good))
    assert p.returncode == 0, p.stderr
    assert (stats["cpu_threads"]["threads"], stats["cpu_threads"]["reason"]) == (2, f"[run] threads in {good}")
    p, _ = run_engine(tmp_path, "--config", str(good), "--threads", "1")  # the command line wins
    assert p.returncode == 0 and json.loads((tmp_path / "stats.json").read_text())["cpu_threads"]["threads"] == 1
    for bad in ("0", '"two"', "1.5", "true"):
        cfg = tmp_path / "bad.toml"
        cfg.write_text(f"[run]\nthreads = {bad}\n")
        p, _ = run_engine(tmp_path, "--config", str(cfg))
        assert p.returncode == 2, (bad, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "[run] threads" in lines[0] and str(cfg) in lines[0], p.stderr


def test_engine_info_says_what_was_chosen_and_why():
    p = subprocess.run([sys.executable, "-m", "engine", "info"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k not in THREAD_ENV})
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if x.startswith("CPU:"))
    assert f"of {usable_cores()} usable cores" in line and "half the usable cores" in line, line
