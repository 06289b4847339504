"""Load StyleGAN network files without running code from them: official NVlabs .pkl, rosinality .pt, our files.

    load_network(path) -> nn.Module (engine.generators.stylegan2.Generator or .stylegan3.Generator), eval mode.

Official .pkl (StyleGAN2-ADA-pytorch, StyleGAN3) files are plain pickles of a dict {'G', 'D', 'G_ema',
'training_set_kwargs', 'augment_pipe', ...}. Every network object in them is a `torch_utils.persistence`
object: it reduces to `torch_utils.persistence._reconstruct_persistent_obj(meta)`, meta = dict(type='class',
version, module_src=<the whole source file of its module>, class_name, state=<the module's __dict__>). NVlabs'
loader exec()s module_src. We never do: `_RestrictedUnpickler.find_class` maps exactly the names such a file
contains to inert records (class name + state) or to checked torch/numpy rebuild functions, and refuses every
other global (os.system, builtins.eval, subprocess.Popen, ...) with a UsageError naming it, before anything is
called. Tensor storages inside the pickle are nested torch.save blobs (`torch.storage._load_from_bytes`); they
go through torch.load(weights_only=True).

From the G_ema record we take only the constructor kwargs (`_init_kwargs`) and the parameters/buffers, build our
own classes (the StyleGAN family is read from the network's structure: synthesis.input = StyleGAN3, synthesis.b4
= StyleGAN2) and load the tensors by name, strictly.

.pt files: rosinality stylegan2-pytorch checkpoints ({'g_ema': state_dict, 'latent_avg'?, ...} or a bare
state dict) are converted by engine.generators.convert; our own .pt dicts ({'format': 'engine.stylegan2|3',
'config', 'state_dict'}) load directly. All .pt loading uses torch.load(weights_only=True).

Cache: the first load of a .pkl/.pt writes `<stem>.<sha256[:12]>.safetensors` beside the file (or into
$ENGINE_CACHE_DIR, default ~/.cache/engine/, when that folder is not writable); later loads of the same bytes
read the cache. Cache metadata: format 'engine.stylegan2' or 'engine.stylegan3', config (JSON init kwargs),
source_sha256, source_name.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import logging
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import UsageError

log = logging.getLogger(__name__)

FORMAT_SG2 = "engine.stylegan2"
FORMAT_SG3 = "engine.stylegan3"
_ARCH_FORMATS = {"stylegan2": FORMAT_SG2, "stylegan3": FORMAT_SG3}

# ----------------------------------------------------------------------------------------------------------------
# Inert records: what NVlabs objects become when unpickled here.
# ----------------------------------------------------------------------------------------------------------------


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (a dict with attribute access); plain data."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Record:
    """An object from the file, kept as data: which class it claimed to be and its pickled state.
    For nn.Modules, state holds '_parameters', '_buffers', '_modules', '_init_args', '_init_kwargs', ..."""

    module: str = ""
    class_name: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Reached when a pickle calls a recorded class (REDUCE/NEWOBJ); keep the arguments, do nothing else.
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<record {self.module}.{self.class_name}>"

    # Module view -------------------------------------------------------------------------------------------
    def _field(self, key: str) -> dict:
        st = self.state
        if isinstance(st, tuple) and len(st) == 2 and isinstance(st[1], dict):
            st = {**(st[0] or {}), **st[1]}  # (dict_state, slot_state)
        if not isinstance(st, dict):
            return {}
        value = st.get(key)
        return value if isinstance(value, dict) else {}

    def get(self, key: str, default: Any = None) -> Any:
        st = self.state if isinstance(self.state, dict) else {}
        return st.get(key, default)

    @property
    def submodules(self) -> dict:
        return self._field("_modules")


class PersistentRecord(Record):
    """A torch_utils.persistence object. module_src is kept only as text to look at; it is never executed."""

    module = "torch_utils.persistence"

    def __init__(self, class_name: str, module_src: str, state: Any, version: Any) -> None:
        super().__init__()
        self.class_name = class_name
        self.module_src = module_src
        self.state = state
        self.version = version


_record_classes: dict[tuple[str, str], type] = {}


def _record_class(module: str, name: str) -> type:
    """A Record subclass standing for `module.name` (one per name, so isinstance checks stay meaningful)."""
    key = (module, name)
    cls = _record_classes.get(key)
    if cls is None:
        cls = type(name, (Record,), {"module": module, "class_name": name, "__module__": __name__})
        _record_classes[key] = cls
    return cls


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Replacement for torch_utils.persistence._reconstruct_persistent_obj: records, never exec()s module_src."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise UsageError("a persistent object in the pickle has unexpected metadata; this is not an official "
                         "NVlabs StyleGAN network pickle")
    src = meta.get("module_src")
    return PersistentRecord(meta["class_name"], src if isinstance(src, str) else "", meta.get("state"), meta.get("version"))


# ----------------------------------------------------------------------------------------------------------------
# Checked torch / numpy rebuild functions.
# ----------------------------------------------------------------------------------------------------------------


class _BadPickle(Exception):
    """Raised inside unpickling; turned into a UsageError naming the file."""


def _load_from_bytes(b: Any) -> Any:
    """torch.storage._load_from_bytes, but through torch.load(weights_only=True): the blob is a legacy torch.save
    of one storage; weights_only refuses anything but tensors/storages/containers in it."""
    if not isinstance(b, (bytes, bytearray)):
        raise _BadPickle("a tensor storage in the pickle is not a byte string")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage deprecation noise
            return torch.load(io.BytesIO(bytes(b)), map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _BadPickle(f"a tensor storage in the pickle was refused by torch.load(weights_only=True): {first}") from None


def _check_ints(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, (tuple, list, torch.Size)) or not all(isinstance(i, int) for i in v):
        raise _BadPickle(f"tensor {what} in the pickle is not a tuple of ints")
    return tuple(v)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> torch.Tensor:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _BadPickle("a tensor in the pickle is not backed by a torch storage")
    if not isinstance(storage_offset, int):
        raise _BadPickle("tensor offset in the pickle is not an int")
    size, stride = _check_ints(size, "size"), _check_ints(stride, "stride")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._utils._rebuild_tensor(storage, storage_offset, size, stride)  # set_ checks the bounds


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    # requires_grad, hooks and conj/neg metadata do not matter for inference weights.
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None) -> torch.Tensor:
    # A Parameter becomes its plain data tensor; hooks and extra state are dropped.
    if not isinstance(data, torch.Tensor):
        raise _BadPickle("a parameter in the pickle holds no tensor")
    return data.detach()


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> torch.Tensor:
    if func not in (_rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter) or not isinstance(args, tuple):
        raise _BadPickle("a tensor subclass in the pickle is rebuilt with an unexpected function")
    if new_type not in (torch.Tensor, torch.nn.Parameter):
        raise _BadPickle(f"a tensor in the pickle has unexpected type {new_type!r}")
    return func(*args)


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Protocol 0-2 pickles spell bytes as _codecs.encode(str, 'latin1').
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise _BadPickle("_codecs.encode in the pickle with anything but a latin1 string")
    return obj.encode("latin1")


def _np_reconstruct_fn() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct, scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    return _reconstruct, scalar


_np_reconstruct, _np_scalar = _np_reconstruct_fn()


def _numpy_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise _BadPickle("a numpy array in the pickle has an unexpected subtype")
    return _np_reconstruct(subtype, shape, dtype)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _BadPickle("a numpy scalar in the pickle has an object dtype")
    return _np_scalar(dtype, data)


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # Protocol 0/1 spelling of "instance of cls": allowed only for record classes.
    if not (isinstance(cls, type) and issubclass(cls, Record)) or base is not object:
        raise _BadPickle("copyreg._reconstructor in the pickle for a class that is not a network record")
    return cls()


_TORCH_DTYPES = {name: getattr(torch, name) for name in (
    "float32", "float", "float64", "double", "float16", "half", "bfloat16", "int8", "uint8", "int16", "short",
    "int32", "int", "int64", "long", "bool", "complex64", "complex128")}
_TORCH_STORAGES = {name: getattr(torch, name) for name in (
    "FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "ByteStorage", "CharStorage", "ShortStorage",
    "IntStorage", "LongStorage", "BoolStorage") if hasattr(torch, name)}

#: Exactly the non-record globals an NVlabs StyleGAN pickle (written by torch 1.7 - 2.x, numpy 1.x/2.x) uses.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch._utils", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch", "Tensor"): torch.Tensor,
    ("torch._tensor", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("__builtin__", "set"): set,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    **{("torch", k): v for k, v in _TORCH_DTYPES.items()},
    **{("torch", k): v for k, v in _TORCH_STORAGES.items()},
}

#: Modules whose classes become inert records (never imported): NVlabs network/augment modules and torch.nn.
_RECORD_MODULES = ("training.networks_stylegan2", "training.networks_stylegan3", "training.networks",
                   "training.augment", "torch.nn.modules.")


class _Refused(Exception):
    def __init__(self, qualname: str):
        super().__init__(qualname)
        self.qualname = qualname


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        obj = _ALLOWED.get((module, name))
        if obj is not None:
            return obj
        is_record_module = any(module == m or (m.endswith(".") and module.startswith(m)) for m in _RECORD_MODULES)
        if is_record_module and name.isidentifier() and not name.startswith("_"):
            return _record_class(module, name)
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _BadPickle("the pickle uses persistent ids (a torch.save file?); save it as .pt instead of .pkl")


def read_pickle(path: str | Path) -> Any:
    """Unpickle `path` with the restricted unpickler. Returns plain data + Records + CPU tensors."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f).load()
    except _Refused as e:
        hint = ""
        if e.qualname.startswith("dnnlib.tflib"):
            hint = " (a TensorFlow StyleGAN pickle: convert it with NVlabs stylegan2-ada-pytorch legacy.py first)"
        raise UsageError(f"{path}: refused to load: the pickle asks for `{e.qualname}`, which a StyleGAN network file "
                         f"never contains and which could run code{hint}; only NVlabs StyleGAN2/3 pickles are accepted") from None
    except _BadPickle as e:
        raise UsageError(f"{path}: refused to load: {e}") from None
    except UsageError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RuntimeError, MemoryError, RecursionError) as e:
        raise UsageError(f"{path}: not a readable network pickle ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------------------------------------------
# From records to our modules.
# ----------------------------------------------------------------------------------------------------------------


#: Real constructor settings nest 3 levels (mapping_kwargs inside the kwargs) and networks 4 (synthesis.b8.conv0.affine);
#: a hostile file can nest or share objects without end. Everything is walked once, to these depths.
MAX_SETTINGS_DEPTH = 16
MAX_MODULE_DEPTH = 12


def plain(obj: Any, _depth: int = 0, _done: dict[int, Any] | None = None, _open: set[int] | None = None) -> Any:
    """Recorded kwargs -> JSON-able Python: EasyDict -> dict, numpy scalars/arrays -> numbers/lists, tuples -> lists.
    Each container is converted once (a pickle can share one list a million ways: a DAG of depth 60 is 2^60 paths),
    to a bounded depth, and one that contains itself is refused."""
    done = {} if _done is None else _done
    open_ = set() if _open is None else _open
    if isinstance(obj, (dict, list, tuple)):
        key = id(obj)
        if key in done:
            return done[key]
        if key in open_:
            raise UsageError("the network's constructor settings contain themselves; not an official StyleGAN pickle")
        if _depth >= MAX_SETTINGS_DEPTH:
            raise UsageError(f"the network's constructor settings nest deeper than {MAX_SETTINGS_DEPTH} levels; "
                             "not an official StyleGAN pickle")
        open_.add(key)
        if isinstance(obj, dict):
            out: Any = {str(k): plain(v, _depth + 1, done, open_) for k, v in obj.items()}
        else:
            out = [plain(v, _depth + 1, done, open_) for v in obj]
        open_.discard(key)
        done[key] = out
        return out
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise UsageError(f"the network's constructor settings hold an unexpected {type(obj).__name__}; not an official StyleGAN pickle")


def record_tensors(rec: Record, prefix: str = "", _seen: set[int] | None = None) -> dict[str, torch.Tensor]:
    """state_dict-style flat dict of a module record: '<prefix>name' -> tensor, buffers set to None skipped. A real
    network is a tree: a module reached twice (shared, or a cycle) or nested past MAX_MODULE_DEPTH is refused."""
    seen = set() if _seen is None else _seen
    if id(rec) in seen:
        raise UsageError(f"module {prefix.rstrip('.') or 'G'} appears twice in the pickle's network (shared or circular "
                         "modules); not an official StyleGAN pickle")
    if prefix.count(".") >= MAX_MODULE_DEPTH:
        raise UsageError(f"the pickle's network nests modules deeper than {MAX_MODULE_DEPTH} levels; not an official StyleGAN pickle")
    seen.add(id(rec))
    out: dict[str, torch.Tensor] = {}
    non_persistent = rec.get("_non_persistent_buffers_set") or set()
    for field in ("_parameters", "_buffers"):
        for name, t in rec._field(field).items():
            if t is None or (field == "_buffers" and name in non_persistent):
                continue
            if not isinstance(t, torch.Tensor):
                raise UsageError(f"network tensor {prefix}{name} in the pickle is a {type(t).__name__}, not a tensor")
            out[prefix + name] = t
    for name, sub in rec.submodules.items():
        if sub is None:
            continue
        if not isinstance(sub, Record):
            raise UsageError(f"submodule {prefix}{name} in the pickle is a {type(sub).__name__}, not a network module")
        out.update(record_tensors(sub, f"{prefix}{name}.", seen))
    return out


def network_family(rec: Record) -> str:
    """'stylegan3' or 'stylegan2' from the module structure (synthesis.input vs synthesis.b4); UsageError else."""
    synth = rec.submodules.get("synthesis")
    subs = synth.submodules if isinstance(synth, Record) else {}
    src = getattr(rec, "module_src", "") or ""
    if "input" in subs and any(k.startswith("L0_") for k in subs):
        family = "stylegan3"
    elif "b4" in subs:
        family = "stylegan2"
    else:
        raise UsageError(f"the network ({rec.class_name}) is neither StyleGAN2 (synthesis.b4) nor StyleGAN3 (synthesis.input)")
    # The embedded source names the paper; a disagreement means a fork we do not know how to rebuild.
    if family == "stylegan2" and "Alias-Free Generative Adversarial Networks" in src:
        raise UsageError("the network's structure says StyleGAN2 but its source says StyleGAN3; unsupported fork")
    return family


def init_kwargs_of(rec: Record) -> dict[str, Any]:
    """Generator constructor kwargs as recorded by torch_utils.persistence (args mapped onto NVlabs' positional
    order; StyleGAN2-ADA's explicit synthesis_kwargs dict flattened as the stylegan3 repo's legacy.py does)."""
    args = plain(rec.get("_init_args") or ())
    kwargs = plain(rec.get("_init_kwargs") or {})
    if not kwargs and not args:
        raise UsageError(f"the {rec.class_name} in the pickle carries no constructor settings (_init_kwargs)")
    names = ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"]
    if len(args) > len(names):
        raise UsageError(f"the {rec.class_name} in the pickle has {len(args)} positional constructor arguments; expected at most {len(names)}")
    kwargs = {**dict(zip(names, args)), **kwargs}
    synthesis_kwargs = kwargs.pop("synthesis_kwargs", None) or {}
    kwargs.update(synthesis_kwargs)
    kwargs["mapping_kwargs"] = dict(kwargs.get("mapping_kwargs") or {})
    return kwargs


#: Bounds on the sizes a file's init kwargs may ask for, checked before anything is allocated: the largest official
#: networks use 1024 px, 512 (StyleGAN2) or 1024 (StyleGAN3-R: channel_max=1024, doubled) channels and 512-d latents.
#: A hostile or corrupt file asking for channel_max = 2**20 would otherwise try to allocate terabytes.
SIZE_LIMITS = {"img_resolution": 4096, "channel_max": 4096, "channel_base": 2**20, "z_dim": 8192, "w_dim": 8192,
               "c_dim": 100_000, "img_channels": 16, "num_layers": 64, "layer_features": 8192}

#: Parameters a network file may ask for (engine run --max-params). The largest official StyleGAN2/3 generators have
#: about 30 million; inside SIZE_LIMITS a file could still ask for billions, so the count is estimated from the
#: settings, before anything is allocated, for every format (.pkl, .pt, .safetensors).
DEFAULT_MAX_PARAMS = 200_000_000
limits = {"max_params": DEFAULT_MAX_PARAMS}


def set_max_params(n: int | None) -> None:
    """The process's limit (engine run/bench/trt/project/info --max-params); None restores the default."""
    limits["max_params"] = DEFAULT_MAX_PARAMS if n is None else int(n)


def estimate_parameters(family: str, kw: dict[str, Any]) -> int:
    """The parameter count a StyleGAN2/3 Generator built from these (size-checked) settings would have, from the
    architectures' own channel formulas (mapping, synthesis convolutions, affines, biases, torgb; filters and small
    buffers left out). Arithmetic only: nothing is allocated."""
    z, c, w = int(kw.get("z_dim", 512)), int(kw.get("c_dim", 0)), int(kw.get("w_dim", 512))
    res, img_ch = int(kw.get("img_resolution", 1024)), int(kw.get("img_channels", 3))
    base, cmax = float(kw.get("channel_base", 32768)), float(kw.get("channel_max", 512))
    m = kw.get("mapping_kwargs") or {}
    layers = int(m.get("num_layers", 8 if family == "stylegan2" else 2))
    feats = [z + (w if c else 0)] + [int(m.get("layer_features") or w)] * max(layers - 1, 0) + [w]
    total = sum(a * b + b for a, b in zip(feats, feats[1:])) + (c * w + w if c else 0)
    if family == "stylegan2":
        prev = 0
        for r in (2 ** i for i in range(2, max(2, int(np.log2(max(res, 4)))) + 1)):
            out = int(min(base // r, cmax))
            total += out * 16 if r == 4 else 9 * prev * out + w * prev + prev + out + 1  # const | conv0
            total += 9 * out * out + w * out + 2 * out + 1 + img_ch * out + w * out + out + img_ch  # conv1, torgb
            prev = out
    else:
        n, crit, k = int(kw.get("num_layers", 14)), int(kw.get("num_critical", 2)), int(kw.get("conv_kernel", 3))
        first = float(kw.get("first_cutoff", 2))
        exponents = np.minimum(np.arange(n + 1) / max(n - crit, 1), 1)
        channels = np.rint(np.minimum((base / 2) / (first * (res / 2 / first) ** exponents), cmax)).astype(np.int64)
        channels[-1] = img_ch
        total += int(channels[0]) * (int(channels[0]) + 4) + 4 * w + 4  # input: weight, affine
        for i in range(n + 1):
            cin, cout, kk = int(channels[max(i - 1, 0)]), int(channels[i]), 1 if i == n else k
            total += cout * cin * kk * kk + w * cin + cin + cout
    return int(total)


def check_settings(family: str, init_kwargs: dict[str, Any], source: str) -> None:
    """Before anything is allocated: every size within SIZE_LIMITS, and the parameter count the settings ask for
    within limits["max_params"]. For every way a network is built from a file's settings."""
    for key, limit in SIZE_LIMITS.items():
        for where in (init_kwargs, init_kwargs.get("synthesis_kwargs") or {}, init_kwargs.get("mapping_kwargs") or {}):
            v = where.get(key) if isinstance(where, dict) else None
            if v is None:
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= limit:
                raise UsageError(f"{source}: the file asks for {key}={v!r}, beyond any StyleGAN network (at most "
                                 f"{limit}); refusing to build it")
    asked = estimate_parameters(family, {**init_kwargs, **(init_kwargs.get("synthesis_kwargs") or {})})
    if asked > limits["max_params"]:
        raise UsageError(f"{source}: its settings ask for about {_count(asked)} parameters, over the limit of "
                         f"{_count(limits['max_params'])} (official StyleGAN networks have about 30 million); "
                         "refusing to build it (--max-params N raises the limit)")


def _count(n: int) -> str:
    return f"{n / 1e6:,.0f} million" if n >= 10**6 else f"{n:,}"


def build_network(family: str, init_kwargs: dict[str, Any], tensors: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    """Construct our Generator of `family` from NVlabs init kwargs and load `tensors` strictly by name and shape."""
    if family == "stylegan3":
        from engine.generators import stylegan3 as mod
    elif family == "stylegan2":
        from engine.generators import stylegan2 as mod  # type: ignore[no-redef]
    else:
        raise UsageError(f"{source}: unknown network family {family!r}")
    check_settings(family, init_kwargs, source)
    try:
        net = mod.Generator(**init_kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, RuntimeError, MemoryError) as e:
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UsageError(f"{source}: cannot build a {family} Generator from the file's settings ({why}); "
                         f"the file may come from a modified StyleGAN fork") from None
    expected = net.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}" + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else ""))
        raise UsageError(f"{source}: its tensors do not match a {family} Generator built from its own settings: "
                         f"{'; '.join(parts)}; the file may come from a modified StyleGAN fork")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise UsageError(f"{source}: tensor {k} has shape {tuple(tensors[k].shape)}, the {family} Generator built "
                             f"from the file's settings expects {tuple(v.shape)}")
    net.load_state_dict({k: tensors[k].to(v.dtype) for k, v in expected.items()}, strict=True)
    return net.eval().requires_grad_(False)


def network_from_pickle_data(data: Any, source: str) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """Pick G_ema (else G, else a bare Generator record) from unpickled data and build it."""
    rec = None
    if isinstance(data, dict):
        for key in ("G_ema", "G"):
            if isinstance(data.get(key), Record):
                rec = data[key]
                break
    elif isinstance(data, Record):
        rec = data
    if rec is None:
        keys = ", ".join(map(str, list(data)[:6])) if isinstance(data, dict) else type(data).__name__
        raise UsageError(f"{source}: no generator in the pickle (expected a dict with 'G_ema'; found {keys})")
    if rec.class_name != "Generator":
        raise UsageError(f"{source}: the pickle's G_ema is a {rec.class_name!r}, not a Generator")
    family = network_family(rec)
    kwargs = init_kwargs_of(rec)
    return build_network(family, kwargs, record_tensors(rec), source), family, kwargs


# ----------------------------------------------------------------------------------------------------------------
# .pt, .safetensors, cache.
# ----------------------------------------------------------------------------------------------------------------


def _torch_load_weights_only(path: Path) -> Any:
    try:
        # rosinality's train.py stores its argparse Namespace under 'args': plain attribute data, allowed.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"{path}: refused or unreadable with torch.load(weights_only=True): {first}") from None


def network_from_pt(path: Path) -> tuple[torch.nn.Module, str, dict[str, Any], str]:
    """A .pt/.pth file: our {'format', 'config', 'state_dict'} dict, or a rosinality checkpoint / state dict."""
    obj = _torch_load_weights_only(path)
    if isinstance(obj, dict) and obj.get("format") in (FORMAT_SG2, FORMAT_SG3):
        family = "stylegan3" if obj["format"] == FORMAT_SG3 else "stylegan2"
        kwargs = dict(obj["config"])
        state = {k: v for k, v in dict(obj["state_dict"]).items() if not k.startswith("engine.")}
        return build_network(family, kwargs, state, str(path)), family, kwargs, "engine"
    from engine.generators import convert

    sd, latent_avg = convert.find_rosinality_state(obj)
    if sd is None:
        keys = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, dict) else type(obj).__name__
        raise UsageError(f"{path}: not a rosinality stylegan2-pytorch checkpoint nor an engine network (found {keys}); "
                         f"pass an NVlabs .pkl, a rosinality .pt ('g_ema') or an engine .safetensors")
    kwargs, tensors = convert.rosinality_to_nvlabs(sd, latent_avg=latent_avg, source=str(path))
    net = build_network("stylegan2", kwargs, tensors, str(path))
    if latent_avg is None:
        convert.estimate_w_avg(net)
    return net, "stylegan2", kwargs, "rosinality"


def load_safetensors(path: str | Path) -> torch.nn.Module:
    """Our .safetensors (cache or saved network): metadata format engine.stylegan2/engine.stylegan3 + config."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise UsageError(f"{path}: not a readable safetensors file ({e})") from None
    fmt = meta.get("format")
    if fmt not in (FORMAT_SG2, FORMAT_SG3) or "config" not in meta:
        raise UsageError(f"{path}: safetensors without engine StyleGAN metadata (format/config); "
                         f"load the original .pkl/.pt instead")
    family = "stylegan3" if fmt == FORMAT_SG3 else "stylegan2"
    tensors = {k: v for k, v in tensors.items() if not k.startswith("engine.")}  # e.g. colour calibration
    return build_network(family, json.loads(meta["config"]), tensors, str(path))


def save_safetensors(net: torch.nn.Module, path: str | Path, family: str, init_kwargs: dict[str, Any],
                     **extra_meta: str) -> Path:
    """Write net's state dict as safetensors with the metadata load_safetensors reads. Atomic (tmp + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    meta = {"format": _ARCH_FORMATS[family], "config": json.dumps(plain(init_kwargs)), **extra_meta}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("ENGINE_CACHE_DIR") or Path.home() / ".cache" / "engine")


def cache_candidates(path: Path, sha: str) -> list[Path]:
    """Where the converted file of `path` may live: beside it, then in the user cache."""
    name = f"{path.stem}.{sha[:12]}.safetensors"
    return [path.with_name(name), cache_dir() / name]


def load_network(path: str | Path, *, use_cache: bool = True) -> torch.nn.Module:
    """Load a StyleGAN network file (.pkl, .pt/.pth, .safetensors) as our Generator on the CPU, eval mode,
    without executing code from the file. .pkl/.pt are converted once and cached as safetensors (see module doc).
    Attributes set on the result: engine_family ('stylegan2'|'stylegan3'), engine_source (how it was read)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"network file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        net = load_safetensors(path)
        return _tag(net, "safetensors", path)
    if suffix not in (".pkl", ".pt", ".pth"):
        raise UsageError(f"{path}: unsupported network file type {suffix!r}; use .pkl, .pt or .safetensors")

    sha = file_sha256(path) if use_cache else ""
    if use_cache:
        for cand in cache_candidates(path, sha):
            if cand.is_file():
                try:
                    net = load_safetensors(cand)
                except UsageError as e:
                    log.warning("ignoring unreadable cache %s: %s", cand, e)
                    continue
                log.info("%s: loaded from cache %s", path, cand)
                return _tag(net, "cache", cand)

    if suffix == ".pkl":
        net, family, kwargs = network_from_pickle_data(read_pickle(path), str(path))
        origin = "nvlabs-pkl"
    else:
        net, family, kwargs, origin = network_from_pt(path)

    if use_cache:
        for cand in cache_candidates(path, sha):
            try:
                cand.parent.mkdir(parents=True, exist_ok=True)
                save_safetensors(net, cand, family, kwargs, source_sha256=sha, source_name=path.name, converted_from=origin)
                log.info("%s: converted network cached at %s", path, cand)
                break
            except OSError as e:
                log.info("cannot write cache %s (%s); trying the next place", cand, e)
        else:
            log.warning("%s: could not write a converted cache anywhere; the next load converts again", path)
    return _tag(net, origin, path)


def _tag(net: torch.nn.Module, origin: str, where: Path) -> torch.nn.Module:
    from engine.generators import stylegan3

    net.engine_family = "stylegan3" if isinstance(net, stylegan3.Generator) else "stylegan2"
    net.engine_source = f"{origin}:{where}"
    return net
