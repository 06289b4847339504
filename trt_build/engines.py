"""A folder of engines built ahead of time, with its manifest: `engine trt --out DIR`, loaded by `engine run
--backend tensorrt --engines DIR`.

    DIR/<role>.engine      one engine per network (mapping, synthesis; unet, vae_encoder, vae_decoder), with one
                           optimisation profile (trt_build.profiles): the shapes of every show the ranges allow
    DIR/onnx/<role>.onnx   the graphs they were built from (kept: a rebuild for another TensorRT skips the export)
    DIR/manifest.json      per engine: file, network role, flavour and version, precision, compute-capability
                           targets, weights digest, every input (name, dtype, min/opt/max shape) and output (name,
                           dtype, shape at opt), build seconds and bytes; the refittable weights' names

A show machine's engine checks the folder against its generator and its TensorRT before loading anything
(`check_folder`): a different flavour or version, other weights, a call shape outside a profile or a dtype that
differs is refused with one line naming the mismatch, never loaded wrong.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from engine import __version__
from engine.errors import SetupError
from engine.trt_build.cache import weights_digest
from engine.trt_build.flavors import RTX_TARGETS, Flavor
from engine.trt_build.onnx_export import export_onnx, io_names, weight_names
from engine.trt_build.profiles import Profile, Ranges, TensorSpec, dtype_name, profile_for
from engine.trt_build.record import Call, record_calls

log = logging.getLogger("trt_build")

MANIFEST = "manifest.json"
FORMAT = 1


def build_folder(generator, out: Path, flavor: Flavor, *, spec: str, ranges: Ranges = Ranges(),
                 targets: tuple[str, ...] | None = None, refit: bool = False, variants=(), check: bool = False,
                 say: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Export and build one engine per module of `generator` into `out`; write and return the manifest."""
    trt = flavor.load()
    out = Path(out)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    if refit and flavor.cpu_build and not torch.cuda.is_available():
        raise SetupError("--refit: TensorRT for RTX 1.7 cannot build refittable engines without a GPU (the build fails; measured "
                         "here); build on the show machine with --refit, or without it (live blends and edits then run eager)")
    calls = record_calls(generator, variants)
    # Float32 weights mean float32 matrix products (the inputs may stay float32 in an fp16 model: timesteps).
    float32 = any(p.dtype == torch.float32 for m in generator.modules().values() for p in m.parameters())
    if flavor.cpu_build:
        if targets is None:
            # TensorRT for RTX cannot compile float32 matrix products for Turing (its Myelin compiler: "FP32 GEMM is not
            # supported" on SM75): a float32 model is built for the newer cards; an fp16 one for all four.
            targets = tuple(t for t in RTX_TARGETS if not (float32 and t == "SM75"))
            if float32:
                say("float32 graphs: built for SM86, SM89 and SM120 (Turing cards, SM75, need an fp16 model: "
                    "[generator] dtype = \"fp16\" for diffusion)")
        elif float32 and "SM75" in targets:
            raise SetupError("--targets SM75 with a float32 model: TensorRT for RTX has no float32 matrix products on Turing; "
                             "build an fp16 model (diffusion: [generator] dtype = \"fp16\") or drop SM75")
        targets = tuple(targets)
    elif targets:
        raise SetupError("--targets is for TensorRT for RTX (--flavor rtx); the full TensorRT builds for the GPU it runs on")
    else:
        if generator.device.type != "cuda":
            raise SetupError("the full TensorRT builds on the GPU it will run on: use --device cuda, or --flavor rtx to "
                             "build on this machine for RTX cards")
        major, minor = torch.cuda.get_device_capability(generator.device)
        targets = (f"SM{major}{minor}",)
    engines = []
    for role, role_calls in calls.items():
        call = role_calls[0]
        profile = profile_for(role, call.fed, ranges)
        _check_covers(role, profile.inputs, role_calls)
        onnx_path = out / "onnx" / f"{role}.onnx"
        t0 = time.perf_counter()
        try:
            export_onnx(call, onnx_path, dynamic_shapes=profile.dynamic_shapes, keep_weight_names=refit)
        except Exception as e:
            raise SetupError(f"ONNX export of {role} with {'a dynamic' if profile.dynamic else 'a static'} profile failed: "
                             f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}") from None
        export_s = time.perf_counter() - t0
        if check:
            from engine.trt_build.onnx_export import check_onnx

            diff = check_onnx(call, onnx_path)
            if diff is not None and not diff <= 1e-3 * (50 if call.outputs[0].dtype != torch.float32 else 1):
                raise SetupError(f"{role}: ONNX Runtime differs from PyTorch by {diff:.3g}; the export is wrong")
        weights = {p.dtype for p in call.module.parameters() if p.is_floating_point()}
        precision = dtype_name(weights.pop()) if len(weights) == 1 else "mixed" if weights else "float32"
        engine_path = out / f"{role}.engine"
        kept = graph_inputs(onnx_path)  # only inputs the graph kept get a profile (the exporter drops unused ones)
        from engine.trt_build.builder import build_plan

        seconds = build_plan(onnx_path, engine_path, precision={"float16": "fp16", "bfloat16": "bf16"}.get(precision, "fp32"),
                             label=f"{role} ({flavor.name})", flavor=flavor, targets=targets, refit=refit,
                             profile={s.name: (s.min, s.opt, s.max) for s in profile.inputs if s.name in kept})
        outputs = [{"name": n, "dtype": dtype_name(o.dtype), "shape_at_opt": list(o.shape)}
                   for n, o in zip(io_names(call)[1], call.outputs)]
        refit_names = weight_names(call, onnx_path) if refit else {}
        engines.append({
            "file": engine_path.name, "role": role, "onnx": f"onnx/{onnx_path.name}", "weights": weights_digest(call.module),
            "precision": precision, "inputs": [s.json() for s in profile.inputs], "outputs": outputs,
            "build_seconds": round(seconds, 2), "export_seconds": round(export_s, 2), "bytes": engine_path.stat().st_size,
            "refit": refit_names,
        })
        say(f"{role}: {engine_path.name} {engine_path.stat().st_size / 1e6:.1f} MB, built in {seconds:.1f} s "
            f"({'dynamic' if profile.dynamic else 'static'} profile, {len(refit_names)} refittable weights)")
    manifest = {
        "format": FORMAT, "engine": __version__, "flavor": flavor.name, "flavor_version": str(getattr(trt, "__version__", "?")),
        "generator": spec, "render_size": [generator.width, generator.height], "device_built_on": str(generator.device),
        "compute_capabilities": list(targets), "ranges": {"max_batch": ranges.max_batch, "min_side": ranges.min_side,
                                                          "max_side": ranges.max_side},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "engines": engines,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def graph_inputs(onnx_path: Path) -> set[str]:
    import onnx

    return {i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input}


def _check_covers(role: str, inputs: list[TensorSpec], calls: list[Call]) -> None:
    for call in calls:
        for spec, x in zip(inputs, call.fed):
            if not spec.covers(tuple(x.shape)):
                raise SetupError(f"{role}: the show calls it with {spec.name} {tuple(x.shape)}, outside the profile "
                                 f"{spec.min}..{spec.max}; widen --max-batch or --sides")


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise SetupError(f"--engines {folder}: no {MANIFEST}; build the folder with engine trt --out {folder}") from None
    except (OSError, ValueError) as e:
        raise SetupError(f"--engines {folder}: {MANIFEST} cannot be read ({e}); build the folder again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("engines"), list):
        raise SetupError(f"--engines {folder}: {MANIFEST} is not an engine folder manifest of format {FORMAT}; build it again")
    return manifest


def check_folder(folder: Path, generator, flavor: Flavor, variants=()) -> dict[str, Any]:
    """The manifest, after checking it serves this generator with this TensorRT. SetupError naming the first
    mismatch (a stale or foreign engine is never loaded)."""
    folder = Path(folder)
    m = read_manifest(folder)
    rebuild = f"rebuild with engine trt --out {folder}"
    if m["flavor"] != flavor.name:
        raise SetupError(f"--engines {folder}: built for {m['flavor']}, this run uses {flavor.name} (--flavor); {rebuild}")
    have = flavor.version()
    if m["flavor_version"] != have:
        raise SetupError(f"--engines {folder}: built with {flavor.label} {m['flavor_version']}, {have} is installed; {rebuild}")
    if generator.device.type == "cuda" and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(generator.device)
        if f"SM{major}{minor}" not in m["compute_capabilities"] and not (flavor.name == "rtx" and m["compute_capabilities"] == ["CURRENT"]):
            raise SetupError(f"--engines {folder}: built for {', '.join(m['compute_capabilities'])}, this GPU is sm_{major}{minor}; {rebuild}")
    by_role = {e["role"]: e for e in m["engines"]}
    calls = record_calls(generator, variants)
    for role, role_calls in calls.items():
        e = by_role.get(role)
        if e is None:
            raise SetupError(f"--engines {folder}: no engine for {role}; {rebuild}")
        if not (folder / e["file"]).is_file():
            raise SetupError(f"--engines {folder}: {e['file']} is missing; {rebuild}")
        digest = weights_digest(role_calls[0].module)
        if e["weights"] != digest:
            raise SetupError(f"--engines {folder}: {role} was built from other weights ({e['weights'][:12]}, this network "
                             f"{digest[:12]}); {rebuild} for this --generator")
        specs = [TensorSpec.from_json(s) for s in e["inputs"]]
        for call in role_calls:
            if len(call.fed) != len(specs):
                raise SetupError(f"--engines {folder}: {role} takes {len(specs)} inputs, the show gives {len(call.fed)}; {rebuild}")
            for spec, x in zip(specs, call.fed):
                if dtype_name(x.dtype) != spec.dtype:
                    raise SetupError(f"--engines {folder}: {role} {spec.name} is {spec.dtype} in the engine, {dtype_name(x.dtype)} "
                                     f"in the show (another precision: --set or the generator's dtype option); {rebuild}")
                if not spec.covers(tuple(x.shape)):
                    raise SetupError(f"--engines {folder}: {role} {spec.name} {tuple(x.shape)} is outside the engine's profile "
                                     f"{spec.min}..{spec.max} (another --size or more steps); {rebuild} --sides/--max-batch to cover it")
    return m


def profile_of(entry: dict[str, Any]) -> Profile:
    return Profile(None, [TensorSpec.from_json(s) for s in entry["inputs"]])
