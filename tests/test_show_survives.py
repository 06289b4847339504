"""Issue 17: disks and signals. A recording that cannot be written fails alone and says so (never a segfault, never a
silent success); a closed terminal ends the show like Ctrl-C; a signal during setup stops a long load at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def engine_run(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "run", "--size", "64", "--osc-port", "0", "--quiet", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def decoded_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("engine: error:")]


def test_an_unwritable_path_fails_at_setup_with_one_line(tmp_path):
    p = engine_run("--frames", "3", "--sink", "file:/proc/engine-test.mp4", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    (line,) = error_lines(p.stderr)
    assert "cannot write /proc/engine-test.mp4" in line, p.stderr
    p = engine_run("--frames", "3", "--sink", "file:/proc/frames/%05d.png", cwd=tmp_path)
    assert p.returncode == 2 and len(error_lines(p.stderr)) == 1, p.stderr


def test_a_full_disk_at_the_first_write_stops_the_recording_not_the_show(tmp_path):
    """/dev/full answers every write with ENOSPC: the header write fails. Seen before: the sink kept muxing and the
    process segfaulted (exit 139). Now: one log line, the other sink keeps its frames, exit 1 naming the loss."""
    link = tmp_path / "full.mp4"
    link.symlink_to("/dev/full")
    good = tmp_path / "good.mp4"
    stats = tmp_path / "stats.json"
    p = engine_run("--frames", "20", "--sink", f"file:{link}", "--sink", f"file:{good}", "--stats-json", str(stats),
                   cwd=tmp_path)
    assert p.returncode == 1, (p.returncode, p.stderr[-3000:])
    (line,) = error_lines(p.stderr)
    assert "a recording was lost" in line and "full.mp4" in line, p.stderr
    assert "Traceback" not in p.stderr
    s = json.loads(stats.read_text())
    bad = next(v for k, v in s["sink_stats"].items() if "full.mp4" in k)
    assert bad["failed"] and bad["written"] == 0
    assert decoded_frames(good) == 20  # the show and the other recording went on


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_disk_that_fills_mid_recording_is_reported_not_counted_as_written(tmp_path):
    """A 40 kB tmpfs fills halfway through (the whole video is about 80 kB). Seen before: `errors 0, written 150`, exit 0 and an
    undecodable file."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "40k"):
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        stats = tmp_path / "stats.json"
        p = engine_run("--frames", "150", "--size", "128", "--set", "fx.perturb=1", "--sink", f"file:{disk / 'show.mp4'}",
                       "--stats-json", str(stats), cwd=tmp_path)
        assert p.returncode == 1, (p.returncode, p.stderr[-3000:])
        (line,) = error_lines(p.stderr)
        assert "a recording was lost" in line, p.stderr
        st = next(iter(json.loads(stats.read_text())["sink_stats"].values()))
        assert st["failed"] and st["written"] < 150, st
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _start_show(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, list[str]]:
    """A live (wall-clock, paced) show with a status line every 2 s on a pipe; returns once the first line is out."""
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "--size", "64", "--osc-port", "0", "--fps", "30", *args],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if " fps | " in line:
                started.set()

    threading.Thread(target=read, daemon=True).start()
    assert started.wait(120), "".join(lines)
    return proc, lines


def test_a_closed_terminal_ends_the_show_like_ctrl_c(tmp_path):
    """SIGHUP (an ssh session or terminal window closed): seen before, exit 129 and a 48-byte undecodable mp4."""
    out, stats = tmp_path / "show.mp4", tmp_path / "stats.json"
    proc, lines = _start_show(tmp_path, "--sink", f"file:{out}", "--stats-json", str(stats))
    time.sleep(1.0)
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(120) == 0, "".join(lines)
    assert decoded_frames(out) > 10
    assert json.loads(stats.read_text())["frames"] > 10


def test_a_signal_during_setup_stops_a_long_load_at_once(tmp_path):
    """A generator that takes minutes to load (a huge or hostile file) must not keep the process after SIGTERM."""
    script = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
import engine.loop
real = engine.loop.create_generator
def slow(*args, **kwargs):
    print("loading", flush=True)
    for _ in range(6000):  # 10 minutes of Python-level work, as a pickle walk or a weight read is
        time.sleep(0.1)
    return real(*args, **kwargs)
engine.loop.create_generator = slow
from engine.cli import main
raise SystemExit(main(["run", "--frames", "3", "--size", "64", "--sink", "null", "--osc-port", "0"]))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "loading"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    assert time.monotonic() - t0 < 5, "setup kept going after SIGTERM"
    assert rc == 130, proc.stderr.read()
    assert "interrupted" in proc.stderr.read()
