"""Benchmark 1-step img2img: the engine's stream pipeline against the seed-001 way, same models, same device.

    python bench/bench_diffusion.py [--size 512] [--frames 50] [--device auto] [--out bench/results/<cpu|cuda>/diffusion-<size>.json]
    python bench/bench_diffusion.py --size 128 --frames 8 --warmup 2 --device cpu --machine "2-core CPU, torch 2.13 CPU"

Models: sd-turbo's real architecture, randomly initialised (no download): the UNet from sd-turbo's unet/config.json
(SD 2.1-base: 320/640/1280/1280, cross_attention_dim 1024, attention_head_dim 5/10/20/20, linear projections), its
OpenCLIP ViT-H text encoder as CLIPTextModel (23 layers, 1024 wide), TAESD (AutoencoderTiny's default config) and
the SD 2.x VAE (AutoencoderKL). Speed does not depend on the weights' values, so random weights time the same.

Compared, per output frame, each fed the previous output as its input (the feedback loop of seed 001):
  engine            DiffusionGenerator: strength 0.5, 1 step (t = 499), TAESD, prompt embedded once, no guidance
  seed001_taesd     diffusers AutoPipelineForImage2Image with PIL in and out, num_inference_steps=2, strength=0.5,
                    guidance_scale=0 (= the same single UNet step), TAESD as its VAE: the same networks, so the
                    difference is the pipeline (per-call prompt encoding, PIL conversions, scheduler setup)
  seed001_fullvae   the same with the model's full VAE, as seed 001 actually runs (its decoder alone costs ~3x the
                    UNet at 512 px)

  engine_texture    the same generator inside the real render loop (engine.loop.Engine, null sink): source =
                    the previous output after the perturb shader, read from the GL texture; output written into
                    the GL texture (CUDA-GL interop on CUDA, staged on CPU); shaders; i.e. "into the GL texture"

Latency is per frame with a device sync after each (what a frame costs end to end); the engine is also timed
pipelined (frames queued back to back, one sync at the end), the way the render loop runs it. `--backend`
applies engine.backends to the generator first (auto: compile + CUDA graphs on CUDA, eager on CPU). GPU figures are
not committed: run this on the GPU machine and keep the JSON with the machine description it records.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tiny_diffusion.write_tokenizer: a CLIP BPE tokenizer built offline

from common import cpu_threads, machine_info, summarize_ms, write_result  # noqa: E402  (before torch: engine.threads)
import torch  # noqa: E402

# stabilityai/sd-turbo unet/config.json (SD 2.1-base architecture)
SD_TURBO_UNET = dict(
    act_fn="silu", attention_head_dim=[5, 10, 20, 20], block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
    cross_attention_dim=1024, down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, dual_cross_attention=False, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-05, norm_num_groups=32, num_class_embeds=None, only_cross_attention=False,
    out_channels=4, sample_size=64, up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    upcast_attention=False, use_linear_projection=True,
)
# stabilityai/sd-turbo text_encoder/config.json (OpenCLIP ViT-H/14 text tower, penultimate layer kept: 23 layers)
SD_TURBO_TEXT = dict(
    hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23, max_position_embeddings=77,
    vocab_size=49408, hidden_act="gelu", projection_dim=512, layer_norm_eps=1e-05,
)
# stabilityai/sd-turbo vae/config.json (SD 2.x VAE)
SD_VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4, in_channels=3,
    latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=768, scaling_factor=0.18215,
    up_block_types=["UpDecoderBlock2D"] * 4,
)
# sd-turbo scheduler/scheduler_config.json
SD_TURBO_SCHEDULER = dict(
    beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False, interpolation_type="linear",
    num_train_timesteps=1000, prediction_type="epsilon", set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
    timestep_spacing="trailing", trained_betas=None, use_karras_sigmas=False,
)
PROMPT = "an abstract painting of flowing light, vivid colours"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(device: torch.device, dtype: torch.dtype):
    import diffusers
    import transformers
    from tiny_diffusion import write_tokenizer

    from engine.generators.diffusion import cast_module

    torch.manual_seed(0)
    t0 = time.perf_counter()
    unet = cast_module(diffusers.UNet2DConditionModel(**SD_TURBO_UNET), device, dtype).eval()
    text = cast_module(transformers.CLIPTextModel(transformers.CLIPTextConfig(**SD_TURBO_TEXT)), device, dtype).eval()
    taesd = cast_module(diffusers.AutoencoderTiny(), device, dtype).eval()
    vae = cast_module(diffusers.AutoencoderKL(**SD_VAE), device, dtype).eval()
    tok_dir = Path(tempfile.mkdtemp(prefix="bench-tok-"))
    write_tokenizer(tok_dir)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(tok_dir)
    scheduler = diffusers.EulerDiscreteScheduler.from_config(SD_TURBO_SCHEDULER)
    print(f"built sd-turbo architecture (random init) on {device} in {time.perf_counter() - t0:.1f} s; "
          f"UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.0f}M params")
    return unet, text, taesd, vae, tokenizer, scheduler


def time_engine(gen, frames: int, warmup: int, device: torch.device) -> tuple[dict, dict]:
    from engine.clock import FrameTime
    from engine.params import Params, with_values

    snap = with_values(Params(), {"diffusion.prompt": PROMPT, "diffusion.strength": 0.5, "diffusion.steps": 1, "diffusion.guidance": 1.0})
    i = 0
    with torch.inference_mode():
        for _ in range(warmup):
            gen(snap, FrameTime(i / 30, i), None)
            i += 1
        sync(device)
        lat = []
        for _ in range(frames):
            t0 = time.perf_counter()
            gen(snap, FrameTime(i / 30, i), None)  # source None: the generator feeds back its previous output
            sync(device)
            lat.append((time.perf_counter() - t0) * 1000)
            i += 1
        t0 = time.perf_counter()
        for _ in range(frames):
            gen(snap, FrameTime(i / 30, i), None)
            i += 1
        sync(device)
        pipelined_ms = (time.perf_counter() - t0) * 1000 / frames
    return summarize_ms(lat), {"ms_per_frame": pipelined_ms, "fps": 1000 / pipelined_ms}


def time_engine_texture(gen, frames: int, warmup: int, device: torch.device) -> dict:
    """The render loop with this generator: feedback source from the GL texture, output into it, shaders."""
    from engine.clock import FrameTime
    from engine.loop import Engine, RunOptions
    from engine.params import ParamStore
    from engine.stats import STAGES

    store = ParamStore()
    store.update({"diffusion.prompt": PROMPT, "diffusion.strength": 0.5, "diffusion.steps": 1, "diffusion.guidance": 1.0,
                  "source.mode": "feedback", "fx.perturb": 0.3})
    eng = Engine(RunOptions(size=gen.width, sinks=["null"], device=str(device), quiet=True, fps=0), store, generator=gen)
    eng.setup()
    try:
        for i in range(warmup):
            eng.step(FrameTime(t=i / 30, index=i))
        sync(device)
        eng.stats.__init__(device_type=eng.device.type)  # drop warm-up frames from the record
        for i in range(warmup, warmup + frames):
            eng.step(FrameTime(t=i / 30, index=i))
        sync(device)
        s = eng.stats.summary()
        frame = summarize_ms(list(eng.stats.frame_ms))
        return {**frame, "fps": 1000 / frame["median"], "stage_ms": {st: summarize_ms(list(eng.stats.stage_ms[st])) for st in STAGES},
                "stage_gpu_ms_median": s.get("stage_gpu_ms_median"), "upload": eng.info["upload"], "gl": eng.info["gl"]}
    finally:
        eng.close()


def time_seed001(pipe, size: int, frames: int, warmup: int, device: torch.device) -> dict:
    from PIL import Image

    image = Image.new("RGB", (size, size), color="white")  # seed 001's first frame
    generator = torch.Generator(device="cpu")
    lat = []
    for n in range(warmup + frames):
        t0 = time.perf_counter()
        generator.manual_seed(0)
        image = pipe(prompt=PROMPT, image=image, strength=0.5, guidance_scale=0.0, num_inference_steps=2,
                     generator=generator).images[0]  # PIL in, PIL out: host round trip every frame
        sync(device)
        if n >= warmup:
            lat.append((time.perf_counter() - t0) * 1000)
    return summarize_ms(lat)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512, help="image size (multiple of 64; default 512)")
    ap.add_argument("--frames", type=int, default=50, help="timed frames per contender (default 50)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed frames first (default 5)")
    ap.add_argument("--device", default="auto", help="auto|cpu|cuda[:N]")
    ap.add_argument("--dtype", default="auto", help="auto (fp16 on CUDA, fp32 on CPU)|fp16|bf16|fp32")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the engine's choice, engine/threads.py)")
    ap.add_argument("--backend", default="auto", help="engine backend for the engine contenders: auto|eager|compile|tensorrt")
    ap.add_argument("--skip-fullvae", action="store_true", help="leave out the seed001_fullvae contender")
    ap.add_argument("--machine", default="", help="a name for the machine, recorded in the JSON")
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default bench/results/<cpu|cuda>/diffusion-<size>.json)")
    args = ap.parse_args(argv)

    import diffusers

    from engine.generators.diffusion import DiffusionGenerator, pick_dtype

    cpu_threads.apply(args.threads)
    device = torch.device("cuda" if (args.device == "auto" and torch.cuda.is_available()) else ("cpu" if args.device == "auto" else args.device))
    dtype = pick_dtype(args.dtype, device)
    unet, text, taesd, vae, tokenizer, scheduler = build(device, dtype)

    gen = DiffusionGenerator(unet=unet, vae=taesd, text_encoders=[text], tokenizers=[tokenizer], alphas_cumprod=scheduler.alphas_cumprod,
                             size=args.size, device=device, dtype=dtype, model_name="sd-turbo architecture (random init)", vae_name="TAESD")
    from engine.backends import apply_backend

    gen, backend = apply_backend(gen, args.backend)
    print(f"engine: {args.size}x{args.size}, 1 step, TAESD, {dtype}, backend: {backend} ...", flush=True)
    engine_lat, engine_pipe = time_engine(gen, args.frames, args.warmup, device)
    print("engine_texture: the same generator in the render loop (GL texture in and out) ...", flush=True)
    texture = time_engine_texture(gen, args.frames, args.warmup, device)

    results = {"engine": {**engine_lat, "fps": 1000 / engine_lat["median"], "pipelined": engine_pipe, "backend": backend},
               "engine_texture": texture}
    contenders = [("seed001_taesd", taesd)] + ([] if args.skip_fullvae else [("seed001_fullvae", vae)])
    for name, v in contenders:
        base = diffusers.StableDiffusionPipeline(vae=v, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe = diffusers.AutoPipelineForImage2Image.from_pipe(base)
        pipe.set_progress_bar_config(disable=True)
        print(f"{name}: AutoPipelineForImage2Image ({type(pipe).__name__}), PIL in/out ...", flush=True)
        s = time_seed001(pipe, args.size, args.frames, args.warmup, device)
        results[name] = {**s, "fps": 1000 / s["median"]}

    print(f"\n{'contender':<18}{'median ms':>11}{'p99 ms':>10}{'fps':>9}")
    for name, r in results.items():
        print(f"{name:<18}{r['median']:>11.1f}{r['p99']:>10.1f}{r['fps']:>9.2f}")
    print(f"{'engine pipelined':<18}{engine_pipe['ms_per_frame']:>11.1f}{'':>10}{engine_pipe['fps']:>9.2f}")
    ratios = {f"engine_vs_{n}": results[n]["median"] / results["engine"]["median"] for n, _ in contenders}
    ratios.update({f"engine_texture_vs_{n}": results[n]["median"] / texture["median"] for n, _ in contenders})
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x faster (median latency)")

    out = args.out or ROOT / "bench" / "results" / device.type / f"diffusion-{args.size}.json"
    machine = machine_info()
    machine["name"] = args.machine or None
    machine["torch_threads"] = torch.get_num_threads()
    write_result(out, {
        "bench": "diffusion img2img, 1 step (sd-turbo architecture, random init)",
        "machine": machine, "device": str(device), "dtype": str(dtype).replace("torch.", ""), "size": args.size,
        "frames": args.frames, "warmup": args.warmup, "diffusers": diffusers.__version__, "results": results, "ratios": ratios,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
