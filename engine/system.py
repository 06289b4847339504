"""System services the outputs depend on: Avahi (mDNS) for NDI discovery on Linux.

NDI finds sources by mDNS. On Linux the NDI library does that through avahi-daemon, reached over the D-Bus
system bus; with no avahi-daemon running a sender still runs but no receiver ever sees it (checked here: a
cyndilib Finder on the same machine finds nothing within 8 s). Containers and CI images usually have neither
daemon running, so `ensure_avahi()` starts both when it can (root, packages installed) and otherwise says what
to do in one line.

Command line (for CI scripts):  python -m engine.system ensure-avahi   -> exit 0 when avahi is up, else 1 + reason
                                python -m engine.system check-avahi    -> same, but never starts anything
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

AVAHI_HINT = "NDI discovery needs avahi-daemon: apt-get install avahi-daemon dbus, then start dbus and avahi-daemon"

# Default socket paths of the Debian/Ubuntu/Fedora packages (/var/run is a link to /run on all of them).
DBUS_SYSTEM_SOCKET = Path("/run/dbus/system_bus_socket")
AVAHI_SOCKET = Path("/run/avahi-daemon/socket")


def _socket_answers(path: Path) -> bool:
    """True when a daemon accepts connections on the unix socket at `path`. A stale socket file left by a
    killed daemon exists but refuses connections, so existence alone is not enough."""
    if not path.exists():
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _dbus_socket() -> Path:
    # DBUS_SYSTEM_BUS_ADDRESS=unix:path=/some/socket overrides the default location.
    addr = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "")
    for part in addr.split(";"):
        if part.startswith("unix:"):
            for kv in part[len("unix:"):].split(","):
                if kv.startswith("path="):
                    return Path(kv[len("path="):])
    return DBUS_SYSTEM_SOCKET


def dbus_running() -> bool:
    return _socket_answers(_dbus_socket())


def avahi_running() -> bool:
    """avahi-daemon is up. Its client socket answers whichever way it was started (systemd, init script, us)."""
    return _socket_answers(AVAHI_SOCKET)


def avahi_problem() -> str | None:
    """None when NDI discovery can work on this machine, else the one-line reason. Never starts anything.
    Only Linux needs Avahi: macOS has Bonjour built in and the Windows NDI runtime brings its own mDNS."""
    if not sys.platform.startswith("linux"):
        return None
    if avahi_running() and dbus_running():
        return None
    return AVAHI_HINT


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def ensure_avahi(timeout: float = 10.0) -> str | None:
    """Make NDI discovery work: start the D-Bus system bus and avahi-daemon if they are installed but not
    running and we are root. Returns None on success, else a one-line reason saying what to do.

    Safe to call repeatedly and concurrently with other processes: a daemon that is already up is left alone
    (dbus-daemon and avahi-daemon both refuse to start a second copy)."""
    if not sys.platform.startswith("linux"):
        return None
    if avahi_running() and dbus_running():
        return None
    if os.geteuid() != 0:
        return f"{AVAHI_HINT} (as root, e.g. sudo service dbus start && sudo service avahi-daemon start)"
    missing = [b for b in ("dbus-daemon", "avahi-daemon") if shutil.which(b) is None]
    if missing:
        return f"{AVAHI_HINT} ({' and '.join(missing)} not installed)"

    sock = _dbus_socket()
    if not _socket_answers(sock):
        sock.parent.mkdir(parents=True, exist_ok=True)
        # A pid file left by a killed dbus-daemon makes the next one refuse to start; the socket not answering
        # means that daemon is gone, so the file is stale.
        pidfile = sock.parent / "pid"
        if pidfile.exists():
            pidfile.unlink()
        r = subprocess.run(["dbus-daemon", "--system", "--fork"], capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0 or not _wait(lambda: _socket_answers(sock), timeout):
            return f"{AVAHI_HINT} (dbus-daemon --system failed: {(r.stderr or r.stdout).strip() or r.returncode})"

    if not avahi_running():
        # --no-chroot: the chroot helper needs capabilities that containers often lack; --daemonize returns once
        # the daemon has forked. avahi-daemon refuses to start a second instance, so a race with another caller
        # ends with one daemon, which is all we need.
        r = subprocess.run(["avahi-daemon", "--daemonize", "--no-chroot"], capture_output=True, text=True, timeout=timeout)
        if not _wait(avahi_running, timeout):
            detail = (r.stderr or r.stdout).strip().splitlines()
            return f"{AVAHI_HINT} (avahi-daemon did not start: {detail[-1] if detail else r.returncode})"
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    cmd = args[0] if args else "check-avahi"
    if cmd == "ensure-avahi":
        reason = ensure_avahi()
    elif cmd == "check-avahi":
        reason = avahi_problem()
    else:
        print("usage: python -m engine.system [ensure-avahi|check-avahi]", file=sys.stderr)
        return 2
    if reason:
        print(f"engine.system: {reason}", file=sys.stderr)
        return 1
    print("engine.system: avahi-daemon is running (NDI discovery available)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
