"""Print pip constraints pinning the lower bounds pyproject.toml claims for the libraries that break across versions,
so CI can prove the bottom of each range as it proves the top (the newest allowed versions, in .venv).

    python3 .ci/lowest.py > constraints.txt
"""

import re
import sys
import tomllib
from pathlib import Path

#: Libraries whose ranges are claimed (and so tested at both ends).
BOUNDED = ("numpy", "transformers", "diffusers", "accelerate", "peft", "onnx", "onnxscript", "onnxruntime")

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
requirements = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
pins = {}
for req in requirements:
    m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[[^]]*\])?\s*([^;]*)", req)
    name, spec = m.group(1).lower(), m.group(2)
    low = re.search(r">=\s*([0-9][^,\s]*)", spec)
    if name in BOUNDED and low:
        pins[name] = low.group(1)
missing = [n for n in BOUNDED if n not in pins]
if missing:
    sys.exit(f"lowest.py: no lower bound in pyproject.toml for {', '.join(missing)}")
for name, version in pins.items():
    print(f"{name}=={version}")
