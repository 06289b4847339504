#!/usr/bin/env bash
# One-time setup of the ePaper frame on a Raspberry Pi (Raspberry Pi OS Bookworm or newer), from a clone of this
# repository: enables SPI and I2C for the Inky panel, installs PortAudio for the microphone, and makes a virtual
# environment (~/.venv-frame, FRAME_VENV=DIR elsewhere) with inky, gpiozero, sounddevice and Pillow. The frame needs
# nothing else of engine: no torch, no GPU. Then: bash engine/clients/epaper/run.sh http://SERVER:8000
set -euo pipefail
VENV=${FRAME_VENV:-$HOME/.venv-frame}
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

if command -v raspi-config >/dev/null; then
  echo "frame: enabling SPI and I2C (the Inky panel's buses)"
  $SUDO raspi-config nonint do_spi 0
  $SUDO raspi-config nonint do_i2c 0
else
  echo "frame: no raspi-config (not a Raspberry Pi?): enable SPI and I2C yourself for an Inky panel"
fi
APT="python3-venv python3-dev libportaudio2 fonts-dejavu-core"
# The GPIO pin library gpiozero uses on a Pi 5 and on Bookworm (lgpio) comes from Raspberry Pi OS's own packages.
if command -v raspi-config >/dev/null; then APT="$APT python3-lgpio"; fi
echo "frame: apt-get install $APT"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $APT >/dev/null
# --system-site-packages: reuse what Raspberry Pi OS ships system-wide (gpiozero, lgpio).
[ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
PACKAGES="pillow>=9 sounddevice>=0.4.6 gpiozero>=2.0"
if command -v raspi-config >/dev/null; then PACKAGES="$PACKAGES inky>=2.0"; fi
echo "frame: pip install $PACKAGES"
"$VENV/bin/pip" install -q $PACKAGES
echo "frame: ready; run: bash $(dirname "$0")/run.sh http://SERVER:8000   (the machine running engine serve)"
