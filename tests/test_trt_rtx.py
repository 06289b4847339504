"""TensorRT for RTX (issue 14): engines built for real on this CPU-only machine, one per network with an
optimisation profile, their manifest checked against the ONNX graphs; a show machine's checks refuse a stale or
foreign folder with one line; the flavour choice. Running the engines needs an RTX GPU: the last test is marked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.errors import SetupError, UsageError
from engine.trt_build.flavors import FLAVORS, resolve_flavor, rtx_supports

pytest.importorskip("onnx")
RTX = FLAVORS["rtx"]
if not RTX.available():
    pytest.skip("TensorRT for RTX is not installed (pip install 'engine[rtx]')", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
TINY_SG2 = dict(channel_base=512, channel_max=16, calibrate=False)


def engine(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def onnx_io(path: Path):
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    init = {i.name for i in g.initializer}

    def dims(v):
        return [d.dim_param if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]

    return ({i.name: (i.type.tensor_type.elem_type, dims(i)) for i in g.input if i.name not in init},
            {o.name: (o.type.tensor_type.elem_type, dims(o)) for o in g.output})


ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 7: "int64", 6: "int32"}


def check_manifest_against_onnx(folder: Path) -> dict:
    m = json.loads((folder / "manifest.json").read_text())
    assert m["flavor"] == "rtx" and m["flavor_version"] == RTX.version() and m["compute_capabilities"]
    for e in m["engines"]:
        engine_file = folder / e["file"]
        assert engine_file.is_file() and engine_file.stat().st_size == e["bytes"] > 0
        inputs, outputs = onnx_io(folder / e["onnx"])
        for spec in e["inputs"]:
            if spec["name"] not in inputs:
                continue  # dropped by the exporter (unused): the engine does not take it either
            elem, dims = inputs[spec["name"]]
            assert ONNX_DTYPES[elem] == spec["dtype"], (e["role"], spec)
            assert len(dims) == len(spec["opt"])
            for d, lo, opt, hi in zip(dims, spec["min"], spec["opt"], spec["max"]):
                if isinstance(d, str):  # a dynamic axis: the profile spans it
                    assert lo <= opt <= hi, (e["role"], spec)
                else:
                    assert d == lo == opt == hi, (e["role"], spec)
        assert [o["name"] for o in e["outputs"]] == list(outputs)
        for o in e["outputs"]:
            assert ONNX_DTYPES[outputs[o["name"]][0]] == o["dtype"]
    return m


def test_stylegan2_mapping_and_synthesis_build_on_this_cpu(tmp_path):
    cfg = tmp_path / "fast.toml"
    cfg.write_text("[generator]\n" + "".join(f"{k} = {str(v).lower()}\n" for k, v in TINY_SG2.items()))
    out = tmp_path / "sg2"
    p = engine("trt", "--generator", "stylegan2", "--size", "64", "--flavor", "rtx", "--out", str(out), "--device", "cpu",
               "--config", str(cfg))
    assert p.returncode == 0, p.stderr[-2000:]
    m = check_manifest_against_onnx(out)
    assert {e["role"] for e in m["engines"]} == {"mapping", "synthesis"}
    assert m["compute_capabilities"] == ["SM86", "SM89", "SM120"]  # float32: no Turing (no FP32 GEMM there)
    assert all(s["min"] == s["max"] for e in m["engines"] for s in e["inputs"])  # StyleGAN: static
    assert "float32 graphs: built for SM86, SM89 and SM120" in p.stdout and "engine run --generator stylegan2" in p.stdout

    # The show machine's checks, on any machine: these engines, this generator -> only the GPU is missing here.
    run = engine("run", "--generator", "stylegan2", "--size", "64", "--config", str(cfg), "--engines", str(out),
                 "--frames", "1", "--sink", "null", "--osc-port", "0")
    assert run.returncode == 2 and "the engines match this generator, but running them needs a CUDA GPU" in run.stderr
    other = engine("run", "--generator", "stylegan2", "--size", "64", "--engines", str(out), "--frames", "1", "--sink",
                   "null", "--osc-port", "0")  # the full-width default network: other weights
    assert other.returncode == 2 and "mapping was built from other weights" in other.stderr and other.stderr.count("\n") == 1
    wrong = engine("run", "--generator", "stylegan2", "--size", "64", "--config", str(cfg), "--engines", str(out),
                   "--backend", "eager", "--frames", "1", "--sink", "null", "--osc-port", "0")
    assert wrong.returncode == 2 and "--engines is for --backend tensorrt" in wrong.stderr


def test_stylegan3_builds(tmp_path):
    from engine.generators import stylegan3 as s3
    from engine.generators.stylegan import StyleGANGenerator
    from engine.trt_build.engines import build_folder

    torch.manual_seed(0)
    net = s3.Generator(**s3.config_kwargs("t", 64, z_dim=32, w_dim=32, channel_base=512, channel_max=16)).eval()
    gen = StyleGANGenerator(net, size=None, device=CPU, source="tiny stylegan3")
    lines = []
    m = build_folder(gen, tmp_path / "sg3", RTX, spec="tiny", say=lines.append)
    assert {e["role"] for e in m["engines"]} == {"mapping", "synthesis"}
    check_manifest_against_onnx(tmp_path / "sg3")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tiny_diffusion import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_diffusion_unet_and_taesd_with_dynamic_profiles(tmp_path, tiny_model):
    out = tmp_path / "diff"
    p = engine("trt", "--generator", f"diffusion:{tiny_model}", "--flavor", "rtx", "--out", str(out), "--device", "cpu",
               "--sides", "32:128", "--max-batch", "8")
    assert p.returncode == 0, p.stderr[-2000:]
    m = check_manifest_against_onnx(out)
    roles = {e["role"]: e for e in m["engines"]}
    assert set(roles) == {"unet", "vae_encoder", "vae_decoder"}
    unet = {s["name"]: s for s in roles["unet"]["inputs"]}
    assert unet["in0"]["min"] == [1, 4, 4, 4] and unet["in0"]["max"] == [8, 4, 16, 16] and unet["in0"]["opt"] == [1, 4, 8, 8]
    assert roles["vae_encoder"]["inputs"][0]["max"] == [8, 3, 128, 128]  # the encoder takes images: pixels
    # One folder serves other sizes within the range (16:9 and portrait) and refuses one outside it.
    ok = engine("run", "--generator", f"diffusion:{tiny_model}", "--size", "96x64", "--engines", str(out), "--frames", "1",
                "--sink", "null", "--osc-port", "0")
    assert "needs a CUDA GPU" in ok.stderr, ok.stderr
    ok = engine("run", "--generator", f"diffusion:{tiny_model}", "--size", "64x128", "--engines", str(out), "--frames", "1",
                "--sink", "null", "--osc-port", "0")
    assert "needs a CUDA GPU" in ok.stderr, ok.stderr
    big = engine("run", "--generator", f"diffusion:{tiny_model}", "--size", "512", "--engines", str(out), "--frames", "1",
                 "--sink", "null", "--osc-port", "0")
    errors = [line for line in big.stderr.splitlines() if line.startswith("engine:")]
    assert big.returncode == 2 and len(errors) == 1 and "is outside the engine's profile" in errors[0]


def test_an_fp16_model_builds_for_turing_too(tmp_path, tiny_model):
    out = tmp_path / "fp16"
    p = engine("trt", "--generator", f"diffusion:{tiny_model}", "--flavor", "rtx", "--out", str(out), "--device", "cpu",
               "--precision", "fp16", "--sides", "64:64", "--targets", "SM75,SM89")
    assert p.returncode == 0, p.stderr[-2000:]
    m = check_manifest_against_onnx(out)
    assert m["compute_capabilities"] == ["SM75", "SM89"] and {e["precision"] for e in m["engines"]} == {"float16"}
    p = engine("trt", "--generator", f"diffusion:{tiny_model}", "--flavor", "rtx", "--out", str(tmp_path / "x"), "--device",
               "cpu", "--targets", "SM75")
    assert p.returncode == 2 and "no float32 matrix products on Turing" in p.stderr


def test_a_stale_or_foreign_folder_is_refused_with_one_line(tmp_path):
    from engine.generators import create_generator
    from engine.trt_build.engines import build_folder, check_folder

    gen = create_generator("stylegan2", size=64, device=CPU, options=dict(TINY_SG2))
    folder = tmp_path / "f"
    build_folder(gen, folder, RTX, spec="stylegan2")
    assert check_folder(folder, gen, RTX)["flavor"] == "rtx"
    manifest = json.loads((folder / "manifest.json").read_text())

    def refused(edit, match):
        m = json.loads(json.dumps(manifest))
        edit(m)
        (folder / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(SetupError, match=match):
            check_folder(folder, gen, RTX)

    refused(lambda m: m.update(flavor_version="1.6.0.1"), r"built with TensorRT for RTX 1\.6\.0\.1, 1\.7.* is installed")
    refused(lambda m: m.update(flavor="trt"), "built for trt, this run uses rtx")
    refused(lambda m: m["engines"][0]["inputs"][0].update(dtype="float16"), "is float16 in the engine, float32 in the show")
    refused(lambda m: m["engines"].pop(1), "no engine for synthesis")
    refused(lambda m: m.update(format=99), "not an engine folder manifest")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "synthesis.engine").unlink()
    with pytest.raises(SetupError, match="synthesis.engine is missing"):
        check_folder(folder, gen, RTX)


def test_flavor_choice():
    flavor, why = resolve_flavor("auto", CPU)
    assert flavor.name == "rtx" and "no CUDA device here" in why
    with pytest.raises(UsageError, match="--flavor 'tensorrt'"):
        resolve_flavor("tensorrt", CPU)
    if shutil.which("nvidia-smi") is None:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            with pytest.raises(SetupError, match="TensorRT is not installed.*pypi.nvidia.com"):
                resolve_flavor("trt", CPU)
    assert rtx_supports((8, 9)) and rtx_supports((12, 0)) and rtx_supports((7, 5))
    assert not rtx_supports((9, 0)) and not rtx_supports((10, 0))  # Hopper, datacentre Blackwell
    p = engine("trt", "--generator", "stylegan2", "--flavor", "rtx", "--size", "64")
    assert p.returncode == 2 and "add --out DIR" in p.stderr
    p = engine("trt", "--generator", "stylegan2", "--flavor", "rtx", "--size", "64", "--out", "/tmp/x", "--refit")
    if not torch.cuda.is_available():
        assert p.returncode == 2 and "cannot build refittable engines without a GPU" in p.stderr


@pytest.mark.gpu
def test_engines_run_on_an_rtx_gpu(tmp_path, tiny_model):
    """On an RTX card (TensorRT for RTX does not run on Hopper): the folder built on the CPU renders what eager does."""
    if not rtx_supports(torch.cuda.get_device_capability()):
        pytest.skip("TensorRT for RTX runs on RTX/GeForce compute capabilities only")
    out = tmp_path / "gpu"
    p = engine("trt", "--generator", f"diffusion:{tiny_model}", "--flavor", "rtx", "--out", str(out), "--device", "cpu",
               "--sides", "64:64")
    assert p.returncode == 0, p.stderr
    run = engine("run", "--generator", f"diffusion:{tiny_model}", "--engines", str(out), "--frames", "5", "--sink", "null",
                 "--osc-port", "0", "--stats-json", str(tmp_path / "s.json"))
    assert run.returncode == 0, run.stderr
    assert "tensorrt (TensorRT for RTX" in json.loads((tmp_path / "s.json").read_text())["backend"]


def test_refit_names_map_onnx_initializers_to_the_module_weights(tmp_path):
    """What a refit updates: the exported graph's initializers that are the module's own weights, by torch name."""
    from engine.generators import create_generator
    from engine.trt_build.onnx_export import export_onnx, weight_names
    from engine.trt_build.record import record_calls

    gen = create_generator("stylegan2", size=64, device=CPU, options=dict(TINY_SG2))
    call = record_calls(gen)["synthesis"][0]
    path = tmp_path / "synthesis.onnx"
    export_onnx(call, path)  # the exporter's optimiser folds weight expressions into anonymous constants
    folded = weight_names(call, path)
    export_onnx(call, path, keep_weight_names=True)  # what --refit exports
    names = weight_names(call, path)
    state = call.module.state_dict()
    assert set(names.values()) <= set(state) and len(names) > len(folded)
    assert {n for n in state if n.endswith(".weight")} <= set(names.values())  # every weight refittable by name
    assert any(v.endswith("conv1.weight") for v in names.values()) and any("affine" in v for v in names.values())
