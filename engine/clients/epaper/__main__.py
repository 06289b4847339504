"""python3 -m engine.clients.epaper --server http://SERVER:8000 [options]: the picture frame (see __init__.py)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading


def parse_args(argv=None) -> argparse.Namespace:
    from engine.clients.epaper.inputs import ACTIONS, DEFAULT_PINS

    p = argparse.ArgumentParser(prog="python3 -m engine.clients.epaper",
                                description="Seed 004's ePaper frame: four buttons and a microphone ask engine serve for art.")
    p.add_argument("--server", required=True, metavar="URL", help="engine serve's address, e.g. http://192.168.1.20:8000")
    p.add_argument("--token", default=None, metavar="TOKEN", help="the server's --token, if it has one")
    p.add_argument("--panel", default="auto", metavar="auto|png:FOLDER[@WxH[:PALETTE]]",
                   help="auto: the Inky panel on this Pi; png:FOLDER writes each refresh as a PNG (no panel needed)")
    p.add_argument("--palette", default=None, metavar="NAME",
                   help="the server's dithering palette (default: the panel's: inky7 for 7-colour panels, bw, bwr)")
    p.add_argument("--pins", default=",".join(map(str, DEFAULT_PINS)), metavar="A,B,C,D",
                   help=f"GPIO numbers of the four buttons: {', '.join(ACTIONS)} (default the Inky Impression's 5,6,16,24)")
    p.add_argument("--no-buttons", action="store_true", help="no GPIO (a desktop try-out: use --press)")
    p.add_argument("--mic", default="default", metavar="default|DEVICE|FILE.wav",
                   help="the microphone (sounddevice's default input, a device name or number) or a WAV file standing in")
    p.add_argument("--record-seconds", type=float, default=3.0, metavar="S", help="how long the speak button records (default 3)")
    p.add_argument("--auto-minutes", type=float, default=30.0, metavar="MIN",
                   help="auto mode: the server makes a picture this often (default 30; at least 5 s)")
    p.add_argument("--poll-seconds", type=float, default=60.0, metavar="S", help="auto mode: how often to look for it (default 60)")
    p.add_argument("--caption", action="store_true", help="write the prompt under the picture")
    p.add_argument("--press", action="append", choices=ACTIONS, default=[], metavar="ACTION",
                   help=f"act as if this button was pressed, then go on ({', '.join(ACTIONS)}); with --once, exit after")
    p.add_argument("--once", action="store_true", help="handle the --press actions and exit (cron, tests)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    ns = p.parse_args(argv)
    try:
        ns.pins = tuple(int(x) for x in ns.pins.split(","))
    except ValueError:
        p.error(f"--pins {ns.pins!r}: four GPIO numbers separated by commas, e.g. 5,6,16,24")
    if len(ns.pins) != len(ACTIONS):
        p.error(f"--pins needs {len(ACTIONS)} GPIO numbers ({', '.join(ACTIONS)}), got {len(ns.pins)}")
    for flag in ("record_seconds", "auto_minutes", "poll_seconds"):
        if not getattr(ns, flag) > 0:
            p.error(f"--{flag.replace('_', '-')} must be more than 0")
    return ns


def main(argv=None) -> int:
    ns = parse_args(argv)
    logging.basicConfig(level=logging.INFO if ns.verbose else logging.WARNING, format="%(message)s")
    from engine.clients.epaper.client import ArtClient
    from engine.clients.epaper.frame import Frame
    from engine.clients.epaper.inputs import Buttons, Microphone, WavFile
    from engine.clients.epaper.panels import open_panel

    panel = open_panel(ns.panel)
    mic = None
    if ns.mic.lower().endswith(".wav"):
        mic = WavFile(ns.mic)
    elif not (ns.once and "speak" not in ns.press):
        try:
            mic = Microphone(None if ns.mic == "default" else int(ns.mic) if ns.mic.isdigit() else ns.mic)
        except SystemExit as e:
            logging.getLogger("frame").warning("%s; the speak button is off", e)
    stop = threading.Event()  # SIGTERM (systemd stopping the frame) also ends a retry wait at once
    client = ArtClient(ns.server, token=ns.token, palette=ns.palette or panel.palette, panel=tuple(panel.size),
                       sleep=stop.wait)
    frame = Frame(client, panel, mic, record_seconds=ns.record_seconds, auto_minutes=ns.auto_minutes,
                  poll_seconds=ns.poll_seconds, caption=ns.caption)
    for action in ns.press:
        frame.press(action)
    if ns.once:
        ok = [frame.handle(frame.events.get()) for _ in range(frame.events.qsize())]
        return 0 if all(ok) else 1
    buttons = None if ns.no_buttons else Buttons(frame.press, ns.pins)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"frame: {type(panel).__name__} {panel.size[0]}x{panel.size[1]}, server {client.server}; buttons "
          f"{'off' if buttons is None else ns.pins}; Ctrl-C stops", flush=True)
    try:
        frame.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        if buttons is not None:
            buttons.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
