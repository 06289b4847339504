"""Issue 15's picture frame (engine.clients.epaper) against a real `engine serve` on loopback with a tiny diffusion
model: buttons through gpiozero's own Button objects on its MockFactory pins, a panel that writes PNG files, the
microphone path with espeak-ng speech in a WAV file, auto mode, and the server going away and coming back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

try:  # diffusers before any GL context in this process (engine.generators.diffusion explains why)
    import diffusers  # noqa: F401
except ImportError:
    pass

from engine.clients.epaper.client import ArtClient, Backoff
from engine.clients.epaper.frame import Frame
from engine.clients.epaper.inputs import Buttons, WavFile
from engine.clients.epaper.panels import PngPanel
from engine.generators import create_generator
from engine.serve.palette import PALETTES
from engine.serve.service import Prompts
from serve_support import TINY_SG2, Server, free_port

REPO = Path(__file__).resolve().parents[1]
PANEL = (120, 80)
INKY7 = {tuple(c) for c in PALETTES["inky7"].output}


def colours(path: Path) -> set[tuple[int, int, int]]:
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (PANEL[1], PANEL[0], 3), img.shape
    return {tuple(int(v) for v in p) for p in np.unique(img.reshape(-1, 3), axis=0)}


def wait_for(cond, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def mock_pins():
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    old = Device.pin_factory
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = old


def press(factory, pin: int) -> None:
    p = factory.pin(pin)
    p.drive_low()  # pulled up: pressed is low
    time.sleep(0.15)
    p.drive_high()
    time.sleep(0.15)  # past the bounce time before the next press


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_the_frame_with_its_four_buttons_microphone_and_auto_mode(tmp_path, mock_pins):
    pytest.importorskip("pocketsphinx")
    pytest.importorskip("diffusers")
    from engine.serve.transcribe import choose
    from tiny_diffusion import save_tiny_model

    wav = tmp_path / "said.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "paint a red house by the sea"], check=True)
    prompts = Prompts.load(None)
    recogniser, note = choose("pocketsphinx", vocabulary=prompts.vocabulary())
    model = save_tiny_model(tmp_path / "tiny")
    s = Server(create_generator(f"diffusion:{model}", device=torch.device("cpu")), recogniser=recogniser, note=note)
    panel = PngPanel(tmp_path / "panel", PANEL, "inky7")
    client = ArtClient(s.url, palette=panel.palette, panel=panel.size, backoff=Backoff(first=0.1, longest=0.5, give_up=5))
    frame = Frame(client, panel, WavFile(wav), auto_minutes=5 / 60, poll_seconds=0.5, caption=False)
    buttons = Buttons(frame.press)  # the Inky Impression's pins 5, 6, 16, 24 on gpiozero's mock pins
    stop = threading.Event()
    worker = threading.Thread(target=frame.run, args=(stop,), daemon=True)
    worker.start()
    try:
        # B: a new prompt from the server's prompt file.
        press(mock_pins, 6)
        assert wait_for(lambda: frame.handled == 1 and panel.refreshes == 1)
        first_prompt, first_seed, first_id = frame.prompt, frame.seed, frame.shown_id
        assert first_prompt and first_prompt.count(",") == 2  # subject, style, modifier
        assert colours(tmp_path / "panel" / "0001.png") <= INKY7  # dithered by the server to the panel's inks

        # A: the same prompt again, a new seed: another picture of the same prompt.
        press(mock_pins, 5)
        assert wait_for(lambda: frame.handled == 2 and panel.refreshes == 2)
        assert frame.prompt == first_prompt and frame.seed != first_seed and frame.shown_id == first_id + 1
        assert s.service.latest.prompt == first_prompt  # the server was asked for that prompt

        # C: speak: the WAV stands in for the 3 s recording; the server hears the prompt-file words and paints them.
        press(mock_pins, 16)
        assert wait_for(lambda: frame.handled == 3 and panel.refreshes == 3)
        assert {"paint", "red", "house", "sea"} <= set(frame.prompt.split()), frame.prompt

        # D: auto mode on: the server makes a picture every 5 s on its own; the frame polls and shows it.
        press(mock_pins, 24)
        assert wait_for(lambda: frame.handled == 4 and frame.auto)
        assert wait_for(lambda: panel.refreshes == 4, timeout=60)
        assert colours(tmp_path / "panel" / "0004.png") <= INKY7
        refreshes = panel.refreshes
        time.sleep(1.5)  # polls in between with no new picture do not refresh the panel
        assert panel.refreshes == refreshes or panel.refreshes == refreshes + 1
        press(mock_pins, 24)  # and off
        assert wait_for(lambda: frame.handled == 5 and not frame.auto)
    finally:
        stop.set()
        worker.join(10)
        buttons.close()
        s.close()


def test_the_frame_keeps_its_picture_and_says_so_while_the_server_is_away(tmp_path):
    port = free_port()
    panel = PngPanel(tmp_path / "panel", PANEL, "bw")
    client = ArtClient(f"http://127.0.0.1:{port}", palette="bw", panel=PANEL,
                       backoff=Backoff(first=0.2, factor=1.5, longest=1.0, give_up=60))
    frame = Frame(client, panel)
    done = threading.Thread(target=frame.handle, args=("new",))
    done.start()
    # Nothing listens: the panel says so once (over a white page: there is no picture yet), and the client retries.
    assert wait_for(lambda: panel.refreshes == 1, timeout=20)
    assert "Cannot reach the art server" in frame.message
    assert colours(tmp_path / "panel" / "0001.png") <= {(0, 0, 0), (255, 255, 255)}
    time.sleep(1.0)
    assert panel.refreshes == 1  # retries do not redraw the panel
    # The server comes up on that port: the retry gets the picture, which replaces the message.
    s = Server(create_generator("stylegan2", size=64, device=torch.device("cpu"), options=dict(TINY_SG2)), port=port)
    try:
        done.join(60)
        assert not done.is_alive() and panel.refreshes == 2 and frame.message is None
        assert colours(tmp_path / "panel" / "0002.png") <= {(0, 0, 0), (255, 255, 255)}
        picture = np.asarray(Image.open(tmp_path / "panel" / "0002.png"))
    finally:
        s.close()
    # Gone again: the picture stays on the panel, with one line at the bottom saying so.
    client.backoff = Backoff(first=0.05, longest=0.1, give_up=0.3)
    frame.handle("same")
    assert panel.refreshes >= 3 and "Cannot reach the art server" in frame.message
    kept = np.asarray(Image.open(tmp_path / "panel" / "latest.png"))
    assert np.array_equal(kept[: PANEL[1] // 4], picture[: PANEL[1] // 4])  # above the strip: the picture, untouched
    assert not np.array_equal(kept, picture)


def test_the_command_line_once_with_a_png_panel_and_bad_options(tmp_path):
    s = Server(create_generator("stylegan2", size=64, device=torch.device("cpu"), options=dict(TINY_SG2)), token="t0k")
    try:
        cmd = [sys.executable, "-m", "engine.clients.epaper", "--server", s.url, "--token", "t0k",
               "--panel", f"png:{tmp_path / 'out'}@{PANEL[0]}x{PANEL[1]}:bwr", "--press", "new", "--press", "same",
               "--once", "--caption"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
        assert r.returncode == 0, r.stderr
        shots = sorted((tmp_path / "out").glob("0*.png"))
        assert len(shots) == 2 and all(colours(p) <= {(0, 0, 0), (255, 255, 255), (255, 0, 0)} for p in shots)
        # The frame imports nothing of engine beyond its own package: no torch on a Pi.
        probe = "import sys, engine.clients.epaper.__main__, engine.clients.epaper.frame; print('torch' in sys.modules)"
        assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO).stdout.strip() == "False"
        bad = subprocess.run([sys.executable, "-m", "engine.clients.epaper", "--server", s.url, "--pins", "5,6"],
                             capture_output=True, text=True, timeout=60, cwd=REPO)
        assert bad.returncode != 0 and "--pins needs 4 GPIO numbers" in bad.stderr
        wrong = subprocess.run(cmd[:5] + ["--panel", f"png:{tmp_path / 'x'}", "--press", "new", "--once"],
                               capture_output=True, text=True, timeout=60, cwd=REPO)
        assert wrong.returncode == 1 and "401" in wrong.stderr and "bearer token" in wrong.stderr  # no token
    finally:
        s.close()


def test_sigterm_ends_the_frame_even_while_it_waits_to_retry(tmp_path):
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "engine.clients.epaper", "--server", f"http://127.0.0.1:{free_port()}",
                             "--panel", f"png:{tmp_path}@{PANEL[0]}x{PANEL[1]}:bw", "--no-buttons", "--press", "new"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (tmp_path / "0001.png").exists(), timeout=60)  # "Cannot reach the art server"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0  # not after the backoff's minutes
    finally:
        proc.kill()


@pytest.mark.skipif(not (os.environ.get("CI") and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")),
                    reason="runs apt-get and pip like the Pi's setup: CI (root) only")
def test_the_setup_and_run_scripts_make_a_frame_environment_without_torch(tmp_path):
    """setup.sh as on a Pi (here without raspi-config: no inky, the rest the same), then run.sh against a real server."""
    venv = tmp_path / "venv-frame"
    env = dict(os.environ, FRAME_VENV=str(venv))
    env.pop("VIRTUAL_ENV", None)
    setup = subprocess.run(["bash", "engine/clients/epaper/setup.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=900)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "frame: ready" in setup.stdout
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import gpiozero, sounddevice, PIL"]).returncode == 0
    s = Server(create_generator("stylegan2", size=64, device=torch.device("cpu"), options=dict(TINY_SG2)))
    try:
        run = subprocess.run(["bash", str(REPO / "engine/clients/epaper/run.sh"), s.url, "--panel", f"png:{tmp_path / 'p'}@{PANEL[0]}x{PANEL[1]}:bw",
                              "--no-buttons", "--press", "new", "--once"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert colours(tmp_path / "p" / "0001.png") <= {(0, 0, 0), (255, 255, 255)}
    finally:
        s.close()
    usage = subprocess.run(["bash", str(REPO / "engine/clients/epaper/run.sh")], capture_output=True, text=True, env=env)
    assert usage.returncode == 2 and "usage:" in usage.stderr
