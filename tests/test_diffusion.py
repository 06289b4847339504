"""The diffusion generator on tiny random models written like diffusers model repos and loaded through the engine's
real loading code (tests/tiny_diffusion.py). No downloads (HF_HUB_OFFLINE=1 in conftest).

Equivalence tolerance: the engine's first img2img frame against diffusers' own pipelines (same models, scheduler
config, seed, strength, steps; AutoencoderTiny in both). The two compute the same arithmetic in a different order
(VP form here, Euler's VE form there), so they agree to float32 rounding: measured max |diff| 2e-5 on latents of
magnitude up to 42, 5e-7 on images. Asserted: rtol 1e-4 + atol 1e-4 on latents, atol 1e-4 on images.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from tiny_diffusion import SIZE, save_tiny_model, tiny_tae

from engine.clock import FrameTime
from engine.errors import UsageError
from engine.generators import create_generator
from engine.generators.diffusion import DiffusionGenerator, plan_timesteps
from engine.params import Params, with_values

diffusers = pytest.importorskip("diffusers")

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("sd") / "tiny-sd-turbo")


@pytest.fixture(scope="module")
def tiny_xl(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl-turbo", sdxl=True)


def snap_with(**values) -> Params:
    return with_values(Params(), {f"diffusion.{k}": v for k, v in values.items()})


def source_image(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((1, 3, SIZE, SIZE), generator=g) * 2 - 1


def load(path: Path, **options) -> DiffusionGenerator:
    gen = create_generator(f"diffusion:{path}", size=SIZE, device=CPU, options=options)
    assert isinstance(gen, DiffusionGenerator)
    return gen


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---- equivalence with diffusers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "steps,strength,n_inference,cfg,guidance",
    [
        (1, 0.5, 2, "none", 1.0),  # sd-turbo's documented img2img setting: 2 steps at strength 0.5 = 1 step
        (2, 0.5, 4, "none", 1.0),
        (3, 0.75, 4, "full", 3.0),  # classifier-free guidance with the empty negative prompt
    ],
)
def test_img2img_matches_diffusers(tiny, steps, strength, n_inference, cfg, guidance):
    pipe = quiet(diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(tiny, safety_checker=None, requires_safety_checker=False, local_files_only=True))
    src = source_image()
    snap = snap_with(prompt="a red cat", steps=steps, strength=strength, seed=7, cfg=cfg, guidance=guidance, renoise="predicted")
    gen = load(tiny)
    out = gen(snap, FrameTime(0.0, 0), src).clone()
    latent = gen._smooth.clone()  # the output latent (no smoothing on the first frame)

    ref = pipe(prompt="a red cat", image=src * 0.5 + 0.5, strength=strength, num_inference_steps=n_inference, guidance_scale=guidance,
               generator=torch.Generator().manual_seed(7), output_type="latent").images
    torch.testing.assert_close(latent, ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        ref_img = pipe.vae.decode(ref).sample.clamp(-1, 1)
    torch.testing.assert_close(out, ref_img, rtol=0, atol=1e-4)
    assert gen.unet_calls == steps  # one UNet call per step (CFG rows ride in the same batch)


def test_sdxl_img2img_matches_diffusers(tiny_xl):
    pipe = quiet(diffusers.StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny_xl, local_files_only=True))
    src = source_image(2)
    gen = load(tiny_xl)
    assert gen.sdxl
    gen(snap_with(prompt="a red cat", steps=2, strength=0.5, seed=3, cfg="full", guidance=2.5, renoise="predicted"), FrameTime(0.0, 0), src)
    ref = pipe(prompt="a red cat", image=src * 0.5 + 0.5, strength=0.5, num_inference_steps=4, guidance_scale=2.5,
               generator=torch.Generator().manual_seed(3), output_type="latent").images
    torch.testing.assert_close(gen._smooth, ref, rtol=1e-4, atol=1e-4)


def test_txt2img_matches_diffusers(tiny):
    pipe = quiet(diffusers.StableDiffusionPipeline.from_pretrained(tiny, safety_checker=None, requires_safety_checker=False, local_files_only=True))
    gen = load(tiny)
    gen(snap_with(prompt="a low cat", mode="txt2img", steps=2, seed=11, renoise="predicted"), FrameTime(0.0, 0), None)
    ref = pipe(prompt="a low cat", num_inference_steps=2, guidance_scale=1.0, height=SIZE, width=SIZE,
               generator=torch.Generator().manual_seed(11), output_type="latent").images
    torch.testing.assert_close(gen._smooth, ref, rtol=1e-4, atol=1e-4)


def test_v_prediction_matches_diffusers(tmp_path):
    from tiny_diffusion import SD_TURBO_SCHEDULER

    folder = save_tiny_model(tmp_path / "tiny-v", scheduler={**SD_TURBO_SCHEDULER, "prediction_type": "v_prediction"})
    pipe = quiet(diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False, local_files_only=True))
    src = source_image(3)
    gen = load(folder)
    gen(snap_with(steps=2, strength=0.5, seed=5, renoise="predicted"), FrameTime(0.0, 0), src)
    ref = pipe(prompt=Params().diffusion.prompt, image=src * 0.5 + 0.5, strength=0.5, num_inference_steps=4, guidance_scale=1.0,
               generator=torch.Generator().manual_seed(5), output_type="latent").images
    torch.testing.assert_close(gen._smooth, ref, rtol=1e-4, atol=1e-4)


def test_lcm_model_matches_diffusers(tmp_path):
    # An LCM-distilled model: LCMScheduler (the consistency boundary condition c_skip/c_out) and a UNet that takes
    # the guidance scale as an embedding (time_cond_proj_dim) instead of classifier-free guidance.
    lcm_scheduler = {
        "_class_name": "LCMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": False, "num_train_timesteps": 1000, "original_inference_steps": 50, "prediction_type": "epsilon",
        "set_alpha_to_one": True, "steps_offset": 1, "timestep_scaling": 10.0, "timestep_spacing": "leading",
    }
    folder = save_tiny_model(tmp_path / "tiny-lcm", scheduler=lcm_scheduler, unet_extra={"time_cond_proj_dim": 8})
    pipe = quiet(diffusers.LatentConsistencyModelImg2ImgPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False, local_files_only=True))
    src = source_image(4)
    gen = load(folder)
    assert gen.lcm and gen.time_cond_dim == 8
    gen(snap_with(prompt="a red cat", steps=1, strength=0.5, guidance=3.0, seed=7), FrameTime(0.0, 0), src)
    ref = pipe(prompt="a red cat", image=src * 0.5 + 0.5, strength=0.5, num_inference_steps=1, guidance_scale=3.0,
               generator=torch.Generator().manual_seed(7), output_type="latent").images
    assert list(pipe.scheduler.timesteps) == [499]
    torch.testing.assert_close(gen._smooth, ref, rtol=1e-4, atol=1e-4)


# ---- schedules ----------------------------------------------------------------------------------------------------


def test_timestep_plans():
    assert plan_timesteps(snap_with(steps=1, strength=0.5).diffusion) == (499,)
    assert plan_timesteps(snap_with(steps=2, strength=0.5).diffusion) == (499, 249)
    assert plan_timesteps(snap_with(steps=3, mode="txt2img").diffusion) == (999, 666, 332)  # diffusers trailing, 3 steps
    # StreamDiffusion's t_index_list on its 50-step grid; order and duplicates normalised, steps/strength ignored
    assert plan_timesteps(snap_with(t_index_list=(45, 32), steps=4).diffusion) == (359, 99)
    assert plan_timesteps(snap_with(t_index_list=(0, 0, 49, 70)).diffusion) == (999, 19)  # clamped into 0..49


# ---- stream behaviour -----------------------------------------------------------------------------------------------


def test_prompt_embeddings_only_when_text_changes(tiny):
    gen = load(tiny)
    src = source_image()
    frame = 0

    def run(n, **values):
        nonlocal frame
        snap = snap_with(**values)
        for _ in range(n):
            gen(snap, FrameTime(frame / 30, frame), src)
            frame += 1

    run(5, prompt="a red cat")
    assert gen.prompts.calls == 1  # once, not per frame
    run(5, prompt="a low cat")
    assert gen.prompts.calls == 2
    run(3, prompt="a red cat")
    assert gen.prompts.calls == 2  # seen before: cached
    run(4, prompt="a red cat", prompt_b="a low cat", prompt_mix=0.3)
    run(4, prompt="a red cat", prompt_b="a low cat", prompt_mix=0.7)  # mixing is a lerp, not an encode
    assert gen.prompts.calls == 2
    run(3, prompt="a red cat", strength=0.8, steps=2, seed=4)  # non-text parameters never encode
    assert gen.prompts.calls == 2
    run(3, prompt="a red cat", cfg="full", guidance=2.0, negative_prompt="blurry")
    assert gen.prompts.calls == 3  # the negative prompt, once


def test_prompt_mix_blends_embeddings(tiny):
    gen = load(tiny)
    a, _ = gen.prompts.encode("a red cat")
    b, _ = gen.prompts.encode("a low cat")
    cond = gen._conditioning(snap_with(prompt="a red cat", prompt_b="a low cat", prompt_mix=0.25).diffusion, need_uncond=False)
    torch.testing.assert_close(cond["emb"], 0.75 * a + 0.25 * b)


def test_seed_auto_increment_every_n_frames(tiny):
    # txt2img with a fixed prompt: the image depends only on the seed's noise, so it changes exactly when the seed does.
    gen = load(tiny)
    snap = snap_with(mode="txt2img", seed=10, seed_every=3)
    outs, seeds = [], []
    for i in range(7):
        outs.append(gen(snap, FrameTime(i / 30, i), None).clone())
        seeds.append(gen._seed)
    assert seeds == [10, 10, 10, 11, 11, 11, 12]
    changed = [not torch.equal(outs[i], outs[i - 1]) for i in range(1, 7)]
    assert changed == [False, False, True, False, False, True]

    still = load(tiny)
    off = snap_with(mode="txt2img", seed=10, seed_every=0)
    first = still(off, FrameTime(0, 0), None).clone()
    for i in range(1, 5):
        assert torch.equal(still(off, FrameTime(i / 30, i), None), first)


def test_similarity_filter_skips_static_not_changing(tiny):
    static = load(tiny)
    snap = snap_with(similarity_threshold=0.98, similarity_max_skip=5)
    src = source_image()
    for i in range(14):
        static(snap, FrameTime(i / 30, i), src)
    # frames 0 and 1 render (no measurement yet), then 5 skipped, 1 rendered, 5 skipped, 1 rendered
    assert static.frames_skipped == 10 and static.unet_calls == 4

    moving = load(tiny)
    for i in range(10):
        moving(snap, FrameTime(i / 30, i), source_image(100 + i))
    assert moving.frames_skipped == 0 and moving.unet_calls == 10


def test_similarity_filter_probabilistic_and_deterministic(tiny):
    # Similarity between the threshold and 1 skips with a probability; the draws come from the seed.
    base = source_image(5)

    def pattern(seed):
        gen = load(tiny)
        snap = snap_with(similarity_threshold=0.99, similarity_max_skip=3, seed=seed)
        skipped = []
        for i in range(16):
            wiggle = source_image(200 + i) * 0.08
            before = gen.frames_skipped
            gen(snap, FrameTime(i / 30, i), (base + wiggle).clamp(-1, 1))
            skipped.append(gen.frames_skipped > before)
        return skipped, gen.filter.last_similarity

    a, sim = pattern(1)
    b, _ = pattern(1)
    assert 0.99 < sim < 1.0  # the test really sits in the probabilistic band
    assert a == b  # deterministic under the seed
    assert any(a) and not all(a[2:])


def test_denoise_batch_lag_and_steady_state(tiny):
    a, b = source_image(1), source_image(2)
    snap = snap_with(steps=2, denoise_batch=True)
    batch = load(tiny)
    assert batch.latency_frames(snap) == 1
    assert batch.latency_frames(snap_with(steps=2, denoise_batch=False)) == 0
    out = [batch(snap, FrameTime(i / 30, i), a if i < 3 else b).clone() for i in range(5)]
    assert batch.unet_calls == 2 + 4  # a sequential first frame fills the slots, then one batched call a frame
    torch.testing.assert_close(out[1], out[2])  # steady state on a static source
    torch.testing.assert_close(out[3], out[2])  # b entered at frame 3, shows one frame later
    assert not torch.allclose(out[4], out[3])
    assert batch.stats()["lag_frames"] == 1  # what the run's stats report

    seq = load(tiny)
    seq_snap = snap_with(steps=2, denoise_batch=False)
    seq_out = [seq(seq_snap, FrameTime(i / 30, i), a if i < 3 else b).clone() for i in range(5)]
    assert not torch.allclose(seq_out[3], seq_out[2])  # no lag
    # on a static source the pipelined batch computes exactly what the sequential steps compute
    torch.testing.assert_close(out[2], seq_out[2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[4], seq_out[4], rtol=1e-4, atol=1e-5)


def test_latent_smoothing_is_a_latent_ema(tiny):
    srcs = [source_image(i) for i in range(3)]
    plain, smooth = load(tiny), load(tiny)
    lat = []
    for i, s in enumerate(srcs):
        plain(snap_with(), FrameTime(i / 30, i), s)
        lat.append(plain._smooth.clone())
    snap = snap_with(latent_smoothing=0.6)
    for i, s in enumerate(srcs):
        out = smooth(snap, FrameTime(i / 30, i), s)
    expect = lat[0]
    for latent in lat[1:]:
        expect = 0.6 * expect + 0.4 * latent
    torch.testing.assert_close(smooth._smooth, expect, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(out, smooth._decode(expect).clamp(-1, 1), rtol=1e-4, atol=1e-4)


def test_live_parameter_changes_never_reallocate(tiny):
    gen = load(tiny)
    unet = gen.unet
    buffers = {n: getattr(gen, n).data_ptr() for n in ("_noise", "_x0", "_eps", "_stock", "_xt", "_smooth", "_src", "_out")}
    src = source_image()
    sweeps = [
        dict(steps=1), dict(steps=4), dict(steps=3, cfg="full", guidance=3.0), dict(steps=2, cfg="initialize", guidance=1.5),
        dict(steps=4, cfg="self", guidance=1.8, delta=0.7), dict(t_index_list=(20, 35, 45)), dict(renoise="predicted", steps=3),
        dict(mode="txt2img", steps=2), dict(denoise_batch=False, steps=4), dict(strength=0.9, seed=123), dict(latent_smoothing=0.5),
    ]
    for i, values in enumerate(sweeps * 2):
        out = gen(snap_with(**values), FrameTime(i / 30, i), src)
        assert out.shape == (1, 3, SIZE, SIZE) and torch.isfinite(out).all() and out.abs().max() <= 1
    assert gen.unet is unet
    assert {n: getattr(gen, n).data_ptr() for n in buffers} == buffers
    assert gen.prompts.calls == 2  # the prompt, and the empty negative prompt for cfg full/initialize


def test_source_none_feeds_back_own_output_starting_white(tiny):
    gen = load(tiny)
    snap = snap_with()
    first = gen(snap, FrameTime(0, 0), None).clone()
    white = load(tiny)(snap, FrameTime(0, 0), torch.ones(1, 3, SIZE, SIZE))
    torch.testing.assert_close(first, white)
    second = gen(snap, FrameTime(1 / 30, 1), None).clone()
    again = load(tiny)
    again(snap, FrameTime(0, 0), torch.ones(1, 3, SIZE, SIZE))
    torch.testing.assert_close(second, again(snap, FrameTime(1 / 30, 1), first))


def test_lora_scale_is_live(tiny, tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = diffusers.UNet2DConditionModel.from_pretrained(tiny / "unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    diffusers.StableDiffusionPipeline.save_lora_weights(tmp_path / "lora", unet_lora_layers=get_peft_model_state_dict(unet))

    src = source_image()
    base = load(tiny)(snap_with(), FrameTime(0, 0), src).clone()
    gen = load(tiny, lora=str(tmp_path / "lora"))
    assert gen.info()["lora"] and not gen.lcm
    unet_id = id(gen.unet)
    off = gen(snap_with(lora_scale=0.0), FrameTime(0, 0), src).clone()
    on = gen(snap_with(lora_scale=1.0), FrameTime(1 / 30, 1), src).clone()
    torch.testing.assert_close(off, base, rtol=1e-5, atol=1e-5)  # scale 0 = the base model
    assert (on - base).abs().max() > 1e-3
    assert id(gen.unet) == unet_id and gen.prompts.calls == 1  # no reload, no re-encode (UNet-only LoRA)


# ---- loading and errors -------------------------------------------------------------------------------------------


def test_missing_model_says_where_and_how_to_fetch(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UsageError) as e:
        create_generator("diffusion:someone/missing-model", size=SIZE, device=CPU)
    msg = str(e.value)
    assert "'someone/missing-model'" in msg and str(tmp_path / "empty-cache") in msg and "hf download someone/missing-model" in msg
    assert "\n" not in msg

    with pytest.raises(UsageError, match="not found: .*no/such/folder"):
        create_generator(f"diffusion:{tmp_path}/no/such/folder", size=SIZE, device=CPU)


def test_incomplete_model_folder(tiny, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(UsageError, match=r"not a complete diffusers model \(missing unet/\)"):
        load(broken)


def _cache_repo(cache: Path, repo_id: str, src: Path) -> None:
    # The Hugging Face cache layout: models--OWNER--NAME/{refs/main, snapshots/REV/...}.
    root = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(src, root / "snapshots" / "0123abc")
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("0123abc")


def test_hub_id_found_in_local_cache_with_taesd(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    kl = save_tiny_model(tmp_path / "kl-model", vae="kl")  # full VAE only: vae=auto must fetch TAESD from the cache
    _cache_repo(cache, "tiny/sd-turbo", kl)

    with pytest.raises(UsageError) as e:
        create_generator("diffusion:tiny/sd-turbo", size=SIZE, device=CPU)
    assert "madebyollin/taesd" in str(e.value) and "hf download madebyollin/taesd" in str(e.value) and "vae=full" in str(e.value)

    taesd = tmp_path / "taesd"
    tiny_tae().save_pretrained(taesd)
    _cache_repo(cache, "madebyollin/taesd", taesd)
    gen = create_generator("diffusion:tiny/sd-turbo", size=SIZE, device=CPU)
    assert gen.info()["vae"] == "madebyollin/taesd" and gen.vae_tiny
    full = create_generator("diffusion:tiny/sd-turbo", size=SIZE, device=CPU, options={"vae": "full"})
    assert not full.vae_tiny
    out = full(Params(), FrameTime(0, 0), source_image())
    assert out.shape == (1, 3, SIZE, SIZE) and torch.isfinite(out).all()


def test_size_and_option_errors(tiny):
    with pytest.raises(UsageError, match="not a positive multiple of 8 per side"):
        load_size(tiny, 70)
    # A latent the UNet's downsampling does not divide (72 / 8 = 9): diffusers passes the exact sizes to its upsamplers.
    odd = load_size(tiny, 72)
    out = odd(Params(), FrameTime(0, 0), torch.zeros(1, 3, 72, 72))
    assert out.shape == (1, 3, 72, 72) and torch.isfinite(out).all()
    wide = create_generator(f"diffusion:{tiny}", output=(100, 60), device=CPU)
    assert (wide.width, wide.height) == (104, 64) and wide.latent_shape[2:] == (8, 13)
    assert wide(Params(), FrameTime(0, 0), torch.zeros(1, 3, 64, 104)).shape == (1, 3, 64, 104)
    gen = load_size(tiny, 128)  # any supported multiple, not just the native size
    assert gen(Params(), FrameTime(0, 0), torch.zeros(1, 3, 128, 128)).shape == (1, 3, 128, 128)
    with pytest.raises(UsageError, match="unknown diffusion option"):
        load(tiny, steps=3)
    with pytest.raises(UsageError, match="dtype"):
        load(tiny, dtype="fp8")


def load_size(path: Path, size: int) -> DiffusionGenerator:
    return create_generator(f"diffusion:{path}", size=size, device=CPU)  # type: ignore[return-value]


# ---- end to end through the render loop ------------------------------------------------------------------------------


def test_engine_run_diffusion_feedback_to_file(tiny, tmp_path):
    """`engine run --generator diffusion:PATH`, source feedback (the GL loop's perturbed previous output), 20 frames
    into an mp4, on the CPU with Mesa's headless GL."""
    import os
    import subprocess
    import sys

    av = pytest.importorskip("av")
    out = tmp_path / "out.mp4"
    stats = tmp_path / "stats.json"
    cmd = [sys.executable, "-m", "engine", "run", "--generator", f"diffusion:{tiny}", "--source", "feedback",
           "--set", "diffusion.seed_every=5", "--set", "fx.perturb=0.5", "--frames", "20", "--sink", f"file:{out}",
           "--device", "cpu", "--quiet", "--stats-json", str(stats)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 20 and frames[0].shape == (SIZE, SIZE, 3)
    import json

    summary = json.loads(stats.read_text())
    assert summary["frames"] == 20 and summary["generator"]["name"] == "diffusion"
    # seed_every=5 changes the fixed noise at frames 5, 10, 15: the video changes there
    import numpy as np

    diffs = [float(np.abs(frames[i].astype(int) - frames[i - 1]).mean()) for i in (5, 10, 15)]
    assert min(diffs) > 0.1, diffs


def test_frame_zero_starts_a_fresh_stream(tiny):
    # engine.backends renders setup frames (index 0) before the loop starts; the show must not inherit their state.
    from engine.backends.common import render_frame

    used = load(tiny)
    render_frame(used)
    render_frame(used)
    fresh = load(tiny)
    snap = snap_with(steps=2, latent_smoothing=0.5, cfg="self", guidance=1.5)
    for i in range(3):
        torch.testing.assert_close(used(snap, FrameTime(i / 30, i), None), fresh(snap, FrameTime(i / 30, i), None))
    assert set(used.modules()) == {"unet", "vae_encoder", "vae_decoder"}


def test_a_start_source_that_cannot_open_fails_at_setup_with_one_line(tiny, tmp_path, capsys):
    """A live switch to a bad source is logged and the show goes on; at setup it is an error (exit 2), or an
    offline render would silently write the wrong video."""
    from engine.cli import main

    missing = tmp_path / "nope.png"
    rc = main(["run", "--generator", f"diffusion:{tiny}", "--source", f"image:{missing}", "--frames", "2",
               "--sink", "null", "--device", "cpu", "--osc-port", "0", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1] == f"engine: error: --source image:{missing}: file not found: {missing}"
    assert not any("WARNING: source" in line for line in err)  # said once, as the error


def test_seed_flag_seeds_the_diffusion_noise():
    from engine.cli import build_parser, resolve_run_options

    _, values, _ = resolve_run_options(build_parser().parse_args(["run", "--generator", "diffusion:x", "--seed", "9"]))
    assert values["diffusion.seed"] == 9 and values["latent.seed"] == 9
