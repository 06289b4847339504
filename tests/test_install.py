"""What a fresh machine installs: the wheel's import names, our kernels beside Hugging Face's `kernels` package, a
command line that does not load torch before the thread settings are made, and no private names imported across
packages."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python(code: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, **(env or {})))


def test_the_wheel_exposes_only_engine_and_carries_kernels_trt_build_and_shaders(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    (wheel,) = tmp_path.glob("engine-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"engine", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, sorted(top)
    for need in ("engine/kernels/layout.py", "engine/kernels/layout_triton.py", "engine/trt_build/prepare.py",
                 "engine/trt_build/cli.py", "engine/_shaders/fullscreen.vert", "engine/_shaders/blend.frag",
                 "engine/threads.py", "engine/options.py"):
        assert need in names, need
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # No __init__.py in the repository folders, so none in the wheel either: `import kernels` must never be ours.
    assert "engine/kernels/__init__.py" not in names and not (ROOT / "kernels" / "__init__.py").exists()


# Imports as transformers 5 does them: Hugging Face's `kernels` package must win over our kernels/ folder, and ours
# must still be engine.kernels, both from the repository root (cwd first on sys.path, as `python -m pytest` has it)
# and from elsewhere with the repository after site-packages (as the editable install's .pth puts it).
CHECK_IMPORTS = r"""
import importlib.util, sys
from pathlib import Path
root = Path(sys.argv[1]).resolve()
if sys.argv[2] == "append":
    sys.path.append(str(root))
import engine.kernels.layout, engine.trt_build.prepare
assert Path(engine.kernels.layout.__file__).resolve().parent == root / "kernels", engine.kernels.layout.__file__
assert Path(engine.trt_build.prepare.__file__).resolve().parent == root / "trt_build"
spec = importlib.util.find_spec("kernels")
theirs = spec is not None and spec.origin not in (None, "namespace")
if theirs:
    assert Path(spec.origin).resolve().parent != root / "kernels", f"`import kernels` found ours: {spec.origin}"
import transformers
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel
print("ok", transformers.__version__, "hf-kernels" if theirs else "no-hf-kernels")
"""


@pytest.mark.parametrize("where", ["repository root", "elsewhere"])
def test_diffusers_and_our_kernels_import_side_by_side(where, tmp_path):
    pytest.importorskip("diffusers", reason="the diffusion extra is not installed")
    cwd, mode = (ROOT, "cwd") if where == "repository root" else (tmp_path, "append")
    p = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, str(ROOT), mode], cwd=cwd, capture_output=True, text=True,
                       timeout=600, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.startswith("ok"), p.stdout
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:  # transformers 5 requires Hugging Face's kernels
        assert "hf-kernels" in p.stdout.split()


def test_the_command_line_parses_without_loading_torch():
    """engine.threads sets OpenMP's wait policy before torch loads: parsing the command line must not load it."""
    p = python("import sys, engine.cli; engine.cli.build_parser().parse_args(['run', '--threads', '1']); "
               "print(sorted(m for m in ('torch', 'numpy', 'moderngl') if m in sys.modules))", ROOT)
    assert p.returncode == 0, p.stderr
    assert "torch" not in p.stdout, p.stdout


def _module_path(module: str) -> Path:
    """engine.a.b -> ROOT/engine/a/b (engine.kernels and engine.trt_build are the repository's top-level folders)."""
    parts = module.split(".")
    if parts[:2] in (["engine", "kernels"], ["engine", "trt_build"]):
        parts = parts[1:]
    return ROOT.joinpath(*parts)


def _package_of(module: str) -> str:
    return module if _module_path(module).is_dir() else module.rpartition(".")[0]


def test_no_module_imports_a_private_name_from_another_package():
    """Rule of the codebase: a private (underscore) name stays in its package; shared helpers get public names."""
    offenders = []
    for folder in ("engine", "kernels", "trt_build", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[0] in ("kernels", "trt_build"):
                parts.insert(0, "engine")
            package = ".".join(parts[:-1])
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                # Third-party privates (numpy's pickle reconstructor) are the unpickler's business: engine only.
                if not isinstance(node, ast.ImportFrom) or node.level or not (node.module or "").startswith("engine"):
                    continue
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and _package_of(node.module) != package:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {alias.name}")
    assert not offenders, "\n".join(offenders)
