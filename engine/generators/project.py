"""Projection (seed 002): find the w (or w+) whose image reproduces a target image; save and load latents.

    engine project IMAGE --generator SPEC [--size N] [--steps 300] [--mode w|w+] [--out latent.npz]

Optimisation follows NVlabs' projector.py (stylegan3 repo): start from w_avg, Adam with a learning-rate
ramp-up/cosine ramp-down, Gaussian noise on w that decays over the first 75% of steps (scaled by the spread of
w), noise inputs held at their stored values (noise_mode const). The loss is pixel MSE plus a multi-scale
MSE on 2x, 4x, 8x average-pooled images (it rewards getting layout and colour right before detail), and
LPIPS-VGG16 when the `lpips` package and the VGG16 weights are already on this machine (nothing is downloaded).
The image compared is the generator's output as rendered live (colour calibration and resize included).

Saved latents: .npz with key 'w', shape (1, num_ws, w_dim) float32 (NVlabs projector's projected_w.npz), or
.pt {'w': tensor}. `load_w` reads both, plus (w_dim,) / (1, w_dim) / (num_ws, w_dim) arrays, and the live
parameter stylegan.w_file uses it.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.errors import UsageError
from engine.paths import user_path

W_SUFFIXES = (".npz", ".pt", ".pth", ".npy")


# ----------------------------------------------------------------------------------------------------------------
# Latent files.
# ----------------------------------------------------------------------------------------------------------------


def save_w(path: str | Path, ws: Any) -> Path:
    """Write ws (1, num_ws, w_dim) as .npz (key 'w') or .pt ({'w': tensor})."""
    import torch

    path = Path(path)
    w = torch.as_tensor(ws).detach().float().cpu()
    if w.ndim == 2:
        w = w.unsqueeze(0)
    if w.ndim != 3 or w.shape[0] != 1:
        raise ValueError(f"ws must be (1, num_ws, w_dim), got {tuple(w.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        np.savez(path, w=w.numpy())
    elif suffix in (".pt", ".pth"):
        torch.save({"w": w}, path)
    else:
        raise UsageError(f"{path}: save latents as .npz or .pt")
    return path


def load_w(path: str | Path, num_ws: int, w_dim: int) -> "torch.Tensor":  # noqa: F821
    """A saved latent as (1, num_ws, w_dim) float32 on the CPU. One w (w_dim,) is broadcast to all ws.
    UsageError (one line) when the file is missing, unreadable or of the wrong shape."""
    import torch

    path = user_path(path, "latent file")
    if not path.is_file():
        raise UsageError(f"latent file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                key = "w" if "w" in data.files else ("ws" if "ws" in data.files else (data.files[0] if len(data.files) == 1 else None))
                if key is None:
                    raise UsageError(f"{path}: no array 'w' in it (keys: {', '.join(data.files)})")
                arr = torch.as_tensor(np.asarray(data[key], dtype=np.float32))
        elif suffix == ".npy":
            arr = torch.as_tensor(np.load(path, allow_pickle=False).astype(np.float32))
        elif suffix in (".pt", ".pth"):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                obj = obj.get("w", obj.get("ws", obj.get("latent")))
            if not isinstance(obj, torch.Tensor):
                raise UsageError(f"{path}: expected a tensor or a dict with 'w'")
            arr = obj.float()
        else:
            raise UsageError(f"{path}: unsupported latent file {suffix!r}; use .npz (key 'w') or .pt")
    except UsageError:
        raise
    except Exception as e:  # corrupt archives raise many different types
        raise UsageError(f"{path}: cannot read latent ({type(e).__name__}: {e})") from None
    w = arr
    if w.ndim == 1:
        w = w[None, None]
    elif w.ndim == 2:
        w = w[None]
    if w.ndim != 3 or w.shape[0] != 1 or w.shape[2] != w_dim or w.shape[1] not in (1, num_ws):
        raise UsageError(f"{path}: latent of shape {tuple(arr.shape)} does not fit this network's ws (1, {num_ws}, {w_dim})")
    if not torch.isfinite(w).all():
        raise UsageError(f"{path}: latent contains nan/inf")
    return w.expand(1, num_ws, w_dim).contiguous()


# ----------------------------------------------------------------------------------------------------------------
# Target images.
# ----------------------------------------------------------------------------------------------------------------


def load_image(path: str | Path, size: int) -> "torch.Tensor":  # noqa: F821
    """An image file as (1, 3, size, size) float32 in [-1, 1]: centre-cropped to a square, Lanczos-resized."""
    import torch
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"image not found: {path}")
    try:
        img = Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise UsageError(f"{path}: not a readable image ({e})") from None
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0  # (size, size, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def save_image(path: str | Path, img: "torch.Tensor") -> Path:  # noqa: F821
    """(1, 3, H, W) [-1, 1] -> PNG (NVlabs byte convention)."""
    from PIL import Image

    arr = (img[0].detach().float().cpu().permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).byte().numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Losses.
# ----------------------------------------------------------------------------------------------------------------


def multiscale_mse(img: "torch.Tensor", target: "torch.Tensor", scales: int = 4) -> "torch.Tensor":  # noqa: F821
    """Mean of MSE at full, 1/2, 1/4 and 1/8 resolution (average pooling). img, target: (N, 3, H, W)."""
    import torch.nn.functional as F

    loss = F.mse_loss(img, target)
    a, b = img, target
    for _ in range(1, scales):
        if a.shape[-1] < 8:
            break
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        loss = loss + F.mse_loss(a, b)
    return loss / scales


def local_lpips(device: Any) -> tuple[Callable | None, str]:
    """LPIPS-VGG16 if the lpips package and torchvision's VGG16 weights are already on disk, else (None, why)."""
    if importlib.util.find_spec("lpips") is None or importlib.util.find_spec("torchvision") is None:
        return None, "LPIPS off (the lpips/torchvision packages are not installed); pixel + multi-scale loss"
    import torch

    hub = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(hub.glob("vgg16-*.pth")):
        return None, f"LPIPS off (no VGG16 weights in {hub}; nothing is downloaded); pixel + multi-scale loss"
    import lpips  # type: ignore[import-not-found]

    model = lpips.LPIPS(net="vgg", verbose=False).to(device).eval().requires_grad_(False)
    return (lambda a, b: model(a, b).mean()), "LPIPS-VGG16 + pixel + multi-scale loss"


# ----------------------------------------------------------------------------------------------------------------
# Projection.
# ----------------------------------------------------------------------------------------------------------------


def project(
    gen: Any,                               # a StyleGANGenerator
    target: "torch.Tensor",                 # (1, 3, size, size) in [-1, 1], size = gen's output size  # noqa: F821
    *,
    steps: int = 300,
    mode: str = "w",                        # "w": one w for all layers; "w+": one per layer
    lr: float = 0.1,
    noise_ramp: float = 0.75,
    initial_noise: float = 0.05,
    w_samples: int = 2048,
    seed: int = 0,
    use_lpips: bool = True,
    progress: Callable[[int, float], None] | None = None,
) -> tuple["torch.Tensor", dict[str, Any]]:  # noqa: F821
    """Optimise w so that gen's rendered image matches `target`. Returns (ws (1, num_ws, w_dim) on the CPU,
    report {'loss', 'losses', 'loss_kind', 'mode', 'steps'})."""
    import torch

    if mode not in ("w", "w+"):
        raise UsageError(f"projection mode {mode!r}: use w or w+")
    if steps < 1:
        raise UsageError(f"--steps must be >= 1, got {steps}")
    net = gen.net
    device = gen.device
    target = target.to(device, torch.float32)
    if tuple(target.shape) != (1, 3, gen.height, gen.width):
        raise UsageError(f"target image is {tuple(target.shape)}, expected (1, 3, {gen.height}, {gen.width})")

    # Statistics of W: the mean (w_avg) and the spread that scales the exploration noise (NVlabs).
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        z = torch.randn(w_samples, net.z_dim, generator=g).to(device)
        c = gen._c.expand(w_samples, -1)
        w = net.mapping(z, c)[:, :1, :]  # (S, 1, w_dim)
        w_avg = w.mean(dim=0, keepdim=True)  # (1, 1, w_dim)
        w_std = float(((w - w_avg).square().sum() / w_samples) ** 0.5)

    num = net.num_ws if mode == "w+" else 1
    w_opt = w_avg.repeat(1, num, 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([w_opt], betas=(0.9, 0.999), lr=lr)
    lp, loss_kind = local_lpips(device) if use_lpips else (None, "pixel + multi-scale loss")
    noise_gen = torch.Generator(device="cpu").manual_seed(int(seed) + 1)

    losses: list[float] = []
    best = (math.inf, w_opt.detach().clone())
    for step in range(steps):
        t = step / steps
        w_noise_scale = w_std * initial_noise * max(0.0, 1.0 - t / noise_ramp) ** 2
        lr_ramp = min(1.0, (1.0 - t) / 0.25)
        lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
        lr_ramp = lr_ramp * min(1.0, t / 0.05)
        for group in opt.param_groups:
            group["lr"] = lr * max(lr_ramp, 1e-3)

        noise = torch.randn(w_opt.shape, generator=noise_gen).to(device) * w_noise_scale
        ws = (w_opt + noise).expand(1, net.num_ws, -1) if num == 1 else w_opt + noise
        with torch.enable_grad():
            img = gen.finish(net.synthesis(ws, noise_mode="const"))
            loss = multiscale_mse(img, target)
            if lp is not None:
                loss = loss + lp(img.clamp(-1, 1), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        v = float(loss.detach())  # projection is offline: a sync per step is fine
        losses.append(v)
        if v < best[0]:
            best = (v, w_opt.detach().clone())
        if progress is not None:
            progress(step, v)

    with torch.no_grad():
        ws = best[1].expand(1, net.num_ws, -1) if num == 1 else best[1]
        final = float(multiscale_mse(gen.finish(net.synthesis(ws, noise_mode="const")), target))
    return ws.detach().cpu().contiguous(), {"loss": final, "losses": losses, "loss_kind": loss_kind, "mode": mode, "steps": steps}


# ----------------------------------------------------------------------------------------------------------------
# CLI: `engine project` (its arguments are declared in engine.cli, which stays torch-free at import).
# ----------------------------------------------------------------------------------------------------------------


def cmd_project(ns: argparse.Namespace) -> int:
    from engine.generators import create_generator

    out = ns.out or ns.image.with_name(ns.image.stem + ".w.npz")
    if out.suffix.lower() not in (".npz", ".pt", ".pth"):
        raise UsageError(f"--out {out}: write latents as .npz or .pt")
    if not ns.image.is_file():
        raise UsageError(f"image not found: {ns.image}")  # before the (slow) network load
    from engine.devices import resolve_device

    device = resolve_device(ns.device)
    gen = create_generator(ns.generator, size=ns.size, device=device)
    if not hasattr(gen, "net") or not hasattr(gen, "finish"):
        raise UsageError(f"--generator {ns.generator}: projection needs a StyleGAN generator")
    target = load_image(ns.image, gen.height)

    from tqdm import tqdm

    bar = tqdm(total=ns.steps, desc="projecting", unit="step")

    def progress(step: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    try:
        ws, report = project(gen, target, steps=ns.steps, mode=ns.mode, lr=ns.lr, seed=ns.seed, progress=progress)
    finally:
        bar.close()
    save_w(out, ws)
    print(f"engine: latent ({report['mode']}, loss {report['loss']:.4f}, {report['loss_kind']}) written to {out}")
    if ns.save_image:
        import torch

        with torch.no_grad():
            img = gen.finish(gen.net.synthesis(ws.to(gen.device), noise_mode="const"))
        save_image(ns.save_image, img)
        print(f"engine: projected image written to {ns.save_image}")
    print(f"engine: use it live with --set stylegan.w_file={out}")
    return 0
