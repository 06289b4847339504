"""trt_build on CPU: module calls recorded from a real frame, exported to ONNX and checked against PyTorch with ONNX
Runtime (tiny StyleGAN2 and tiny sd-turbo-shaped diffusion), the cache keyed by everything that changes an artefact,
and the one-line errors of `engine trt` / `--backend tensorrt` where TensorRT or CUDA is missing. Building and running
TensorRT plans needs a GPU with TensorRT and is not tested here (README: what is verified)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxscript")  # torch.onnx's dynamo exporter
pytest.importorskip("onnxruntime")

from engine.trt_build.cache import Target, entry_for  # noqa: E402
from engine.trt_build.prepare import prepare  # noqa: E402
from engine.trt_build.record import record_calls  # noqa: E402

from engine.errors import SetupError  # noqa: E402
from engine.generators import create_generator  # noqa: E402
from engine.params import Params, with_values  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
TINY = {"channel_base": 1024, "channel_max": 32}
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def tiny_sg2(size: int = 64, **options):
    return create_generator("stylegan2", size=size, device=CPU, options={**TINY, **options})


def test_record_sees_each_module_call_signature_and_bakes_empty_inputs():
    g = tiny_sg2()
    calls = record_calls(g)
    assert set(calls) == {"mapping", "synthesis"} and all(len(c) == 1 for c in calls.values())
    mapping = calls["mapping"][0]
    # z (1, 512), the unconditional label (1, 0) and psi as a 0-d tensor: the empty label is no engine input
    assert [tuple(x.shape) for x in mapping.inputs] == [(1, 512), (1, 0), ()]
    assert [tuple(x.shape) for x in mapping.fed] == [(1, 512), ()]
    assert "forward" not in g.net.mapping.__dict__  # recorders removed
    # the governor's render scales are further synthesis signatures (drop_blocks is baked into each graph)
    with_variants = record_calls(g, g.shape_variants(Params()))
    assert len(with_variants["synthesis"]) == 1 + g.max_resolution_drop and len(with_variants["mapping"]) == 1


def test_stylegan2_exports_match_pytorch_in_onnx_runtime_and_come_back_from_the_cache(tmp_path):
    g = tiny_sg2()
    lines: list[str] = []
    first = prepare(g, cache_dir=tmp_path, build=False, check=True, say=lines.append)
    assert [p.call.role for p in first] == ["mapping", "synthesis"]
    assert all("onnx exported" in l and "ONNX Runtime matches PyTorch" in l for l in lines), lines
    onnx = first[1].entry.onnx
    assert onnx.exists() and onnx.with_name("model.onnx.data").exists()
    stamp = onnx.stat().st_mtime_ns
    lines.clear()
    again = prepare(tiny_sg2(), cache_dir=tmp_path, build=False, say=lines.append)  # a new generator, same weights
    assert all("onnx cached" in l for l in lines) and again[1].entry.onnx == onnx and onnx.stat().st_mtime_ns == stamp
    assert not list(tmp_path.rglob(".export-*")), "no scratch folders are left behind"


@pytest.mark.slow
def test_diffusion_unet_and_taesd_export_and_match(tmp_path):
    pytest.importorskip("diffusers")
    from tiny_diffusion import SIZE, save_tiny_model

    model = save_tiny_model(tmp_path / "tiny-sd-turbo")
    g = create_generator(f"diffusion:{model}", size=SIZE, device=CPU)
    lines: list[str] = []
    prepared = prepare(g, cache_dir=tmp_path / "cache", build=False, check=True, say=lines.append)
    assert {p.call.role for p in prepared} == {"unet", "vae_encoder", "vae_decoder"}
    assert all("ONNX Runtime matches PyTorch" in l for l in lines), lines


def test_cache_keys_follow_weights_shapes_and_target(tmp_path):
    def entry(g, target):
        return entry_for(record_calls(g)["synthesis"][0], target, tmp_path)

    t16 = Target("fp16", "10.9.0", "NVIDIA H200 (sm_90)")
    a, b = entry(tiny_sg2(), t16), entry(tiny_sg2(), t16)
    assert (a.onnx_key, a.plan_key, a.folder) == (b.onnx_key, b.plan_key, b.folder)  # same inputs, same artefacts
    assert a.folder.name.startswith("synthesis-") and a.plan.suffix == ".plan"
    other_weights = entry(tiny_sg2(init_seed=1), t16)
    bigger = entry(tiny_sg2(size=128), t16)
    assert len({a.onnx_key, other_weights.onnx_key, bigger.onnx_key}) == 3
    edited = tiny_sg2()
    with torch.no_grad():
        edited.net.synthesis.b8.conv0.bias.add_(0.01)
    assert entry(edited, t16).onnx_key != a.onnx_key  # a changed weight is a different engine
    for target in (Target("fp32", "10.9.0", "NVIDIA H200 (sm_90)"), Target("fp16", "10.10.0", "NVIDIA H200 (sm_90)"),
                   Target("fp16", "10.9.0", "NVIDIA GeForce RTX 4090 (sm_89)"), Target("fp16", "10.9.0", "NVIDIA H200 (sm_90)", workspace_gb=4)):
        e = entry(tiny_sg2(), target)
        assert e.onnx_key == a.onnx_key and e.plan_key != a.plan_key  # same graph, another plan
    # a timing cache belongs to one TensorRT version on one GPU model, whatever the precision
    assert Target("fp32", "10.9.0", "NVIDIA H200 (sm_90)").timing_cache_name == t16.timing_cache_name
    assert Target("fp16", "10.10.0", "NVIDIA H200 (sm_90)").timing_cache_name != t16.timing_cache_name


def test_auto_precision_is_the_weights_own():
    from engine.trt_build.prepare import resolve_precision

    g = tiny_sg2()
    assert resolve_precision("auto", g) == "fp32"  # StyleGAN's fp16 layers need their own pre-normalisation
    assert resolve_precision("fp16", g) == "fp16"
    for m in g.modules().values():
        m.half()
    assert resolve_precision("auto", g) == "fp16"
    with pytest.raises(SetupError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", g)


def test_an_export_that_fails_is_one_line_and_leaves_nothing_that_looks_cached(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        (Path(args[2]).parent / "model.onnx.data").write_bytes(b"partial")
        raise RuntimeError("exporter crashed\nwith a long trace")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(SetupError) as e:
        prepare(tiny_sg2(), cache_dir=tmp_path, build=False)
    assert "\n" not in str(e.value) and "ONNX export of mapping(" in str(e.value) and "exporter crashed" in str(e.value)
    assert not list(tmp_path.rglob("model.onnx")) and not list(tmp_path.rglob(".export-*"))


def test_weights_edited_tracks_live_edits():
    g = tiny_sg2()
    t = 0.0
    assert not g.weights_edited
    g.update_tools(with_values(Params(), {"stylegan.edits": "b8.conv0.bias += 0.5"}).stylegan, t)
    assert g.weights_edited  # a TensorRT plan has the old bias baked in: the runner goes eager
    g.update_tools(Params().stylegan, t)
    assert not g.weights_edited


def _engine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_engine_trt_onnx_only_then_without_tensorrt(tmp_path):
    proc = _engine("trt", "--size", "64", "--device", "cpu", "--onnx-only", "--check", "--cache", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("ONNX Runtime matches PyTorch") == 2 and "2 ONNX graphs ready" in proc.stdout
    if HAS_TENSORRT:
        pytest.skip("TensorRT is installed here: the missing-TensorRT message cannot be shown")
    proc = _engine("trt", "--size", "64", "--device", "cpu", "--flavor", "trt", "--cache", str(tmp_path))
    assert proc.returncode == 2
    errors = [l for l in proc.stderr.splitlines() if l.startswith("engine: error:")]
    assert len(errors) == 1 and "TensorRT is not installed" in errors[0] and "pip install" in errors[0]
    assert "ONNX graphs are ready" in errors[0] and proc.stdout.count("onnx cached") == 2


def test_backend_tensorrt_without_cuda_is_one_line():
    proc = _engine("run", "--backend", "tensorrt", "--device", "cpu", "--size", "64", "--frames", "1", "--sink", "null",
                   "--osc-port", "0", "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("engine: error: --backend tensorrt needs a CUDA device (the generator "
                                                     "is on cpu); use --backend compile or eager")
