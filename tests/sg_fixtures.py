"""Test helpers for StyleGAN network files: official-layout NVlabs pickles and rosinality-layout networks.

official_pickle(...) writes the bytes an NVlabs training run writes (pickle.dump of {'G', 'D', 'G_ema',
'training_set_kwargs', 'augment_pipe'}), without NVlabs code: while pickling, fake `torch_utils.persistence` and
`dnnlib.util` modules sit in sys.modules so the pickle names the same globals, and every network module reduces to
`torch_utils.persistence._reconstruct_persistent_obj(meta)`, meta = dict(type='class', version=6, module_src,
class_name, state=<module __dict__>), exactly as persistence.persistent_class's __reduce__ does. The fake modules
are removed afterwards. Constructor arguments are recorded into `_init_args` / `_init_kwargs` the way the
persistent_class decorator does (see recording_init_kwargs).

RosinalityGenerator is a small re-statement of rosinality/stylegan2-pytorch's Generator (same module names and
forward math: EqualLinear, fused ModulatedConv2d with conv_transpose2d + Blur, NoiseInjection, FusedLeakyReLU,
ToRGB with Upsample), with free channel widths so it can be tiny.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import pickle
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

PERSISTENCE_VERSION = 6  # torch_utils.persistence._version in NVlabs' repos

# The first lines of NVlabs' module sources: the loader may read them, must never run them.
SG3_SRC_HEAD = '"""Generator architecture from the paper\n"Alias-Free Generative Adversarial Networks"."""\n'
SG2_SRC_HEAD = '"""Network architectures from the paper\n"Analyzing and Improving the Image Quality of StyleGAN"."""\n'


def _fake_modules() -> dict[str, types.ModuleType]:
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called: the loader under test must not import this module
        raise AssertionError("fake persistence module was used for loading")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    util.EasyDict = EasyDict

    torch_utils = types.ModuleType("torch_utils")
    torch_utils.persistence = persistence
    dnnlib = types.ModuleType("dnnlib")
    dnnlib.util = util
    dnnlib.EasyDict = EasyDict
    return {"torch_utils": torch_utils, "torch_utils.persistence": persistence, "dnnlib": dnnlib, "dnnlib.util": util}


@contextlib.contextmanager
def fake_nvlabs_modules() -> Iterator[dict[str, types.ModuleType]]:
    """Register fake torch_utils / dnnlib modules for the duration (for pickling only); always removed after."""
    mods = _fake_modules()
    assert not any(name in sys.modules for name in mods), "real NVlabs modules are importable here; tests assume not"
    sys.modules.update(mods)
    try:
        yield mods
    finally:
        for name in mods:
            sys.modules.pop(name, None)


@contextlib.contextmanager
def recording_init_kwargs(*modules: types.ModuleType) -> Iterator[None]:
    """While active, every nn.Module class defined in `modules` stores deep copies of its constructor arguments as
    `_init_args` / `_init_kwargs`, as torch_utils.persistence.persistent_class does."""
    patched = []
    for mod in modules:
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == mod.__name__:
                orig = obj.__init__

                def init(self, *args, __orig=orig, **kwargs):
                    __orig(self, *args, **kwargs)
                    self._init_args = copy.deepcopy(args)
                    self._init_kwargs = copy.deepcopy(kwargs)

                obj.__init__ = init
                patched.append((obj, orig))
    try:
        yield
    finally:
        for cls, orig in patched:
            cls.__init__ = orig


class _OfficialPickler(pickle.Pickler):
    def __init__(self, f, persistent_types: dict[type, str], module_src: str):
        super().__init__(f, protocol=4)  # what NVlabs' training loop writes under Python 3.8+
        self.persistent_types = persistent_types
        self.module_src = module_src

    def reducer_override(self, obj):
        if isinstance(obj, nn.Module) and type(obj) in self.persistent_types:
            state = obj.__getstate__()
            if isinstance(state.get("_init_kwargs"), dict):
                # NVlabs' train.py passes nested settings (mapping_kwargs) as dnnlib.util.EasyDict.
                EasyDict = sys.modules["dnnlib.util"].EasyDict
                kw = {k: EasyDict(v) if isinstance(v, dict) else v for k, v in state["_init_kwargs"].items()}
                state = {**state, "_init_kwargs": kw}
            meta = dict(type="class", version=PERSISTENCE_VERSION, module_src=self.module_src,
                        class_name=self.persistent_types[type(obj)], state=state)
            return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,)
        return NotImplemented


class Discriminator(nn.Module):
    """Stand-in for the D every official pickle carries (the loader must skip it)."""

    def __init__(self):
        super().__init__()
        self.b4 = nn.Module()
        self.b4.fc = nn.Linear(4, 1)
        self.register_buffer("resample_filter", torch.ones(4, 4) / 16)


class AugmentPipe(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("p", torch.tensor(0.3))
        self.xflip = 1.0


def official_pickle(path: Path, G_ema: nn.Module, G: nn.Module | None = None, module_src: str = "",
                    extra_state: dict[str, Any] | None = None) -> Path:
    """Write `path` in the layout of an NVlabs network snapshot. Module classes of G_ema's defining module become
    persistent objects; `extra_state` entries are added to G_ema's pickled state (for hostile-content tests)."""
    net_module = sys.modules[type(G_ema).__module__]
    persistent = {obj: obj.__name__ for obj in vars(net_module).values()
                  if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == net_module.__name__}
    persistent[Discriminator] = "Discriminator"
    persistent[AugmentPipe] = "AugmentPipe"
    with fake_nvlabs_modules() as mods:
        EasyDict = mods["dnnlib.util"].EasyDict
        if extra_state:
            G_ema.__dict__.update(extra_state)
        try:
            data = dict(G=G if G is not None else G_ema, D=Discriminator(), G_ema=G_ema,
                        training_set_kwargs=EasyDict(class_name="training.dataset.ImageFolderDataset",
                                                     path="~/datasets/x.zip", resolution=G_ema.img_resolution),
                        augment_pipe=AugmentPipe())
            buf = io.BytesIO()
            _OfficialPickler(buf, persistent, module_src).dump(data)
        finally:
            for k in extra_state or {}:
                G_ema.__dict__.pop(k, None)
    path.write_bytes(buf.getvalue())
    return path


