"""The seed projects' way of making a frame, on the engine's own model, for `engine bench --compare seeds`.

Both ways below use the networks the engine just measured (same weights, size and device), with the backend's
wrappers removed so they run eagerly as the seeds do. Each frame ends in host memory, as in the seeds, so a host
clock around the frame is its true cost on either device (the copy to the host waits for the GPU).

seed002  (real-time StyleGAN workshop, StyleGAN2/3): z arrives from the host each frame (there over OSC from Max;
         here numpy draws), then exactly the workshop's update():
             img = G(z, label, truncation_psi=psi, noise_mode='random')
             img = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
             data = img[0].cpu().numpy()
         Stages: generate (the G call; on CUDA only the launch, the GPU time lands in to_host) and to_host (the
         conversion and the copy to host memory). The network renders at its native resolution: the seed has no
         resize step.
seed001  (realtime image generator, diffusion): diffusers AutoPipelineForImage2Image around the same UNet, text
         encoder(s), VAE and scheduler config, PIL image in and out (a host round trip every frame), torch.manual_seed
         every frame, then the seed's CPU blend of the new image with the previous one:
             (0.1 * np.array(prev) + 0.9 * np.array(cur)).astype(np.uint8)
         The engine's steps at strength s are num_inference_steps = ceil(steps / s) for the pipeline (diffusers runs
         int(n * s) of them = the same steps); guidance <= 1 is guidance_scale 0 (off), above 1 it is the
         pipeline's full classifier-free guidance. The seed's random perturbation of the previous frame is not
         timed: its code is not published with the seed. The seed as shipped also decodes with the model's full VAE;
         this comparison uses the engine's VAE so that the ratio is about the way of running, not the decoder
         (bench/bench_diffusion.py measures the full-VAE variant).
"""

from __future__ import annotations

import abc
import math
import time
from typing import Any

import numpy as np
import torch

from engine.errors import UsageError


def _eager(generator) -> None:
    """Take the backend's runners off the generator's modules: the seeds run plain eager PyTorch."""
    from engine.backends.common import uninstall

    uninstall(generator.modules())


class SeedWay(abc.ABC):
    name = "seed"
    description = ""
    stages: tuple[str, ...] = ()
    size: int = 0

    @abc.abstractmethod
    def frame(self) -> dict[str, float]:
        """Render one frame the seed's way; returns ms per stage."""

    def close(self) -> None:
        pass


class Seed002(SeedWay):
    name = "seed002"
    description = ("seed 002 (real-time StyleGAN workshop): z from the host, eager G(z, label, truncation_psi, noise_mode='random'), "
                   "(img.permute(0,2,3,1)*127.5+128).clamp(0,255).to(torch.uint8)[0].cpu().numpy()")
    stages = ("generate", "to_host")

    def __init__(self, generator, snap):
        _eager(generator)
        self.G = generator.net
        self.device = generator.device
        self.z_dim = int(self.G.z_dim)
        self.label = torch.zeros([1, int(self.G.c_dim)], device=self.device)
        self.psi = float(snap.latent.psi)
        self.rng = np.random.RandomState(int(snap.latent.seed))
        self.size = int(self.G.img_resolution)
        self.data: np.ndarray | None = None

    def frame(self) -> dict[str, float]:
        t0 = time.perf_counter()
        z = torch.from_numpy(self.rng.randn(1, self.z_dim).astype(np.float32)).to(self.device)
        img = self.G(z, self.label, truncation_psi=self.psi, noise_mode="random")
        t1 = time.perf_counter()
        img = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
        self.data = img[0].cpu().numpy()
        t2 = time.perf_counter()
        return {"generate": (t1 - t0) * 1e3, "to_host": (t2 - t1) * 1e3}


class Seed001(SeedWay):
    name = "seed001"
    description = ("seed 001 (realtime image generator): diffusers AutoPipelineForImage2Image on the same networks, PIL in and out, "
                   "torch.manual_seed per frame, CPU numpy blend with the previous frame (alpha 0.1)")
    stages = ("pipeline", "blend")

    def __init__(self, generator, snap):
        import diffusers
        from PIL import Image

        from engine.generators.diffusion import locate, read_json

        _eager(generator)
        p = snap.diffusion
        folder = locate(generator.model_name, "diffusion model")
        sched_cfg = read_json(folder / "scheduler" / "scheduler_config.json")
        sched_cls = getattr(diffusers, sched_cfg.get("_class_name", "EulerDiscreteScheduler"), diffusers.EulerDiscreteScheduler)
        scheduler = sched_cls.from_config(sched_cfg)
        enc, tok = generator.text_encoders, generator.prompts.tokenizers
        if generator.sdxl:
            base = diffusers.StableDiffusionXLPipeline(vae=generator.vae, text_encoder=enc[0], text_encoder_2=enc[1], tokenizer=tok[0],
                                                       tokenizer_2=tok[1], unet=generator.unet, scheduler=scheduler)
        else:
            base = diffusers.StableDiffusionPipeline(vae=generator.vae, text_encoder=enc[0], tokenizer=tok[0], unet=generator.unet,
                                                     scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                                     requires_safety_checker=False)
        self.pipe = diffusers.AutoPipelineForImage2Image.from_pipe(base)
        self.pipe.set_progress_bar_config(disable=True)
        self.size = int(generator.width)
        self.prompt = p.prompt
        self.strength = float(p.strength)
        steps = len(p.t_index_list) if p.t_index_list else int(p.steps)
        self.steps = steps
        self.num_inference_steps = max(1, math.ceil(steps / self.strength - 1e-9))
        self.guidance = float(p.guidance) if p.guidance > 1 else 0.0
        self.seed = int(p.seed)
        self.Image = Image
        self.previous = None
        self.white = Image.new("RGB", (self.size, self.size), color="white")  # the seed's first input

    def frame(self) -> dict[str, float]:
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        image = self.previous if self.previous is not None else self.white
        current = self.pipe(prompt=self.prompt, image=image, strength=self.strength, guidance_scale=self.guidance,
                            num_inference_steps=self.num_inference_steps, height=self.size, width=self.size).images[0]
        t1 = time.perf_counter()
        if self.previous is None:
            self.previous = current
        else:
            blended = (0.1 * np.array(self.previous) + 0.9 * np.array(current)).astype(np.uint8)
            self.previous = self.Image.fromarray(blended)
        t2 = time.perf_counter()
        return {"pipeline": (t1 - t0) * 1e3, "blend": (t2 - t1) * 1e3}

    def describe(self) -> dict[str, Any]:
        return {"num_inference_steps": self.num_inference_steps, "strength": self.strength, "denoising_steps": self.steps,
                "guidance_scale": self.guidance}


def seed_way(generator, snap) -> SeedWay:
    """The seed way for this generator. UsageError for a generator no seed project has."""
    from engine.generators.diffusion import DiffusionGenerator
    from engine.generators.stylegan import StyleGANGenerator

    if isinstance(generator, StyleGANGenerator):
        return Seed002(generator, snap)
    if isinstance(generator, DiffusionGenerator):
        return Seed001(generator, snap)
    raise UsageError(f"--compare seeds: no seed project runs a {generator.name!r} generator (stylegan2/3 and diffusion only)")
