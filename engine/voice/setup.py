"""`engine voice --setup parler`: the Parler-TTS environment, a virtual environment of its own (parler-tts pins
transformers==4.46.1 exactly; the engine needs a newer one), with torch and parler-tts. The voice process runs
parler_worker.py with that environment's Python."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from engine.errors import SetupError
from engine.voice.backends import default_parler_env, env_python


def setup_parler(env: Path | None, torch_spec: str | None) -> int:
    env = env or default_parler_env()
    python = env_python(env)
    if not python.is_file():
        print(f"engine voice: making {env}", flush=True)
        env.parent.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "venv", str(env)])
        if r.returncode != 0:
            raise SetupError(f"could not make a virtual environment at {env} (Debian/Ubuntu: apt-get install python3-venv)")
    if torch_spec is None:
        import torch

        torch_spec = f"torch=={torch.__version__.split('+')[0]}"  # the same torch as the engine (a local CPU wheel here)
    t0 = time.monotonic()
    for step in ([torch_spec], ["parler-tts"]):  # torch first, so parler-tts does not pull another one
        print(f"engine voice: pip install {' '.join(step)} into {env}", flush=True)
        r = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *step])
        if r.returncode != 0:
            raise SetupError(f"pip install {' '.join(step)} failed in {env} (see pip's output above)")
    check = subprocess.run([str(python), "-c", "import parler_tts, transformers; print(transformers.__version__)"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        raise SetupError(f"parler-tts is installed in {env} but does not import: {last}")
    print(f"engine voice: Parler-TTS ready in {env} (transformers {check.stdout.strip()}, {time.monotonic() - t0:.0f} s); "
          "run: engine voice --backend parler", flush=True)
    return 0
