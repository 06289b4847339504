"""Few-step diffusion as a live generator: a StreamDiffusion-class stream pipeline written on diffusers' models.

`--generator diffusion:MODEL` builds `DiffusionGenerator.from_spec(MODEL, size=, device=, **options)`. MODEL is a
diffusers-format folder (unet/, text_encoder/, tokenizer/, scheduler/, vae/, model_index.json) or a hub id found in
the local Hugging Face cache; nothing is ever downloaded. Default: stabilityai/sd-turbo with madebyollin/taesd.
sd-turbo / sdxl-turbo class models (Euler, 1-4 steps), SD1.5-class models with an LCM-LoRA (option lora=...), and
TAESD/TAESDXL (AutoencoderTiny) as the live encoder/decoder (the model's full VAE with vae=full).

One frame (k = steps, h, w = H/8, W/8; all latent math in float32, the networks in the model dtype):

    source (1, 3, H, W) [-1, 1] --VAE encode--> z (1, 4, h, w) (x scaling_factor)
    x_t (k, 4, h, w): slot 0 = z noised to t_0 with the seed's fixed noise; slot j = the latent of the frame that
                      entered j frames ago, noised again to t_j (denoising batch; StreamDiffusion's stream batch)
    UNet batch B = k (cfg none/self), k + 1 (cfg initialize), 2k (cfg full)  ->  eps (k, 4, h, w) after guidance
    x0 (k, 4, h, w) = (x_t - beta * eps) / alpha   (+ the LCM boundary condition for LCM models)
    slot k-1 is this frame's output; slots 0..k-2 move one slot on. So the output lags k-1 frames behind the source:
    `latency_frames()`. denoise_batch=0 runs the k steps one after the other on the current frame instead (no lag,
    k UNet calls).
    latent smoothing (1, 4, h, w) --VAE decode--> image (1, 3, H, W) [-1, 1]  (the generator's output buffer)

Live parameters are snap.diffusion (engine.params.Diffusion). Changing any of them never reloads or rebuilds: state
buffers are allocated at setup for 4 steps and the largest UNet batch; prompt embeddings are computed only when
a prompt's text changes (and cached per text); per-timestep-list coefficients are built once per list and cached.

Host syncs on CUDA: none per frame. Small host->device copies (coefficients, token ids, a new seed's noise is drawn
on the device) go through pinned memory with non_blocking=True and happen only when a parameter changes. The
similarity filter needs one scalar from the GPU to decide a skip; it reads the value measured on the previous frame
(copied to pinned memory and fenced by an event, complete by then in practice) instead of stalling on the current
one, so a skip decision lags the source by one frame. That is the price of no stall; it is deterministic.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.clock import FrameTime
from engine.errors import SetupError, UsageError
from engine.generators.base import Generator
from engine.output import diffusion_size
from engine.params import Diffusion, Params
from engine.paths import user_path

DEFAULT_MODEL = "stabilityai/sd-turbo"
TINY_VAE_SD = "madebyollin/taesd"
TINY_VAE_SDXL = "madebyollin/taesdxl"
#: Buffers are sized for this many steps (the steps parameter's maximum).
MAX_STEPS = 4
#: StreamDiffusion's t_index_list indexes a 50-step LCM grid: timestep = 999 - 20 * index for 1000 train steps.
T_INDEX_GRID = 50

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_OPTIONS = ("vae", "lora", "lora_weight_name", "lcm", "dtype")


# ----------------------------------------------------------------------------------------------------------------
# Finding models on disk. Never downloads: a hub id is looked up in the local cache only.
# ----------------------------------------------------------------------------------------------------------------


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def locate(ref: str, what: str, *, hint: str = "") -> Path:
    """A local folder (or file) for `ref`: an existing path, else a hub id in the local Hugging Face cache.
    Raises UsageError with where it looked and the command that fetches it."""
    path = user_path(ref, what)
    if path.exists():
        return path
    looks_like_path = ref.startswith((".", "/", "~", "\\")) or os.sep in ref.replace("/", "") or ref.count("/") != 1
    if _HUB_ID.fullmatch(ref) and not looks_like_path:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(ref, local_files_only=True))
        except (LocalEntryNotFoundError, FileNotFoundError):
            raise UsageError(
                f"{what} {ref!r} is neither a folder nor in the local Hugging Face cache ({hub_cache_dir()}); "
                f"fetch it once with: hf download {ref}{hint}"
            ) from None
    raise UsageError(f"{what} not found: {path} is not a file or folder (give a diffusers model folder or a hub id like {DEFAULT_MODEL})")


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None


def _variant(folder: Path, half: bool) -> str | None:
    """diffusers/transformers weight variant to load from `folder`: "fp16" when only fp16 files are there, or when
    both are and we run in half precision (half the bytes to read)."""
    names = [p.name for p in folder.glob("*.safetensors")] + [p.name for p in folder.glob("*.bin")]
    has_fp16 = any(".fp16." in n for n in names)
    has_full = any(".fp16." not in n for n in names)
    if has_fp16 and (half or not has_full):
        return "fp16"
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ----------------------------------------------------------------------------------------------------------------
# Timestep schedules.
# ----------------------------------------------------------------------------------------------------------------


def plan_timesteps(p: Diffusion, num_train: int = 1000) -> tuple[int, ...]:
    """The denoising timesteps for this frame, largest first (1-4 of them).

    t_index_list given: StreamDiffusion's convention, timestep = num_train - 1 - (num_train // 50) * index.
    Otherwise `steps` trailing-spaced timesteps over [0, 1000 * strength): exactly diffusers' img2img schedule for
    a trailing-spacing scheduler (sd-turbo's Euler) with num_inference_steps = steps / strength, e.g. strength 0.5,
    steps 1 -> (499,) = sd-turbo's documented img2img setting (2 inference steps at strength 0.5). txt2img uses
    strength 1: steps 1 -> (999,), steps 2 -> (999, 499).
    """
    if p.t_index_list:
        stride = num_train // T_INDEX_GRID
        idx = sorted({min(max(int(round(i)), 0), T_INDEX_GRID - 1) for i in p.t_index_list})
        return tuple(num_train - 1 - stride * i for i in idx[:MAX_STEPS])
    s = 1.0 if p.mode == "txt2img" else p.strength
    k = max(1, min(int(p.steps), MAX_STEPS))
    ts: list[int] = []
    for i in range(k):
        t = max(int(round(num_train * s * (k - i) / k)) - 1, 0)
        if t not in ts:  # tiny strengths with several steps can collide after rounding
            ts.append(t)
    return tuple(ts)


@dataclass
class _Coefficients:
    """Per-slot scheduler coefficients for one timestep list, on the device. All (k, 1, 1, 1) float32 except t."""

    timesteps: tuple[int, ...]
    t: torch.Tensor  # (k,) float32: UNet timesteps
    t2: torch.Tensor  # (2k,): cfg=full batch
    t1: torch.Tensor  # (k+1,): cfg=initialize batch
    alpha: torch.Tensor  # sqrt(alpha_cumprod_t)
    beta: torch.Tensor  # sqrt(1 - alpha_cumprod_t)
    c_skip: torch.Tensor  # LCM boundary condition (0 / 1 for non-LCM models)
    c_out: torch.Tensor
    ratio_next: torch.Tensor  # alpha_{t_{j+1}} / beta_{t_{j+1}} (1 for the last slot): RCFG noise carry-over


class _Staging:
    """Host -> device copies of small tensors without a stream sync: pinned source + non_blocking (CUDA)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cuda":
            return values.to(self.device)
        # The caching host allocator keeps the pinned block alive until the async copy has finished.
        return values.pin_memory().to(self.device, non_blocking=True)


# ----------------------------------------------------------------------------------------------------------------
# Prompt embeddings, cached per text.
# ----------------------------------------------------------------------------------------------------------------


class PromptEncoder:
    """Text -> (embeddings (1, 77, D), pooled (1, P) or None). Encodes each distinct text once (LRU of 32).

    SD1.x/2.x: the text encoder's last hidden state (diffusers' encode_prompt without clip_skip).
    SDXL: both encoders' penultimate hidden states concatenated, and encoder 2's pooled projection.
    `calls` counts text-encoder forward passes (the tests use it to prove prompts are not re-encoded per frame).
    """

    def __init__(self, tokenizers: list, encoders: list[torch.nn.Module], *, sdxl: bool, device: torch.device, dtype: torch.dtype):
        self.tokenizers = tokenizers
        self.encoders = encoders
        self.sdxl = sdxl
        self.device = device
        self.dtype = dtype
        self.calls = 0
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor | None]] = OrderedDict()
        self._stage = _Staging(device)

    def clear(self) -> None:
        self._cache.clear()

    def encode(self, text: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            return hit
        hidden: list[torch.Tensor] = []
        pooled = None
        for tok, enc in zip(self.tokenizers, self.encoders):
            ids = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
            out = enc(self._stage(ids), output_hidden_states=self.sdxl)
            self.calls += 1
            if self.sdxl:
                hidden.append(out.hidden_states[-2])
                pooled = out[0]  # CLIPTextModelWithProjection: text_embeds (1, P); the last encoder's wins
            else:
                hidden.append(out[0])
        emb = torch.cat(hidden, dim=-1).to(self.dtype)
        result = (emb, pooled.to(self.dtype) if pooled is not None else None)
        self._cache[text] = result
        if len(self._cache) > 32:
            self._cache.popitem(last=False)
        return result


# ----------------------------------------------------------------------------------------------------------------
# Similarity filter.
# ----------------------------------------------------------------------------------------------------------------


class SimilarityFilter:
    """Skip the UNet when the source has barely changed since the last rendered frame (StreamDiffusion's
    SimilarImageFilter: cosine similarity, skip probability rising from 0 at the threshold to 1 at similarity 1,
    at most `max_skip` skips in a row), deterministic under its seed.

    The decision for frame n uses the similarity measured at frame n-1 (source n-1 against the source of the last
    rendered frame): reading it then costs no stall, because the measurement was queued a frame earlier. A source
    that starts moving is therefore picked up one frame late.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype):
        self.device = device
        self._ref = torch.zeros(shape, device=device, dtype=dtype)
        cuda = device.type == "cuda"
        self._sim = torch.zeros((), device=device, dtype=torch.float32)
        self._host = torch.zeros((), dtype=torch.float32, pin_memory=cuda)
        self._event = torch.cuda.Event() if cuda else None
        self._rng = random.Random(0)
        self.reset()

    def reseed(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def reset(self) -> None:
        self._has_ref = False
        self._pending = False
        self._run = 0

    @property
    def last_similarity(self) -> float | None:
        """The most recent measured similarity (reads host memory; for tests and stats)."""
        if not self._pending:
            return None
        if self._event is not None:
            self._event.synchronize()
        return float(self._host)

    def __call__(self, x: torch.Tensor, threshold: float, max_skip: int) -> bool:
        skip = False
        if self._pending:
            sim = self.last_similarity
            assert sim is not None
            if threshold >= 1.0:
                prob = 1.0 if sim >= 1.0 else 0.0
            else:
                prob = 0.0 if sim <= threshold else 1.0 - (1.0 - sim) / (1.0 - threshold)
            skip = self._rng.random() < prob and self._run < max_skip
        if self._has_ref:
            a = x.reshape(-1)
            b = self._ref.reshape(-1)
            dot = torch.dot(a.float(), b.float())
            norms = torch.linalg.vector_norm(a, dtype=torch.float32) * torch.linalg.vector_norm(b, dtype=torch.float32)
            torch.div(dot, norms.clamp_min(1e-12), out=self._sim)
            self._host.copy_(self._sim, non_blocking=self._event is not None)
            if self._event is not None:
                self._event.record()
            self._pending = True
        if skip:
            self._run += 1
        else:
            self._run = 0
            self._ref.copy_(x)
            self._has_ref = True
        return skip


# ----------------------------------------------------------------------------------------------------------------
# The generator.
# ----------------------------------------------------------------------------------------------------------------


class DiffusionGenerator(Generator):
    name = "diffusion"
    wants_source = True

    def __init__(
        self,
        *,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        text_encoders: list[torch.nn.Module],
        tokenizers: list,
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "epsilon",
        size: int | tuple[int, int] | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        lcm: bool = False,
        time_ids_aesthetic: bool = False,
        force_zeros_for_empty_negative: bool = False,
        model_name: str = "",
        vae_name: str = "",
    ):
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        if prediction_type not in ("epsilon", "v_prediction"):
            raise UsageError(f"model predicts {prediction_type!r}; only epsilon and v_prediction models are supported")
        cfg = unet.config
        self.sdxl = getattr(cfg, "addition_embed_type", None) == "text_time"
        tiny = type(vae).__name__ == "AutoencoderTiny"
        vae_blocks = vae.config.encoder_block_out_channels if tiny else vae.config.block_out_channels
        self.vae_scale = 2 ** (len(vae_blocks) - 1)
        self.notes: list[str] = []
        if size is None:
            width = height = int(cfg.sample_size) * self.vae_scale
        elif isinstance(size, tuple):
            # An output size (--size WxH): render natively at its aspect, each side to the nearest multiple of the VAE's
            # scale (the UNet takes any latent size: diffusers passes the exact sizes to its upsamplers).
            width, height = diffusion_size(size, self.vae_scale)
            if (width, height) != tuple(size):
                self.notes.append(f"renders {width}x{height}: each side rounded to a multiple of {self.vae_scale} "
                                  f"(the VAE's scale), stretched by the fit stage to the {size[0]}x{size[1]} output")
        else:
            width = height = int(size)
        for side in (width, height):
            if side <= 0 or side % self.vae_scale:
                raise UsageError(f"diffusion size {width}x{height} is not a positive multiple of {self.vae_scale} per side "
                                 f"(latent = size/{self.vae_scale}; try {max(self.vae_scale, side // self.vae_scale * self.vae_scale)})")
            if side > 4096:
                raise UsageError(f"diffusion size {width}x{height} is above 4096 per side")
        latent_channels = vae.config.latent_channels
        if latent_channels != cfg.in_channels:
            raise UsageError(f"VAE makes {latent_channels}-channel latents but the UNet takes {cfg.in_channels}; use the VAE that belongs to the model (vae=full) or its TAESD")
        super().__init__(height, width, device)

        self.model_name = model_name
        self.vae_name = vae_name
        self.dtype = dtype
        self.output_dtype = dtype  # frames come out of the VAE decoder in the model's dtype
        # The backends' precision search tries fp16/bf16/fp32 on CUDA; the model was loaded in its dtype on
        # purpose (an fp16 checkpoint, or the user's dtype option), so that is the only candidate.
        self.backend_dtypes = (dtype,)
        self.unet = cast_module(unet, device, dtype).eval()
        # Half-precision SDXL VAEs overflow (diffusers' force_upcast): keep such a VAE in float32.
        vae_dtype = torch.float32 if (not tiny and getattr(vae.config, "force_upcast", False) and dtype == torch.float16) else dtype
        self.vae = cast_module(vae, device, vae_dtype).eval()
        self.vae_dtype = vae_dtype
        self.vae_tiny = tiny
        self.scaling_factor = float(vae.config.scaling_factor)
        for enc in text_encoders:
            cast_module(enc, device, dtype).eval()
        self.text_encoders = text_encoders
        self.prompts = PromptEncoder(tokenizers, text_encoders, sdxl=self.sdxl, device=device, dtype=dtype)
        self.prediction_type = prediction_type
        self.lcm = lcm
        self.time_cond_dim = getattr(cfg, "time_cond_proj_dim", None)
        self._aesthetic = time_ids_aesthetic
        self._zero_empty_negative = force_zeros_for_empty_negative
        self._stage = _Staging(device)

        ac = alphas_cumprod.detach().double().cpu()
        self._alpha_host = ac.sqrt()
        self._beta_host = (1 - ac).sqrt()
        self.num_train = int(ac.shape[0])

        # LoRA (peft layers inside the UNet/text encoders, see load_lora): lora_scale sets their scaling in place.
        self._lora_pipe: Any = None
        self._lora_layers: list[Any] = []
        self._lora_in_text = False
        self._lora_scale: float | None = None

        # ---- state buffers, allocated once for MAX_STEPS ------------------------------------------------------
        h, w = height // self.vae_scale, width // self.vae_scale
        self.latent_shape = (1, latent_channels, h, w)
        lat = (MAX_STEPS, latent_channels, h, w)
        f32 = dict(device=device, dtype=torch.float32)
        self._noise = torch.zeros(lat, **f32)  # the seed's fixed noise, one per slot
        self._x0 = torch.zeros(lat, **f32)  # slot j: predicted clean latent of the frame now entering slot j
        self._eps = torch.zeros(lat, **f32)  # slot j: its noise estimate (renoise=predicted)
        self._stock = torch.zeros(lat, **f32)  # RCFG virtual residual noise carried to the next slot
        self._stock_in = torch.zeros(lat, **f32)
        self._xt = torch.zeros(lat, **f32)
        self._smooth = torch.zeros(self.latent_shape, **f32)
        self._src = torch.zeros((1, 3, height, width), device=device, dtype=dtype)
        self._out = torch.zeros((1, 3, height, width), device=device, dtype=dtype)
        self._have_out = False
        self._have_smooth = False
        self._primed = False
        self._state_key: tuple | None = None
        self._seed: int | None = None
        self._filter_seed: int | None = None
        self._noise_gen = torch.Generator(device=device)
        self.filter = SimilarityFilter((1, 3, height, width), device, dtype)
        self._coef: OrderedDict[tuple[int, ...], _Coefficients] = OrderedDict()
        self._cond_key: tuple | None = None
        self._cond: dict[str, Any] = {}
        self._batched: dict[tuple, Any] = {}
        self.frames = 0
        self.frames_skipped = 0
        self.unet_calls = 0
        self.lag_frames = 0  # the denoising batch's lag behind the source, as of the last frame

    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, model: str = "", *, size: int | tuple[int, int] | None = None, device: torch.device | str = "cpu", **options: Any) -> "DiffusionGenerator":
        """Load MODEL (folder or cached hub id) once. Options (config file [generator] table):
        vae=auto|full|tiny|PATH_OR_ID  (auto: the model's own vae/ if it is an AutoencoderTiny, else TAESD/TAESDXL)
        lora=PATH_OR_ID, lora_weight_name=FILE  (a LoRA, e.g. latent-consistency/lcm-lora-sdv1-5)
        lcm=auto|true|false  (LCM boundary condition; auto = LCM scheduler or a LoRA whose name contains 'lcm')
        dtype=auto|fp16|bf16|fp32  (auto: fp16 on CUDA, fp32 on CPU)
        """
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise UsageError(f"unknown diffusion option(s) {', '.join(unknown)}; accepted: {', '.join(_OPTIONS)}")
        model = model or DEFAULT_MODEL
        device = torch.device(device)
        dtype = pick_dtype(str(options.get("dtype", "auto")), device)
        folder = locate(model, "diffusion model")
        if not folder.is_dir():
            raise UsageError(f"diffusion model {model!r} must be a diffusers-format folder (unet/, text_encoder/, tokenizer/, scheduler/, model_index.json), not a single file")
        index = read_json(folder / "model_index.json") if (folder / "model_index.json").is_file() else {}
        sdxl = "text_encoder_2" in index or (folder / "text_encoder_2").is_dir()
        needed = ["unet", "text_encoder", "tokenizer", "scheduler"] + (["text_encoder_2", "tokenizer_2"] if sdxl else [])
        missing = [n for n in needed if not (folder / n / ("scheduler_config.json" if n == "scheduler" else "")).exists()]
        if not index or missing:
            what = ", ".join(f"{n}/" for n in missing) or "model_index.json"
            local = user_path(model, "diffusion model").exists()
            fix = ("save the whole pipeline there with diffusers' save_pretrained, or give a hub id from the local cache"
                   if local else f"fetch it again with: hf download {model}")
            raise UsageError(f"{folder} is not a complete diffusers model (missing {what}); {fix}")

        _check_import_order()
        import diffusers
        import transformers

        half = dtype in (torch.float16, torch.bfloat16)
        try:
            unet = diffusers.UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype, variant=_variant(folder / "unet", half), local_files_only=True)
            encoders, tokenizers = [], []
            for suffix in ("", "_2") if sdxl else ("",):
                entry = index.get(f"text_encoder{suffix}", ["transformers", "CLIPTextModel"])
                enc_cls = getattr(transformers, entry[1] if isinstance(entry, list) and entry[1] else "CLIPTextModel")
                sub = folder / f"text_encoder{suffix}"
                encoders.append(enc_cls.from_pretrained(sub, dtype=dtype, variant=_variant(sub, half), local_files_only=True))
                tokenizers.append(transformers.CLIPTokenizer.from_pretrained(folder / f"tokenizer{suffix}", local_files_only=True))
            sched_cfg = read_json(folder / "scheduler" / "scheduler_config.json")
            sched_cls = getattr(diffusers, sched_cfg.get("_class_name", "EulerDiscreteScheduler"), diffusers.EulerDiscreteScheduler)
            scheduler = sched_cls.from_config(sched_cfg)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"cannot load the diffusion model from {folder}: {_first_line(e)}") from None

        vae, vae_name = _load_vae(str(options.get("vae", "auto")), folder, model, sdxl=sdxl, dtype=dtype)

        lora = str(options.get("lora", "") or "")
        lcm_opt = str(options.get("lcm", "auto")).lower()
        if lcm_opt not in ("auto", "true", "false", "1", "0"):
            raise UsageError(f"diffusion option lcm={lcm_opt!r}: use auto, true or false")
        lcm = (type(scheduler).__name__ == "LCMScheduler" or "lcm" in lora.lower()) if lcm_opt == "auto" else lcm_opt in ("true", "1")

        gen = cls(
            unet=unet,
            vae=vae,
            text_encoders=encoders,
            tokenizers=tokenizers,
            alphas_cumprod=scheduler.alphas_cumprod,
            prediction_type=sched_cfg.get("prediction_type", "epsilon"),
            size=size,
            device=device,
            dtype=dtype,
            lcm=lcm,
            time_ids_aesthetic=bool(index.get("requires_aesthetics_score", False)),
            force_zeros_for_empty_negative=bool(index.get("force_zeros_for_empty_prompt", False)),
            model_name=model,
            vae_name=vae_name,
        )
        if lora:
            gen.load_lora(lora, weight_name=str(options.get("lora_weight_name", "") or "") or None, scheduler=scheduler)
        return gen

    def load_lora(self, ref: str, *, weight_name: str | None = None, scheduler: Any = None) -> None:
        """Load a LoRA (diffusers/kohya formats) into the UNet (and text encoders where it has weights), at setup."""
        try:
            import peft  # noqa: F401
        except ImportError:
            raise SetupError("LoRA support needs the peft package: pip install peft") from None
        import diffusers

        path = locate(ref, "LoRA")
        pipe_cls = diffusers.StableDiffusionXLPipeline if self.sdxl else diffusers.StableDiffusionPipeline
        kwargs: dict[str, Any] = dict(vae=self.vae, unet=self.unet, scheduler=scheduler or diffusers.EulerDiscreteScheduler())
        if self.sdxl:
            kwargs.update(text_encoder=self.text_encoders[0], text_encoder_2=self.text_encoders[1], tokenizer=self.prompts.tokenizers[0], tokenizer_2=self.prompts.tokenizers[1])
        else:
            kwargs.update(text_encoder=self.text_encoders[0], tokenizer=self.prompts.tokenizers[0], safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        # The pipeline object only borrows our modules so that diffusers' LoRA loader (format conversion, peft
        # injection) can do its job; nothing else of it is used.
        pipe = pipe_cls(**kwargs)
        load_kwargs: dict[str, Any] = {"adapter_name": "live"}
        if not weight_name and path.is_dir():
            # A folder with one weights file: name it, as diffusers before 0.36 needs offline (it would ask the hub).
            files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
            if len(files) == 1:
                weight_name = files[0].name
        if weight_name:
            load_kwargs["weight_name"] = weight_name
        try:
            pipe.load_lora_weights(str(path), **load_kwargs)
        except (OSError, ValueError, KeyError) as e:
            raise UsageError(f"cannot load the LoRA {ref!r} from {path}: {_first_line(e)}") from None
        from peft.tuners.lora import LoraLayer

        self._lora_pipe = pipe
        self._lora_layers = [m for m in self.unet.modules() if isinstance(m, LoraLayer)]
        text_layers = [m for enc in self.text_encoders for m in enc.modules() if isinstance(m, LoraLayer)]
        self._lora_layers += text_layers
        self._lora_in_text = bool(text_layers)
        if not self._lora_layers:
            raise UsageError(f"the LoRA {ref!r} matched no layer of this model (is it for another base model?)")
        for m in self._lora_layers:
            m.to(device=self.device, dtype=self.dtype)
        self._lora_scale = None
        self.prompts.clear()
        self._cond_key = None

    # ------------------------------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        d = super().info()
        d.update(
            model=self.model_name,
            vae=self.vae_name or type(self.vae).__name__,
            dtype=str(self.dtype).replace("torch.", ""),
            kind="sdxl" if self.sdxl else "sd",
            lora=bool(self._lora_layers),
            lcm=self.lcm,
            max_steps=MAX_STEPS,
            notes=list(self.notes),
        )
        return d

    def stats(self) -> dict[str, Any]:
        return {"frames": self.frames, "skipped": self.frames_skipped, "unet_calls": self.unet_calls,
                "text_encoder_calls": self.prompts.calls, "lag_frames": self.lag_frames}

    def modules(self) -> dict[str, torch.nn.Module]:
        """For engine.backends: the UNet and the VAE's encoder/decoder (what runs per frame; the VAE is called
        through encode/decode, which call these). Left out: a VAE kept in float32 while the UNet runs in half
        precision (the backend casts all modules to one dtype), and a UNet carrying a LoRA (its live lora_scale is
        a Python float inside peft's layers, which a compiled graph or CUDA graph would freeze)."""
        mods: dict[str, torch.nn.Module] = {}
        if not self._lora_layers:
            mods["unet"] = self.unet
        if self.vae_dtype == self.dtype:
            mods["vae_encoder"] = self.vae.encoder
            mods["vae_decoder"] = self.vae.decoder
        return mods

    def needs_source(self, snap: Params) -> bool:
        return snap.diffusion.mode == "img2img"

    def shape_variants(self, base: Params) -> list[Params]:
        """The UNet's batch is the step count (denoising batch; +1 or x2 with cfg initialize/full): steps 1..4 at
        the show's other settings, so a compiled backend has every shape the governor can reach."""
        import dataclasses

        return [dataclasses.replace(base, diffusion=dataclasses.replace(base.diffusion, steps=k, t_index_list=()))
                for k in range(1, 5)]

    def latency_frames(self, snap: Params) -> int:
        """Frames by which the output lags the source: steps - 1 with the denoising batch, 0 without."""
        p = snap.diffusion
        k = len(plan_timesteps(p, self.num_train))
        return k - 1 if (p.denoise_batch and k > 1) else 0

    def close(self) -> None:
        self._coef.clear()
        self._batched.clear()
        self.prompts.clear()

    # ---- per-change state (host decisions; device work only when something changed) ---------------------------
    def _coefficients(self, ts: tuple[int, ...]) -> _Coefficients:
        c = self._coef.get(ts)
        if c is not None:
            self._coef.move_to_end(ts)
            return c
        idx = torch.tensor(ts, dtype=torch.long)
        a = self._alpha_host[idx]
        b = self._beta_host[idx]
        if self.lcm:
            # diffusers LCMScheduler.get_scalings_for_boundary_condition_discrete (timestep_scaling 10, sigma_data 0.5)
            st = idx.double() * 10.0
            c_skip = 0.25 / (st**2 + 0.25)
            c_out = st / (st**2 + 0.25).sqrt()
        else:
            c_skip = torch.zeros_like(a)
            c_out = torch.ones_like(a)
        ratio = torch.ones_like(a)
        ratio[:-1] = a[1:] / b[1:]
        k = len(ts)
        tf = idx.float()
        rows = torch.stack([a, b, c_skip, c_out, ratio]).float().view(5, k, 1, 1, 1)
        times = torch.cat([tf, tf, tf, tf[:1], tf])  # t | t2 = (t, t) | t1 = (t_0, t)
        rows_d = self._stage(rows)
        times_d = self._stage(times)
        c = _Coefficients(
            timesteps=ts, t=times_d[:k], t2=times_d[k : 3 * k], t1=times_d[3 * k :],
            alpha=rows_d[0], beta=rows_d[1], c_skip=rows_d[2], c_out=rows_d[3], ratio_next=rows_d[4],
        )
        self._coef[ts] = c
        if len(self._coef) > 64:
            self._coef.popitem(last=False)
        return c

    def _reseed(self, seed: int) -> None:
        # Noise is drawn on the generator's device: no host copy. Slot j's noise is the (j+1)-th draw of shape
        # (1, 4, h, w) from torch.Generator(device).manual_seed(seed); on CPU slot 0 equals what diffusers draws for
        # the same generator (randn_tensor), which the equivalence test relies on.
        self._noise_gen.manual_seed(int(seed))
        for j in range(MAX_STEPS):
            self._noise[j : j + 1].normal_(generator=self._noise_gen)
        self._stock.zero_()  # RCFG residual noise starts at zero after a reseed, as in StreamDiffusion
        self._seed = seed

    def _set_lora_scale(self, scale: float) -> None:
        if not self._lora_layers or scale == self._lora_scale:
            return
        for m in self._lora_layers:
            m.set_scale("live", scale)
        self._lora_scale = scale
        if self._lora_in_text:  # the embeddings depend on the text encoder's LoRA weight
            self.prompts.clear()
            self._cond_key = None

    def _conditioning(self, p: Diffusion, need_uncond: bool) -> dict[str, Any]:
        """UNet conditioning for this frame: cond/uncond embeddings (1, 77, D), pooled (1, P), time ids (1, n)."""
        key = (p.prompt, p.prompt_b, p.prompt_mix if p.prompt_b else 0.0, p.negative_prompt if need_uncond else None)
        if key == self._cond_key:
            return self._cond
        emb, pooled = self.prompts.encode(p.prompt)
        if p.prompt_b and p.prompt_mix > 0:
            emb_b, pooled_b = self.prompts.encode(p.prompt_b)
            emb = torch.lerp(emb, emb_b, p.prompt_mix)
            if pooled is not None and pooled_b is not None:
                pooled = torch.lerp(pooled, pooled_b, p.prompt_mix)
        cond: dict[str, Any] = {"emb": emb, "pooled": pooled}
        if need_uncond:
            if self.sdxl and not p.negative_prompt and self._zero_empty_negative:
                cond["uemb"], cond["upooled"] = torch.zeros_like(emb), torch.zeros_like(pooled)
            else:
                cond["uemb"], cond["upooled"] = self.prompts.encode(p.negative_prompt)
        if self.sdxl:
            hw = (self.height, self.width)
            ids = [*hw, 0, 0, 6.0] if self._aesthetic else [*hw, 0, 0, *hw]
            uids = [*hw, 0, 0, 2.5] if self._aesthetic else ids
            t = self._stage(torch.tensor([ids, uids], dtype=torch.float32)).to(self.dtype)
            cond["time_ids"], cond["utime_ids"] = t[0:1], t[1:2]
        self._cond = cond
        self._cond_key = key
        self._batched.clear()
        return cond

    def _unet_inputs(self, cond: dict[str, Any], layout: tuple[str, int, int]) -> tuple[torch.Tensor, dict[str, Any] | None]:
        """Batched encoder_hidden_states and SDXL added_cond_kwargs for `layout` = (uncond/cond pattern, n_u, n_c):
        the first n_u rows unconditional, the next n_c conditional. Cached until the conditioning changes."""
        hit = self._batched.get(layout)
        if hit is not None:
            return hit
        _, n_u, n_c = layout
        parts = ([cond["uemb"].expand(n_u, -1, -1)] if n_u else []) + [cond["emb"].expand(n_c, -1, -1)]
        emb = torch.cat(parts).contiguous()
        added = None
        if self.sdxl:
            pooled = torch.cat(([cond["upooled"].expand(n_u, -1)] if n_u else []) + [cond["pooled"].expand(n_c, -1)])
            tids = torch.cat(([cond["utime_ids"].expand(n_u, -1)] if n_u else []) + [cond["time_ids"].expand(n_c, -1)])
            added = {"text_embeds": pooled.contiguous(), "time_ids": tids.contiguous()}
        self._batched[layout] = (emb, added)
        return emb, added

    def _guidance_cond(self, guidance: float, n: int) -> torch.Tensor | None:
        """LCM-distilled UNets (time_cond_proj_dim) take the guidance scale as an embedding instead of CFG."""
        if self.time_cond_dim is None:
            return None
        key = ("w", guidance, n)
        hit = self._batched.get(key)
        if hit is None:
            # diffusers LatentConsistencyModelPipeline.get_guidance_scale_embedding(w = guidance - 1)
            w = torch.tensor([(guidance - 1.0) * 1000.0], dtype=torch.float64)
            half = self.time_cond_dim // 2
            freq = torch.exp(torch.arange(half, dtype=torch.float64) * -(math.log(10000.0) / (half - 1)))
            e = w[:, None] * freq[None, :]
            e = torch.cat([torch.sin(e), torch.cos(e)], dim=1)
            if self.time_cond_dim % 2 == 1:
                e = torch.nn.functional.pad(e, (0, 1))
            hit = self._stage(e.float()).to(self.dtype).expand(n, -1).contiguous()
            if len(self._batched) > 64:  # a guidance fader makes a new entry per value: keep the cache bounded
                self._batched.clear()
            self._batched[key] = hit
        return hit

    # ---- the networks ------------------------------------------------------------------------------------------
    def _encode(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) [-1, 1] -> latent (1, 4, h, w) float32 in the UNet's space."""
        x = image.to(self.vae_dtype)
        if self.vae_tiny:
            z = self.vae.encode(x).latents
        else:
            z = self.vae.encode(x).latent_dist.mode()  # the mean: deterministic, no flicker from sampling
        return z.float() * self.scaling_factor

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (1, 4, h, w) -> image (1, 3, H, W) [-1, 1]."""
        return self.vae.decode((latent / self.scaling_factor).to(self.vae_dtype)).sample

    def _predict(self, x_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, added: dict | None, tcond: torch.Tensor | None,
             alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """UNet noise prediction (B, 4, h, w) float32 for latents x_t (B, 4, h, w) at timesteps t (B,)."""
        out = self.unet(x_t.to(self.dtype), t, encoder_hidden_states=emb, added_cond_kwargs=added, timestep_cond=tcond, return_dict=False)[0]
        self.unet_calls += 1
        # A copy, always: under a CUDA-graph backend `out` is the graph's static buffer, which the next call rewrites.
        out = out.float() if out.dtype != torch.float32 else out.clone()
        if self.prediction_type == "v_prediction":
            out = alpha * out + beta * x_t  # eps from v
        return out

    # ---- one frame ---------------------------------------------------------------------------------------------
    def __call__(self, snap: Params, when: FrameTime, source: torch.Tensor | None = None) -> torch.Tensor:
        p = snap.diffusion
        seed = p.seed + (when.index // p.seed_every if p.seed_every > 0 else 0)
        if when.index == 0 and self.frames:
            self.reset()  # frame 0 starts a new stream (the backends render setup frames at index 0 too)
        with torch.no_grad():
            if seed != self._seed:
                self._reseed(seed)
            if p.seed != self._filter_seed:
                self.filter.reseed(p.seed)
                self._filter_seed = p.seed
            self._set_lora_scale(p.lora_scale)
            txt = p.mode == "txt2img"
            guided = p.guidance > 1.0 and p.cfg != "none" and self.time_cond_dim is None
            cfg = p.cfg if guided else "none"
            cond = self._conditioning(p, need_uncond=cfg in ("full", "initialize"))

            z = None
            if not txt:
                image = self._source(source)
                if p.similarity_threshold > 0:
                    if self.filter(image, p.similarity_threshold, p.similarity_max_skip) and self._have_out:
                        self.frames_skipped += 1
                        return self._out
                else:
                    self.filter.reset()
                z = self._encode(image)  # (1, 4, h, w)

            ts = plan_timesteps(p, self.num_train)
            k = len(ts)
            self.lag_frames = k - 1 if (p.denoise_batch and k > 1) else 0
            coef = self._coefficients(ts)
            key = (k, txt)
            if key != self._state_key:
                self._primed = False
                self._state_key = key
            if p.denoise_batch and k > 1 and self._primed:
                x0_out = self._frame_batch(p, coef, k, z, cfg, cond)
            else:
                # Also the first frame of a denoising batch (or one after the step count changed): running the
                # steps in sequence fills every slot as if the previous frames had been this one, so the batch
                # starts without k-1 frames of garbage.
                x0_out = self._frame_sequential(p, coef, k, z, cfg, cond)
                self._primed = True

            if p.latent_smoothing > 0 and self._have_smooth:
                self._smooth.lerp_(x0_out, 1.0 - p.latent_smoothing)
            else:
                self._smooth.copy_(x0_out)
            self._have_smooth = True
            self._out.copy_(self._decode(self._smooth).clamp_(-1, 1))
            self._have_out = True
            self.frames += 1
        return self._out

    def reset(self) -> None:
        """Start a new stream: white first frame, denoising batch primed again, smoothing and RCFG state cleared,
        similarity filter forgets its reference. Flags and one fill; nothing is reallocated."""
        self._have_out = False
        self._have_smooth = False
        self._primed = False
        self._stock.zero_()
        self.filter.reset()

    def _source(self, source: torch.Tensor | None) -> torch.Tensor:
        """The image to transform, (1, 3, H, W) in the model dtype: the given source; without one the generator's
        own previous output (feedback without the GL perturb stage), white on the first frame (seed 001)."""
        if source is not None:
            if tuple(source.shape) != (1, 3, self.height, self.width):
                raise ValueError(f"source is {tuple(source.shape)}, expected (1, 3, {self.height}, {self.width})")
            self._src.copy_(source)
        elif self._have_out:
            self._src.copy_(self._out)
        else:
            self._src.fill_(1.0)
        return self._src

    def _guide(self, eps_c: torch.Tensor, eps_u: torch.Tensor | None, g: float) -> torch.Tensor:
        return eps_c if eps_u is None else eps_u + g * (eps_c - eps_u)

    def _denoised(self, x_t: torch.Tensor, eps: torch.Tensor, coef_slice: tuple[torch.Tensor, ...]) -> torch.Tensor:
        a, b, c_skip, c_out = coef_slice
        x0 = (x_t - b * eps) / a
        if self.lcm:
            x0 = c_out * x0 + c_skip * x_t
        return x0

    def _frame_batch(self, p: Diffusion, c: _Coefficients, k: int, z: torch.Tensor | None, cfg: str, cond: dict) -> torch.Tensor:
        """All k steps in one UNet call: slot 0 = this frame, slot j = the frame from j frames ago."""
        x_t = self._xt[:k]
        # slot 0: the new frame noised to t_0. txt2img: beta_0 * noise, i.e. an all-zero latent noised to t_0, which is
        # what diffusers' Euler pipelines feed the UNet first (init_noise_sigma * noise, scaled by 1/sqrt(sigma^2+1)).
        if z is None:
            torch.mul(self._noise[0:1], c.beta[0:1], out=x_t[0:1])
        else:
            torch.mul(z, c.alpha[0:1], out=x_t[0:1])
            x_t[0:1].addcmul_(c.beta[0:1], self._noise[0:1])
        # slots 1..k-1: the older frames' clean estimates noised again to t_j
        renoise = self._noise[1:k] if p.renoise == "fixed" else self._eps[1:k]
        torch.mul(self._x0[1:k], c.alpha[1:], out=x_t[1:])
        x_t[1:].addcmul_(c.beta[1:], renoise)

        rcfg = cfg in ("self", "initialize")
        if rcfg:
            s_in = self._stock_in[:k]
            s_in[0:1].copy_(self._noise[0:1])
            s_in[1:].copy_(self._stock[: k - 1])
        tcond = self._guidance_cond(p.guidance, k)
        if cfg == "full":
            emb, added = self._unet_inputs(cond, ("full", k, k))
            out = self._predict(torch.cat([x_t, x_t]), c.t2, emb, added, self._guidance_cond(p.guidance, 2 * k),
                            torch.cat([c.alpha, c.alpha]), torch.cat([c.beta, c.beta]))
            eps_u, eps_c = out[:k], out[k:]
        elif cfg == "initialize":
            emb, added = self._unet_inputs(cond, ("init", 1, k))
            out = self._predict(torch.cat([x_t[0:1], x_t]), c.t1, emb, added, self._guidance_cond(p.guidance, k + 1),
                            torch.cat([c.alpha[0:1], c.alpha]), torch.cat([c.beta[0:1], c.beta]))
            s_in[0:1].copy_(out[0:1])
            eps_c = out[1:]
            eps_u = s_in * p.delta
        else:
            emb, added = self._unet_inputs(cond, ("cond", 0, k))
            eps_c = self._predict(x_t, c.t, emb, added, tcond, c.alpha, c.beta)
            eps_u = s_in * p.delta if rcfg else None
        eps = self._guide(eps_c, eps_u, p.guidance)
        x0 = self._denoised(x_t, eps, (c.alpha, c.beta, c.c_skip, c.c_out))
        if rcfg:
            self._carry_stock(eps, s_in, c, slice(0, k), k)
        # Each slot moves on: slot j's result becomes slot j+1's input next frame.
        self._x0[1:k].copy_(x0[: k - 1])
        self._eps[1:k].copy_(eps[: k - 1])
        return x0[k - 1 : k]

    def _carry_stock(self, eps: torch.Tensor, s_in: torch.Tensor, c: _Coefficients, sl: slice, k: int) -> None:
        """StreamDiffusion's RCFG update: the residual noise each slot hands to the next one.
        stock[j] = noise[(j+1) % k] + alpha_{j+1}/beta_{j+1} * step(eps_j, beta_j * stock_in_j)."""
        a, b, cs, co, r = c.alpha[sl], c.beta[sl], c.c_skip[sl], c.c_out[sl], c.ratio_next[sl]
        scaled = b * s_in
        delta_x = self._denoised(scaled, eps, (a, b, cs, co)) * r
        j0, j1 = sl.start, sl.stop
        nxt = torch.cat([self._noise[1:k], self._noise[0:1]])[j0:j1]
        torch.add(nxt, delta_x, out=self._stock[j0:j1])

    def _frame_sequential(self, p: Diffusion, c: _Coefficients, k: int, z: torch.Tensor | None, cfg: str, cond: dict) -> torch.Tensor:
        """The k steps one after the other on this frame (no lag). Fills the batch slots on the way."""
        rcfg = cfg in ("self", "initialize")
        x0 = None
        eps = None
        for j in range(k):
            x_t = self._xt[j : j + 1]
            a, b = c.alpha[j : j + 1], c.beta[j : j + 1]
            if j == 0:
                if z is None:
                    torch.mul(self._noise[0:1], b, out=x_t)
                else:
                    torch.mul(z, a, out=x_t)
                    x_t.addcmul_(b, self._noise[0:1])
            else:
                renoise = self._noise[j : j + 1] if p.renoise == "fixed" else eps
                torch.mul(x0, a, out=x_t)
                x_t.addcmul_(b, renoise)
            s_in = self._stock_in[j : j + 1]
            if rcfg:
                # the residual noise of slot j: the injected noise for the first of several steps, else what the
                # previous step handed on (for k = 1, what the previous frame handed on)
                s_in.copy_(self._noise[0:1] if (j == 0 and k > 1) else self._stock[(j - 1) % k : (j - 1) % k + 1])
            t = c.t[j : j + 1]
            tcond = self._guidance_cond(p.guidance, 1)
            if cfg == "full" or (cfg == "initialize" and j == 0):
                emb, added = self._unet_inputs(cond, ("full", 1, 1))
                out = self._predict(torch.cat([x_t, x_t]), t.expand(2), emb, added, self._guidance_cond(p.guidance, 2), a, b)
                eps_c = out[1:2]
                if cfg == "full":
                    eps_u = out[0:1]
                else:
                    s_in.copy_(out[0:1])
                    eps_u = s_in * p.delta
            else:
                emb, added = self._unet_inputs(cond, ("cond", 0, 1))
                eps_c = self._predict(x_t, t, emb, added, tcond, a, b)
                eps_u = s_in * p.delta if rcfg else None
            eps = self._guide(eps_c, eps_u, p.guidance)
            x0 = self._denoised(x_t, eps, (a, b, c.c_skip[j : j + 1], c.c_out[j : j + 1]))
            if rcfg:
                self._carry_stock(eps, s_in, c, slice(j, j + 1), k)
            if j + 1 < k:
                self._x0[j + 1 : j + 2].copy_(x0)
                self._eps[j + 1 : j + 2].copy_(eps)
        assert x0 is not None
        return x0


def _check_import_order() -> None:
    """diffusers imports torch._dynamo, which imports triton; triton's LLVM loaded after Mesa's (a GL context made
    earlier in this process) segfaults. Say so in one line instead of crashing."""
    import importlib.util
    import sys

    if "diffusers" in sys.modules or "triton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    from engine.kernels.layout import foreign_llvm_loaded

    llvm = foreign_llvm_loaded()
    if llvm is not None:
        raise SetupError(f"the diffusion generator must be created before the GL context: {llvm} (Mesa) is loaded and "
                         "importing diffusers (torch._dynamo -> triton) after it would crash the process")


def cast_module(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    # Cast only when needed: from_pretrained already loaded the right dtype, and diffusers warns on a no-op cast.
    first = next(module.parameters(), None)
    if first is not None and first.dtype != dtype:
        module = module.to(dtype=dtype)
    return module.to(device=device)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    table = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in table:
        raise UsageError(f"diffusion option dtype={name!r}: use auto, fp16, bf16 or fp32")
    return table[name]


def _load_vae(choice: str, folder: Path, model: str, *, sdxl: bool, dtype: torch.dtype) -> tuple[torch.nn.Module, str]:
    """The live VAE. auto: the model's own vae/ when it is an AutoencoderTiny, else TAESD (TAESDXL for SDXL) from the
    cache; full: the model's vae/; tiny: TAESD/TAESDXL; anything else: a folder or cached hub id of a VAE."""
    import diffusers

    tiny_id = TINY_VAE_SDXL if sdxl else TINY_VAE_SD
    own = folder / "vae"
    own_cfg = read_json(own / "config.json") if (own / "config.json").is_file() else None
    hint = " (or pass the generator option vae=full to use the model's own, slower VAE)"
    if choice == "auto":
        if own_cfg is not None and own_cfg.get("_class_name") == "AutoencoderTiny":
            path, name = own, f"{model}/vae"
        else:
            path, name = locate(tiny_id, "live decoder", hint=hint), tiny_id
    elif choice == "tiny":
        path, name = locate(tiny_id, "live decoder", hint=hint), tiny_id
    elif choice == "full":
        if own_cfg is None:
            raise UsageError(f"{folder} has no vae/ folder; use vae=auto (TAESD) or vae=PATH")
        path, name = own, f"{model}/vae"
    else:
        path, name = locate(choice, "VAE"), choice
    cfg = read_json(path / "config.json") if (path / "config.json").is_file() else None
    if cfg is None:
        raise UsageError(f"VAE folder {path} has no config.json")
    cls_name = cfg.get("_class_name", "AutoencoderKL")
    if cls_name not in ("AutoencoderTiny", "AutoencoderKL"):
        raise UsageError(f"VAE {name}: {cls_name} is not supported (AutoencoderTiny or AutoencoderKL)")
    try:
        vae = getattr(diffusers, cls_name).from_pretrained(path, torch_dtype=dtype, variant=_variant(path, dtype != torch.float32), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"cannot load the VAE from {path}: {_first_line(e)}") from None
    return vae, name
