"""Tiny random-init diffusion models written to disk like a diffusers model repo, for tests (no downloads).

`save_tiny_model(folder, ...)` writes unet/, vae/, text_encoder/, tokenizer/, scheduler/ and model_index.json
(plus text_encoder_2/, tokenizer_2/ for SDXL) with save_pretrained, so the engine loads them through its real
loading code. Image size 64 (latent 8x8); every network is a few hundred kB and runs in milliseconds on a CPU.
The tokenizer is a byte-level CLIP BPE whose vocabulary is the 256 byte symbols (plain and end-of-word) plus a
few merges: real CLIP tokenization rules, tiny vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# sd-turbo's scheduler_config.json (EulerDiscreteScheduler, trailing spacing).
SD_TURBO_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

SIZE = 64
HIDDEN = 32


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the rest above U+0100.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


MERGES = ["l o", "lo w</w>", "c a", "ca t</w>", "r e", "re d</w>"]


def write_tokenizer(folder: Path) -> int:
    """vocab.json + merges.txt + tokenizer_config.json in `folder`; returns the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for m in MERGES:
        vocab[m.replace(" ", "")] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77}))
    return len(vocab)


def tiny_tae():
    from diffusers import AutoencoderTiny

    # Four blocks like TAESD: three stride-2 stages, latent = image / 8.
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4,
    )


def tiny_kl():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4, norm_num_groups=4, layers_per_block=1, sample_size=SIZE,
    )


def save_tiny_model(folder: Path, *, sdxl: bool = False, vae: str = "tiny", seed: int = 0, scheduler: dict | None = None,
                    unet_extra: dict | None = None) -> Path:
    """Write a tiny random SD (sd-turbo-like) or SDXL model to `folder`. vae: 'tiny' (AutoencoderTiny in vae/) or
    'kl' (AutoencoderKL in vae/); unet_extra: more UNet config (e.g. time_cond_proj_dim). Returns `folder`."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = write_tokenizer(folder / "tokenizer")
    text_cfg = dict(
        hidden_size=HIDDEN, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=n_vocab,
        max_position_embeddings=77, projection_dim=HIDDEN, bos_token_id=n_vocab - 2, eos_token_id=n_vocab - 1, pad_token_id=n_vocab - 1,
    )
    torch.manual_seed(seed)
    CLIPTextModel(CLIPTextConfig(**text_cfg)).save_pretrained(folder / "text_encoder")
    unet_kw = dict(
        sample_size=SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=HIDDEN, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8,
    )
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", (scheduler or SD_TURBO_SCHEDULER)["_class_name"]], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderTiny" if vae == "tiny" else "AutoencoderKL"],
        "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False,
    }
    if sdxl:
        write_tokenizer(folder / "tokenizer_2")
        CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg)).save_pretrained(folder / "text_encoder_2")
        # SDXL conditioning: both encoders' hidden states side by side; pooled text + 6 size/crop ids added to time.
        unet_kw.update(
            cross_attention_dim=2 * HIDDEN, addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=8 * 6 + HIDDEN,
        )
        index.update(
            _class_name="StableDiffusionXLPipeline", text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
            tokenizer_2=["transformers", "CLIPTokenizer"], force_zeros_for_empty_prompt=True,
        )
        for k in ("safety_checker", "feature_extractor", "requires_safety_checker"):
            index.pop(k)
    UNet2DConditionModel(**unet_kw, **(unet_extra or {})).save_pretrained(folder / "unet")
    (tiny_tae() if vae == "tiny" else tiny_kl()).save_pretrained(folder / "vae")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler or SD_TURBO_SCHEDULER))
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder
