"""StyleGAN generator for the render loop: a network (engine.generators.stylegan2 or a loaded one) + latent motion.

Per frame (all on the device, no host sync, no per-frame uploads):
    snap.latent -> z (1, z_dim)  [seed draw cached per seed | raw z | + walk n(tau)]
                -> mapping(z, c, psi, cutoff) -> ws (1, num_ws, w_dim)
                -> synthesis(ws, noise_mode, noise_strength) -> img (1, 3, R, R)
                -> [colour calibration of the random default]  -> [resize R -> size]  -> (1, 3, size, size)

Networks come from:
    StyleGANGenerator.default(size, device)     the embedded "stylegan2": config-f architecture, random weights
                                                 from a fixed init seed, made presentable (see build_default_network).
    StyleGANGenerator.from_file(path, ...)      .safetensors / .pt written by `save` (config in the file);
                                                 .pkl and other .pt files go to engine.generators.pickle_loader.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.clock import FrameTime
from engine.errors import SetupError, UsageError
from engine.generators import stylegan2 as sg2
from engine.generators.base import Generator
from engine.generators.blend import Blend
from engine.generators.layers import Bender, LayerView, WeightController, parse_edits
from engine.generators.motion import (
    DEFAULT_FEATURES,
    LatentWalk,
    WalkClock,
    interpolate,
    loop_position,
    seed_to_z,
)
from engine.output import stylegan_square
from engine.params import Params
from engine.paths import user_path

log = logging.getLogger(__name__)

#: safetensors metadata / .pt dict marker of our own network files.
FILE_FORMAT = "engine.stylegan2"
#: Keys of the colour calibration inside saved files (not network tensors).
CALIB_WEIGHT, CALIB_BIAS = "engine.color.weight", "engine.color.bias"
#: The walk of base seed s is the noise field seeded with s ^ WALK_SEED_XOR (a different stream from the z draw).
WALK_SEED_XOR = 0x5EEDA1C5
#: How many seeds keep their uploaded z and walk on the device.
#: The deepest render scale the governor uses (quarter resolution); shape_variants prepares 1..this for it.
MAX_RESOLUTION_DROP = 2
SEED_CACHE = 128  # > the 64 loop_seeds a loop may visit, so a loop never re-uploads its keyframes

#: Embedded default widths. CUDA: full config-f. CPU: channel_base/channel_max cut so a 256x256 frame stays
#: interactive on a laptop-class CPU (same architecture and layer names, fewer feature maps per layer).
CUDA_DEFAULT = dict(channel_base=32768, channel_max=512)
CPU_DEFAULT = dict(channel_base=4096, channel_max=128)
DEFAULT_SIZE = 256


def check_size(size: Any, what: str = "--size") -> int:
    """A square output size: a power of two in 64..1024, else UsageError."""
    try:
        s = int(size)
    except (TypeError, ValueError):
        raise UsageError(f"{what} {size!r} is not a number; use a power of two from 64 to 1024 (e.g. 256 or 512)") from None
    if s != size and not (isinstance(size, float) and size == s):
        raise UsageError(f"{what} {size!r} is not an integer; use a power of two from 64 to 1024")
    if s < 64 or s > 1024 or s & (s - 1):
        raise UsageError(f"{what} {size} is not supported by StyleGAN; use a power of two from 64 to 1024 (64, 128, 256, 512, 1024)")
    return s


def synthesis_layer_names(synthesis: torch.nn.Module) -> list[str]:
    """Names (relative to synthesis) of the layers whose outputs are feature maps, in execution order:
    b4.conv1, b4.torgb, b8.conv0, b8.conv1, b8.torgb, ... for StyleGAN2; input, L0_36_512, ... for StyleGAN3."""
    kinds = ("SynthesisLayer", "ToRGBLayer", "SynthesisInput")
    return [n for n, m in synthesis.named_modules() if n and type(m).__name__ in kinds]


# ----------------------------------------------------------------------------------------------------------------
# The embedded default network.
# ----------------------------------------------------------------------------------------------------------------


def build_default_network(resolution: int, *, channel_base: int, channel_max: int, init_seed: int = 0,
                          num_fp16_res: int = 4, noise_strength: float = 0.08, rgb_decay: float = 0.8,
                          device: torch.device | str = "cpu", init_kwargs: dict[str, Any] | None = None) -> sg2.Generator:
    """A config-f StyleGAN2 with deterministic random weights, shaped into something worth looking at.
    init_kwargs: build this architecture instead of config-f (a random twin of a loaded network, for blending).

    Random init follows NVlabs exactly (torch.randn under a fixed seed, on the CPU so every device gets the
    same weights). Three deliberate departures from "untrained", all deterministic:
      * noise_strength of every layer = `noise_strength` (NVlabs initialises it to 0, which would make
        noise_mode a no-op); small, so it adds grain without drowning the structure;
      * torgb of resolution r is scaled by rgb_decay ** (log2(r) - 2): coarse layers dominate, giving the
        1/f-like spectrum of natural imagery instead of per-pixel static from the finest torgb;
      * mapping.w_avg = the mean w over 1024 z drawn from RandomState(init_seed), so truncation (psi) pulls
        towards the centre of this network's W space, as it does for a trained one.
    """
    kwargs = init_kwargs or sg2.config_f_kwargs(resolution, channel_base=channel_base, channel_max=channel_max,
                                                num_fp16_res=num_fp16_res)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(init_seed))
        net = sg2.Generator(**kwargs)
    with torch.no_grad():
        for name, m in net.synthesis.named_modules():
            if isinstance(m, sg2.SynthesisLayer) and m.use_noise:
                m.noise_strength.fill_(noise_strength)
            if isinstance(m, sg2.ToRGBLayer):
                res = int(name.split(".")[0][1:])
                m.weight.mul_(rgb_decay ** (math.log2(res) - 2))
    net = net.to(device).eval().requires_grad_(False)
    with torch.no_grad():
        z = torch.as_tensor(np.random.RandomState(int(init_seed)).randn(1024, net.z_dim), dtype=torch.float32, device=device)
        c = torch.zeros([z.shape[0], net.c_dim], device=device)
        w = net.mapping(z, c)[:, 0]  # (1024, w_dim)
        net.mapping.w_avg.copy_(w.mean(dim=0))
    return net


def colour_calibration(net: torch.nn.Module, device: torch.device, seeds: tuple[int, ...] = (0, 1, 2, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed affine colour map for a random-init network: out = M @ (img - mean), per pixel.

    Random weights give low-contrast output with strongly correlated channels (greyish). M whitens the
    3 channels over a few seeds' images (ZCA: decorrelated, unit variance) and scales to std 0.5, so most
    values land in [-1, 1] with saturated, varied colour. Computed once at setup; deterministic per device.
    Returns weight (3, 3, 1, 1) and bias (3,) for a 1x1 conv.
    """
    with torch.no_grad():
        z = torch.as_tensor(np.concatenate([seed_to_z(s, net.z_dim) for s in seeds]), dtype=torch.float32, device=device)
        c = torch.zeros([z.shape[0], net.c_dim], device=device)
        img = net.synthesis(net.mapping(z, c), noise_mode="const").double()  # (S, 3, R, R)
        x = img.permute(1, 0, 2, 3).reshape(3, -1)  # (3, S*R*R)
        mean = x.mean(dim=1)
        cov = torch.cov(x) + 1e-6 * torch.eye(3, dtype=x.dtype, device=x.device)
        evals, evecs = torch.linalg.eigh(cov)
        m = 0.5 * evecs @ torch.diag(evals.rsqrt()) @ evecs.T  # (3, 3) ZCA whitening to std 0.5
        weight = m.float().reshape(3, 3, 1, 1)
        bias = -(m @ mean).float()
    return weight, bias


# ----------------------------------------------------------------------------------------------------------------
# The render-loop generator.
# ----------------------------------------------------------------------------------------------------------------


class StyleGANGenerator(Generator):
    name = "stylegan2"

    def __init__(self, net: torch.nn.Module, *, size: int | None, device: torch.device | str, source: str,
                 calibration: tuple[torch.Tensor, torch.Tensor] | None = None, notes: list[str] | None = None,
                 walk_features: int = DEFAULT_FEATURES, output: tuple[int, int] | None = None):
        """size: the square rendered (resized on the device from the network's own); output: the show's output
        size, from which the square is chosen when size is None (engine.output.stylegan_square)."""
        device = torch.device(device)
        for attr in ("mapping", "synthesis", "z_dim", "c_dim", "num_ws", "img_resolution"):
            if not hasattr(net, attr):
                raise UsageError(f"{source}: the network has no {attr!r}; it is not a StyleGAN2/3 generator")
        native = int(net.img_resolution)
        if size is None and output is not None:
            size = stylegan_square(output, native)
        out = check_size(native if size is None else size)
        super().__init__(out, out, device)
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.name = "stylegan3" if type(net).__module__.endswith("stylegan3") else "stylegan2"
        self.source = source
        self.native_resolution = native
        self.z_dim = int(net.z_dim)
        self.c_dim = int(net.c_dim)
        self.num_ws = int(net.num_ws)
        self.notes = list(notes or [])
        self.walk_features = int(walk_features)
        self.warnings: list[str] = []
        self._warned: set[str] = set()

        # Colour calibration as a 1x1 conv (one op per frame), or None for trained networks.
        self.calibration = None
        if calibration is not None:
            self.calibration = (calibration[0].to(self.device, torch.float32), calibration[1].to(self.device, torch.float32))

        # Per-frame buffers, allocated once.
        self._z = torch.zeros((1, self.z_dim), dtype=torch.float32, device=self.device)
        self._c = torch.zeros((1, self.c_dim), dtype=torch.float32, device=self.device)
        # Live knobs go into the networks as 0-d tensors filled per frame: as Python floats they would be baked into
        # compiled code and CUDA graphs, and every new fader value would recompile (see engine.backends.common).
        self._psi = torch.ones((), dtype=torch.float32, device=self.device)
        self._noise_strength = torch.ones((), dtype=torch.float32, device=self.device)
        self._seeds: OrderedDict[int, tuple[torch.Tensor, LatentWalk]] = OrderedDict()
        self._raw_key: tuple[float, ...] | None = None
        self._raw_z: torch.Tensor | None = None
        self._clock = WalkClock()

        # StyleGAN tools (engine.generators.layers / blend): armed from snap.stylegan when its texts change.
        self.layer_view = LayerView(self.net.synthesis, self._warn_once)
        self.bender = Bender(self.net.synthesis, self._warn_once)
        self.weights = WeightController(self.net)
        self.option_blend: Blend | None = None  # from the generator option blend=PATH
        self._live_blend: Blend | None = None  # from stylegan.blend_file
        self._blend_path = ""
        self._edits_text = ""
        self._edits: list = []
        self._class_index = -1
        self._transform = (0.0, 0.0, 0.0)  # StyleGAN3 input translate/rotate as last applied (the loaded buffer until changed)
        self._w_path = ""
        self._w_file: torch.Tensor | None = None
        if out != native:
            self.notes.append(f"network renders {native}x{native}; resized to {out}x{out} on the device (antialiased bilinear)")

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def default(cls, size: int | None, device: torch.device | str, output: tuple[int, int] | None = None,
                **options: Any) -> "StyleGANGenerator":
        """The embedded "stylegan2". Options: channel_base, channel_max, init_seed, num_fp16_res, noise_strength,
        rgb_decay, calibrate (bool), walk_features, blend (PATH of a second network to blend with)."""
        device = torch.device(device)
        known = {"channel_base", "channel_max", "init_seed", "num_fp16_res", "noise_strength", "rgb_decay", "calibrate", "walk_features", "blend"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(f"unknown option(s) for --generator stylegan2: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if size is None and output is not None:
            size = stylegan_square(output, 1024)  # built at the square the output needs (power of two, 64..1024)
        res = check_size(DEFAULT_SIZE if size is None else size)
        widths = dict(CUDA_DEFAULT if device.type == "cuda" else CPU_DEFAULT)
        reduced = device.type != "cuda" and "channel_base" not in options and "channel_max" not in options
        for k in ("channel_base", "channel_max"):
            if k in options:
                widths[k] = _positive_int(options[k], k)
        init_seed = _positive_int(options.get("init_seed", 0), "init_seed", allow_zero=True)
        net = build_default_network(
            res, channel_base=widths["channel_base"], channel_max=widths["channel_max"], init_seed=init_seed,
            num_fp16_res=_positive_int(options.get("num_fp16_res", 4), "num_fp16_res", allow_zero=True),
            noise_strength=_finite_float(options.get("noise_strength", 0.08), "noise_strength"),
            rgb_decay=_finite_float(options.get("rgb_decay", 0.8), "rgb_decay"), device=device,
        )
        calib = colour_calibration(net, device) if bool(options.get("calibrate", True)) else None
        notes = [f"random weights from init_seed {init_seed} (not trained): abstract imagery"]
        if reduced:
            notes.append(
                f"CPU: reduced widths channel_base={widths['channel_base']}, channel_max={widths['channel_max']} "
                f"(config-f is 32768/512; pass channel_base/channel_max options to change)"
            )
        if calib is not None:
            notes.append("fixed colour calibration (ZCA over seeds 0-3) applied to the output")
        gen = cls(net, size=res, device=device, source=f"embedded stylegan2 (init_seed {init_seed})", calibration=calib,
                  notes=notes, walk_features=int(options.get("walk_features", DEFAULT_FEATURES)))
        if options.get("blend"):
            gen.set_blend_network(options["blend"])
        return gen

    @classmethod
    def from_file(cls, path: str | Path, size: int | None, device: torch.device | str, output: tuple[int, int] | None = None,
                  **options: Any) -> "StyleGANGenerator":
        """Load a network file. Dispatch by suffix: .safetensors (ours), .pt/.pth (ours, else rosinality via the
        pickle loader), .pkl (NVlabs, via engine.generators.pickle_loader.load_network)."""
        path = Path(path)
        known = {"walk_features", "blend"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(f"unknown option(s) for generator {path.name}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        net, calib = load_network_file(path)
        gen = cls(net, size=size, device=device, source=str(path), calibration=calib, output=output,
                  walk_features=int(options.get("walk_features", DEFAULT_FEATURES)))
        if options.get("blend"):
            gen.set_blend_network(options["blend"])
        return gen

    def set_blend_network(self, spec: str | Path) -> Blend:
        """Load network B for stylegan.blend (a file, or "stylegan2:INIT_SEED" for another embedded default of
        the same widths). UsageError when it cannot be read or is not the same architecture."""
        self.option_blend = self._load_blend(spec)
        self.notes.append(f"blend network: {self.option_blend.source}")
        return self.option_blend

    def _load_blend(self, spec: str | Path) -> Blend:
        text = str(spec)
        if text.startswith("stylegan2:") and type(self.net) is sg2.Generator:
            seed = _positive_int(text.partition(":")[2], "blend init seed", allow_zero=True)
            k = self.net.init_kwargs
            other = build_default_network(self.native_resolution, channel_base=k["channel_base"], channel_max=k["channel_max"],
                                          init_seed=seed, init_kwargs=k)
        else:
            path = user_path(text, "blend network")
            if not path.is_file():
                raise UsageError(f"blend network not found: {path}")
            other, _ = load_network_file(path)
        return Blend(self.net, other, text)

    def save(self, path: str | Path) -> Path:
        """Write the network (and colour calibration) as .safetensors with the init kwargs in the metadata,
        or as a .pt dict {"format", "config", "state_dict"} when the suffix is .pt/.pth."""
        path = Path(path)
        config = getattr(self.net, "init_kwargs", None)
        if config is None:
            raise UsageError(f"{self.source}: this network has no init kwargs, so it cannot be saved in engine format")
        # The loaded weights, not the live ones: edits and blending are performance state, kept in parameters.
        tensors = {k: self.weights.originals.get(k, v).detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous().clone()
                   for k, v in self.net.state_dict().items()}
        if self.calibration is not None:
            tensors[CALIB_WEIGHT] = self.calibration[0].detach().cpu().contiguous().clone()
            tensors[CALIB_BIAS] = self.calibration[1].detach().cpu().contiguous().clone()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in (".pt", ".pth"):
            torch.save({"format": FILE_FORMAT, "config": _jsonable(config), "state_dict": tensors}, path)
        else:
            from safetensors.torch import save_file

            save_file(tensors, str(path), metadata={"format": FILE_FORMAT, "config": json.dumps(_jsonable(config))})
        return path

    # -- per frame ----------------------------------------------------------------------------------------------
    def _seed_entry(self, seed: int) -> tuple[torch.Tensor, LatentWalk]:
        entry = self._seeds.get(seed)
        if entry is None:
            # The only host->device traffic of the latent path: once per new seed.
            z = torch.as_tensor(seed_to_z(seed, self.z_dim), dtype=torch.float32).to(self.device)
            walk = LatentWalk(self.z_dim, (seed ^ WALK_SEED_XOR) & 0xFFFFFFFF, self.device, self.walk_features)
            entry = (z, walk)
            self._seeds[seed] = entry
            if len(self._seeds) > SEED_CACHE:
                self._seeds.popitem(last=False)
        else:
            self._seeds.move_to_end(seed)
        return entry

    def validate(self, snap: Params) -> None:
        """Setup: the show's starting tool texts (edits, layer, bend, blend) and latent must all apply; the first
        problem raises UsageError instead of the live path's warning."""
        self._strict = True
        try:
            self.update_tools(snap.stylegan, 0.0)
            raw = snap.latent.z
            if raw and len(raw) != self.z_dim:
                self._warn_once("zlen", f"latent.z has {len(raw)} values but this network's z has {self.z_dim}")
        finally:
            self._strict = False

    def _warn_once(self, key: str, message: str) -> None:
        if getattr(self, "_strict", False):
            # The live path's consequence ("; clause ignored") does not apply: setup stops instead.
            raise UsageError(re.sub(r"; (clause ignored|showing the image|not blending|ignored|using [^;]*)$", "", message))
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(message)
            log.warning(message)

    def z_for(self, snap: Params, when: FrameTime) -> torch.Tensor:
        """The frame's z (1, z_dim) on the device: seed draw (or raw z), moved along the walk. Returns an internal
        buffer, valid until the next call."""
        lat = snap.latent
        z_seed, walk = self._seed_entry(int(lat.seed))
        raw = lat.z
        if raw:
            if len(raw) == self.z_dim:
                if raw is not self._raw_key and raw != self._raw_key:
                    self._raw_z = torch.as_tensor(raw, dtype=torch.float32).reshape(1, self.z_dim).to(self.device)
                    self._raw_key = raw
                z_seed = self._raw_z  # type: ignore[assignment]
            else:
                self._warn_once(f"zlen{len(raw)}", f"latent.z has {len(raw)} values but this network's z has {self.z_dim}; ignored, using seed {lat.seed}")
        tau = self._clock.advance(when.t, lat.speed)
        if lat.motion == "walk":
            # speed 0 freezes tau (a still frame on the walk), amplitude 0 gives z_seed exactly: both knobs are
            # continuous, so turning them never jumps. A loop period makes the walk repeat exactly (a perfect loop).
            period = (when.t, lat.loop_period, lat.speed) if lat.loop_period > 0 else None
            return walk.z(z_seed, tau, lat.amplitude, out=self._z, period=period)
        if lat.motion == "loop":
            seeds = [int(s) for s in lat.loop_seeds] or [int(lat.seed) + k for k in range(4)]
            if any(s < 0 or s >= 2**32 for s in seeds):
                self._warn_once(f"loopseeds{lat.loop_seeds}", "latent.loop_seeds: seeds must be whole numbers 0..2^32-1; using seed..seed+3")
                seeds = [int(lat.seed) + k for k in range(4)]
            period = lat.loop_period if lat.loop_period > 0 else 4.0 * len(seeds)
            i, j, frac = loop_position(when.t, len(seeds), period)
            return interpolate(self._seed_entry(seeds[i])[0], self._seed_entry(seeds[j])[0], frac, lat.loop_interp, self._z)
        return self._z.copy_(z_seed)

    def ws_for(self, snap: Params, when: FrameTime) -> torch.Tensor:
        """(1, num_ws, w_dim) for this frame: mapping with truncation, or the loaded stylegan.w_file."""
        lat = snap.latent
        cutoff = int(lat.truncation_cutoff) or None
        psi = float(lat.psi)
        if self._w_file is not None:
            self._clock.advance(when.t, lat.speed)  # keep the walk's clock running underneath
            ws = self._w_file
            if psi != 1:
                ws = ws.clone()
                ws[:, :cutoff] = self.net.mapping.w_avg.lerp(ws[:, :cutoff], psi)  # as NVlabs truncation
            return ws
        z = self.z_for(snap, when)
        return self.net.mapping(z, self._c, truncation_psi=self._psi.fill_(psi), truncation_cutoff=cutoff)

    def synthesize(self, ws: torch.Tensor, snap: Params) -> torch.Tensor:
        """ws (1, num_ws, w_dim) -> the network's image (1, 3, R, R) float32 (before calibration and resize)."""
        lat = snap.latent
        kwargs: dict[str, Any] = {"noise_mode": lat.noise_mode}
        # Only our StyleGAN2 layers take the global noise multiplier (StyleGAN3 has no noise inputs).
        if isinstance(self.net.synthesis, sg2.SynthesisNetwork):
            kwargs["noise_strength"] = self._noise_strength.fill_(float(lat.noise_strength))
            drop = int(snap.stylegan.resolution_drop)
            if drop:
                if self.max_resolution_drop == 0:
                    self._warn_once("drop:arch", "stylegan.resolution_drop needs a StyleGAN2 'skip' network; ignored")
                else:
                    kwargs["drop_blocks"] = min(drop, self.max_resolution_drop)
        elif snap.stylegan.resolution_drop:
            self._warn_once("drop:sg3", "stylegan.resolution_drop applies to StyleGAN2 networks only; ignored")
        return self.net.synthesis(ws, **kwargs)

    @property
    def max_resolution_drop(self) -> int:
        """How many blocks resolution_drop may skip: StyleGAN2 'skip' networks down to 16 px, else 0."""
        syn = self.net.synthesis
        if not isinstance(syn, sg2.SynthesisNetwork) or self.net.init_kwargs.get("architecture", "skip") != "skip":
            return 0
        return max(0, min(4, int(math.log2(syn.img_resolution)) - 4))

    def shape_variants(self, base: Params) -> list[Params]:
        """The governor's render-scale levels, so a compiled backend prepares each (see engine.control.governor)."""
        import dataclasses

        return [dataclasses.replace(base, stylegan=dataclasses.replace(base.stylegan, resolution_drop=d))
                for d in range(1, min(MAX_RESOLUTION_DROP, self.max_resolution_drop) + 1)]

    def finish(self, img: torch.Tensor) -> torch.Tensor:
        """Network image (1, 3, R, R) -> output (1, 3, size, size): calibration, resize."""
        if self.calibration is not None:
            img = F.conv2d(img, self.calibration[0], self.calibration[1])
        if img.shape[-1] != self.width or img.shape[-2] != self.height:
            img = F.interpolate(img, size=(self.height, self.width), mode="bilinear", align_corners=False, antialias=True)
        return img

    def __call__(self, snap: Params, when: FrameTime, source: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            st = snap.stylegan
            self.update_tools(st, when.t)
            ws = self.ws_for(snap, when)
            if self.layer_view.active:
                out, captured = self.layer_view.run(lambda: self.synthesize(ws, snap))
                if captured:
                    return self.layer_view.to_rgb(out, (self.height, self.width), st.layer_channels, st.layer_mode)
                return self.finish(out)
            return self.finish(self.synthesize(ws, snap))

    def stills(self, snaps: list[Params]) -> torch.Tensor:
        """Still images of several seeds (and psi values) in one batched pass through mapping and synthesis, when the
        snapshots differ in nothing else; otherwise one call each. (N, 3, size, size). Batched and single renders
        agree to float rounding (a different GEMM batch size), within one level of 8-bit colour."""
        first = snaps[0]

        def rest(s: Params) -> Params:
            return dataclasses.replace(s, latent=dataclasses.replace(s.latent, seed=0, psi=0.0))

        if (len(snaps) == 1 or first.latent.z or first.latent.motion != "still" or self._w_file is not None
                or self.layer_view.active or any(rest(s) != rest(first) for s in snaps[1:])):
            return super().stills(snaps)
        with torch.no_grad():
            self.update_tools(first.stylegan, 0.0)
            if self._w_file is not None or self.layer_view.active:  # armed by this snapshot's tools
                return super().stills(snaps)
            z = torch.cat([self._seed_entry(int(s.latent.seed))[0] for s in snaps])  # (N, z_dim)
            psi = torch.tensor([float(s.latent.psi) for s in snaps], dtype=torch.float32, device=self.device).view(-1, 1, 1)
            cutoff = int(first.latent.truncation_cutoff) or None
            ws = self.net.mapping(z, self._c.expand(len(snaps), -1), truncation_psi=psi, truncation_cutoff=cutoff)
            return self.finish(self.synthesize(ws, first))  # ws (N, num_ws, w_dim) -> (N, 3, size, size)

    # -- StyleGAN tools -----------------------------------------------------------------------------------------
    def update_tools(self, st: Any, t: float) -> None:
        """Bring class label, w_file, layer view, bending, blending and edits in line with snap.stylegan.
        Texts are parsed only when they change; per frame this is host arithmetic plus, for time-dependent
        edits/blends, in-place device writes into the edited tensors."""
        if st.class_index != self._class_index:
            self._set_class(int(st.class_index))
        if st.w_file != self._w_path:
            self._set_w_file(st.w_file)
        transform = (st.translate_x, st.translate_y, st.rotate)
        if transform != self._transform:
            self._set_transform(transform)
        self.layer_view.set(st.layer)
        self.bender.set(st.bend)
        self.bender.set_time(t)
        if st.blend_file != self._blend_path:
            self._blend_path = st.blend_file
            self._live_blend = None
            if st.blend_file:
                try:
                    self._live_blend = self._load_blend(st.blend_file)
                except (UsageError, SetupError) as e:
                    self._warn_once(f"blendfile:{st.blend_file}", f"stylegan.blend_file: {e}; not blending")
        if st.edits != self._edits_text:
            self._edits_text = st.edits
            self._edits = parse_edits(st.edits, self.weights.names, self._warn_once)
        blend = self._live_blend or self.option_blend
        if blend is None and not self._edits and not self.weights.touched:
            return
        amounts = blend.amounts(st.blend_layers, st.blend, t, self._warn_once) if blend is not None else {}
        self.weights.apply(t, self._edits, amounts, blend.other if blend is not None else None)

    @property
    def weights_edited(self) -> bool:
        return bool(self.weights.touched) or (self.name == "stylegan3" and any(self._transform))

    @property
    def hooks_active(self) -> bool:
        """True while layer view or bending has forward hooks on the synthesis network. A compiled/graphed
        backend should run eagerly then: hooks are added and removed live, and the layer view stops the
        forward pass with an exception."""
        return self.layer_view.active or bool(self.bender.clauses)

    def _set_transform(self, transform: tuple[float, float, float]) -> None:
        """StyleGAN3 translate/rotate: rewrite synthesis.input.transform in place (a graph captured by a backend
        reads the same buffer). Only when the values change: a 3x3 host->device write."""
        self._transform = transform
        if self.name != "stylegan3":
            if any(transform):
                self._warn_once("transform:sg2", "stylegan.translate_x/translate_y/rotate apply to StyleGAN3 networks only; ignored")
            return
        from engine.generators.stylegan3 import set_input_transform

        set_input_transform(self.net, *transform)

    def _set_class(self, index: int) -> None:
        self._class_index = index
        if self.c_dim == 0:
            if index >= 0:
                self._warn_once("class:uncond", "stylegan.class_index is set but this network is unconditional (c_dim 0); ignored")
            return
        self._c.zero_()
        if 0 <= index < self.c_dim:
            self._c[0, index] = 1.0  # a fill kernel with a python scalar: no host sync
        elif index >= self.c_dim:
            self._warn_once(f"class:{index}", f"stylegan.class_index {index} is out of range for c_dim {self.c_dim} (0..{self.c_dim - 1}); using no label")

    def _set_w_file(self, path: str) -> None:
        from engine.generators.project import load_w

        self._w_path = path
        self._w_file = None
        if not path:
            return
        try:
            self._w_file = load_w(path, self.num_ws, int(self.net.w_dim)).to(self.device)
        except UsageError as e:
            self._warn_once(f"wfile:{path}", f"stylegan.w_file: {e}; using the mapping network")

    # -- introspection ------------------------------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        return synthesis_layer_names(self.net.synthesis)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"mapping": self.net.mapping, "synthesis": self.net.synthesis}

    def info(self) -> dict[str, Any]:
        syn = self.net.synthesis
        channels = getattr(syn, "channels_dict", None)
        arch = type(self.net).__module__ + "." + type(self.net).__name__
        if type(self.net) is sg2.Generator:  # not isinstance: StyleGAN3's Generator subclasses it
            a = self.net.init_kwargs.get("architecture", "skip")
            arch = f"StyleGAN2 ({a}), {self.net.mapping.num_layers}-layer mapping"
        elif self.name == "stylegan3":
            arch = f"StyleGAN3, {getattr(self.net.mapping, 'num_layers', '?')}-layer mapping"
        fp16 = [f"b{r}" for r in getattr(syn, "block_resolutions", []) if getattr(getattr(syn, f"b{r}"), "use_fp16", False)]
        d = super().info()
        d.update({
            "source": self.source,
            "architecture": arch,
            "resolution": self.native_resolution,
            "num_ws": self.num_ws,
            "z_dim": self.z_dim,
            "w_dim": int(getattr(self.net, "w_dim", 0)),
            "c_dim": self.c_dim,
            "channels": {str(k): v for k, v in channels.items()} if channels else None,
            "parameters": sum(p.numel() for p in self.net.parameters()),
            "fp16_blocks": fp16 if self.device.type == "cuda" else [],
            "max_resolution_drop": self.max_resolution_drop,
            "layers": self.layer_names(),
            "edit_parameters": edit_parameter_names(self.weights.names),
            "notes": list(self.notes),
            "blend_network": (self._live_blend or self.option_blend).source if (self._live_blend or self.option_blend) else None,
        })
        if self.warnings:
            d["warnings"] = list(self.warnings)
        return d


# ----------------------------------------------------------------------------------------------------------------
# File loading helpers.
# ----------------------------------------------------------------------------------------------------------------


def edit_parameter_names(names: list[str]) -> list[str]:
    """What stylegan.edits can name, one line per layer: 'b16.conv0: weight bias noise_strength affine.weight ...'
    (synthesis. may be left out of an edit; mapping. may not)."""
    by_layer: dict[str, list[str]] = {}
    for full in names:
        parts = full.split(".")
        if parts[0] == "synthesis":
            parts = parts[1:]
        # StyleGAN2 blocks and the mapping are two levels deep (b16.conv0, mapping.fc0), StyleGAN3 layers one (L3_36_512).
        depth = 2 if parts[0] == "mapping" or (parts[0].startswith("b") and len(parts) > 2) else 1
        depth = min(depth, len(parts) - 1)
        by_layer.setdefault(".".join(parts[:depth]), []).append(".".join(parts[depth:]))
    return [f"{layer}: {' '.join(rest)}" for layer, rest in by_layer.items()]


def _positive_int(v: Any, name: str, allow_zero: bool = False) -> int:
    try:
        if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
            raise ValueError
        i = int(v)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"generator option {name}={v!r} is not a whole number") from None
    if i < 0 or (i == 0 and not allow_zero):
        raise UsageError(f"generator option {name}={v!r} must be {'>= 0' if allow_zero else '> 0'}")
    return i


def _finite_float(v: Any, name: str) -> float:
    try:
        if isinstance(v, bool):
            raise ValueError
        f = float(v)
    except (TypeError, ValueError):
        raise UsageError(f"generator option {name}={v!r} is not a number") from None
    if not math.isfinite(f):
        raise UsageError(f"generator option {name}={v!r} must be finite")
    return f


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


def load_network_file(path: str | Path) -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor] | None]:
    """(network on the CPU, colour calibration or None) from a .safetensors/.pt/.pth/.pkl file; dispatch by
    suffix: our own files here, everything else through engine.generators.pickle_loader.load_network."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"generator file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        loaded = _load_safetensors(path)
        # None: not ours, e.g. a StyleGAN3 network or a converted-.pkl cache file.
        return loaded if loaded is not None else (_load_foreign(path), None)
    if suffix in (".pt", ".pth"):
        loaded = _load_ours_pt(path)
        return loaded if loaded is not None else (_load_foreign(path), None)
    if suffix == ".pkl":
        return _load_foreign(path), None
    raise UsageError(f"{path}: unsupported network file type {suffix!r}; use .pkl, .pt or .safetensors")


def _build(config: dict[str, Any], state: dict[str, torch.Tensor], path: Path) -> sg2.Generator:
    from engine.generators.pickle_loader import check_settings

    if not isinstance(config, dict):
        raise UsageError(f"{path}: its stored config is not a table of settings")
    check_settings("stylegan2", config, str(path))  # sizes and parameter count, before anything is allocated
    try:
        with torch.random.fork_rng(devices=[]):  # construction draws random init we overwrite; keep the global RNG intact
            net = sg2.Generator(**config)
    except TypeError as e:
        raise UsageError(f"{path}: its stored config does not describe a StyleGAN2 generator ({e})") from None
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UsageError(
            f"{path}: tensors do not match the stored config (missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
    return net


def _split_calibration(state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    if CALIB_WEIGHT in state:
        return state.pop(CALIB_WEIGHT), state.pop(CALIB_BIAS)
    return None


def _load_safetensors(path: Path) -> tuple[sg2.Generator, Any] | None:
    """Our StyleGAN2 file (with its colour calibration), or None for any other safetensors (the pickle loader
    reads StyleGAN3 files and its caches, and rejects files without engine metadata)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise UsageError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FILE_FORMAT or "config" not in meta:
        return None
    calib = _split_calibration(state)
    return _build(json.loads(meta["config"]), state, path), calib


def _load_ours_pt(path: Path) -> tuple[sg2.Generator, Any] | None:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        return None  # not a plain tensor dict (e.g. a full pickle): the foreign loader decides
    if not (isinstance(obj, dict) and obj.get("format") == FILE_FORMAT):
        return None
    state = dict(obj["state_dict"])
    calib = _split_calibration(state)
    return _build(dict(obj["config"]), state, path), calib


def _load_foreign(path: Path) -> torch.nn.Module:
    """Official NVlabs .pkl, rosinality .pt and StyleGAN3 files: engine.generators.pickle_loader.load_network(path)
    returns an nn.Module built from NVlabs init kwargs (stylegan2.Generator or stylegan3.Generator)."""
    try:
        from engine.generators import pickle_loader
    except ImportError as e:
        raise SetupError(f"{path}: loading {path.suffix} networks needs engine.generators.pickle_loader, which failed to import ({e})") from None
    return pickle_loader.load_network(path)