# ----------------------------------------------------------------------------------------------------------------
# rosinality layout.
# ----------------------------------------------------------------------------------------------------------------


def _make_kernel(k: list[float]) -> torch.Tensor:
    k = torch.tensor(k, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


def _upfirdn2d_native(x: torch.Tensor, kernel: torch.Tensor, up: int, pad: tuple[int, int]) -> torch.Tensor:
    """rosinality's upfirdn2d_native for up_x = up_y = up, down 1, pad (p0, p1) on both axes."""
    n, c, h, w = x.shape
    out = x.reshape(n * c, 1, h, 1, w, 1)
    out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])
    out = out.reshape(n * c, 1, h * up, w * up)
    p0, p1 = pad
    out = F.pad(out, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    out = out[:, :, max(-p0, 0): out.shape[2] - max(-p1, 0), max(-p0, 0): out.shape[3] - max(-p1, 0)]
    out = F.conv2d(out, torch.flip(kernel, [0, 1]).view(1, 1, *kernel.shape))
    return out.reshape(n, c, out.shape[2], out.shape[3])


def _fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    shape = [1, -1] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(*shape), 0.2) * math.sqrt(2)


class PixelNorm(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    def __init__(self, in_dim, out_dim, bias_init=0.0, lr_mul=1.0, activation=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init))
        self.activation = activation
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x):
        if self.activation:
            return _fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class Blur(nn.Module):
    def __init__(self, kernel, pad, upsample_factor=1):
        super().__init__()
        k = _make_kernel(kernel)
        if upsample_factor > 1:
            k = k * (upsample_factor ** 2)
        self.register_buffer("kernel", k)
        self.pad = pad

    def forward(self, x):
        return _upfirdn2d_native(x, self.kernel, 1, self.pad)


