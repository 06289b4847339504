#!/usr/bin/env bash
# Run the ePaper frame against an engine serve:  bash engine/clients/epaper/run.sh http://SERVER:8000 [options]
# Options go to python3 -m engine.clients.epaper (--token, --caption, --auto-minutes, --panel png:FOLDER, ...; see
# --help). Uses the environment setup.sh made (~/.venv-frame, FRAME_VENV=DIR) and this clone's code.
set -euo pipefail
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: bash $0 http://SERVER:8000 [options]   (the address engine serve prints)" >&2
  exit 2
fi
VENV=${FRAME_VENV:-$HOME/.venv-frame}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "frame: no environment at $VENV: run bash $(dirname "$0")/setup.sh first" >&2; exit 2; }
SERVER=$1
shift
cd "$ROOT"
exec env PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m engine.clients.epaper --server "$SERVER" "$@"