class Upsample(nn.Module):
    def __init__(self, kernel, factor=2):
        super().__init__()
        self.factor = factor
        k = _make_kernel(kernel) * (factor ** 2)
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x):
        return _upfirdn2d_native(x, self.kernel, self.factor, self.pad)


class ModulatedConv2d(nn.Module):
    def __init__(self, in_channel, out_channel, kernel_size, style_dim, demodulate=True, upsample=False,
                 blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.kernel_size = kernel_size
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(list(blur_kernel), pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
        self.demodulate = demodulate

    def forward(self, x, style):
        batch, in_channel, height, width = x.shape
        style = self.modulation(style).view(batch, 1, in_channel, 1, 1)
        weight = self.scale * self.weight * style
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
        weight = weight.view(batch * self.out_channel, in_channel, self.kernel_size, self.kernel_size)
        if self.upsample:
            x = x.view(1, batch * in_channel, height, width)
            weight = weight.view(batch, self.out_channel, in_channel, self.kernel_size, self.kernel_size)
            weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, self.kernel_size, self.kernel_size)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = out.view(batch, self.out_channel, out.shape[2], out.shape[3])
            return self.blur(out)
        x = x.view(1, batch * in_channel, height, width)
        out = F.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.view(batch, self.out_channel, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image, noise):
        return image + self.weight * noise


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))

    def forward(self, x):
        return _fused_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    def __init__(self, in_channel, out_channel, kernel_size, style_dim, upsample=False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x, style, noise):
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    def __init__(self, in_channel, style_dim, upsample=True):
        super().__init__()
        if upsample:
            self.upsample = Upsample([1, 3, 3, 1])
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channel, size=4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch):
        return self.input.repeat(batch, 1, 1, 1)


class RosinalityGenerator(nn.Module):
    """rosinality's Generator with an explicit channels dict {4: c, 8: c, ...}; forward(z) uses the stored noises
    (randomize_noise=False) and no truncation. z (N, style_dim) -> img (N, 3, size, size)."""

    def __init__(self, size, style_dim, n_mlp, channels: dict[int, int], lr_mlp=0.01):
        super().__init__()
        self.size = size
        self.style_dim = style_dim
        layers = [PixelNorm()] + [EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu")
                                  for _ in range(n_mlp)]
        self.style = nn.Sequential(*layers)
        self.input = ConstantInput(channels[4])
        self.conv1 = StyledConv(channels[4], channels[4], 3, style_dim)
        self.to_rgb1 = ToRGB(channels[4], style_dim, upsample=False)
        self.log_size = int(math.log(size, 2))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = (layer_idx + 5) // 2
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, 2 ** res, 2 ** res))
        in_channel = channels[4]
        for i in range(3, self.log_size + 1):
            out_channel = channels[2 ** i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim))
            self.to_rgbs.append(ToRGB(out_channel, style_dim))
            in_channel = out_channel
        self.n_latent = self.log_size * 2 - 2

    def forward(self, z):
        latent = self.style(z).unsqueeze(1).repeat(1, self.n_latent, 1)
        noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        out = self.input(z.shape[0])
        out = self.conv1(out, latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv1, conv2, noise1, noise2, to_rgb in zip(self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2],
                                                        self.to_rgbs):
            out = conv1(out, latent[:, i], noise1)
            out = conv2(out, latent[:, i + 1], noise2)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip


def randomize_(net: nn.Module, seed: int) -> nn.Module:
    """Give every zero-initialised parameter (biases, noise strengths) random values so no mapping error hides."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if torch.count_nonzero(p) == 0 or p.ndim <= 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return net
