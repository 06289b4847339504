"""Scale-out on NVIDIA Triton Inference Server: `engine triton` serves a generator there through PyTriton, and
`engine serve --triton URL` sends its requests to it.

    engine triton --generator SPEC [--size WxH] [--devices auto] [--max-batch 8] [--queue-delay-ms 20] [--http-port 8000]
    engine serve --triton http://HOST:8000 [--triton-model engine] [--triton-concurrency 8]

The Triton side binds one model (default name `engine`) with one instance per device (every CUDA GPU by default;
`--instances N` copies on the CPU) and Triton's dynamic batcher: requests that arrive within --queue-delay-ms of each
other are merged, up to --max-batch, and rendered as one Generator.stills call (StyleGAN: one batched pass through
mapping and synthesis; diffusion: each request's own prompt and steps, in turn). Several `engine serve` front ends
(several frames, several screens) can share it.

The model's tensors (batch dimension first; every input is always sent, unset values as -1 / NaN / empty):
    inputs   seed INT64 [1], psi FP32 [1] (NaN: the default), steps INT32 [1] (<= 0: the default),
             guidance FP32 [1] (NaN: the default), prompt BYTES [1], negative_prompt BYTES [1]
    outputs  image UINT8 [H, W, 3], prompt BYTES [1] (the prompt used; empty for StyleGAN)

PyTriton's Python-backend stub embeds the system's libpython: the environment that runs `engine triton` must be made
from the system's own python3 (`bash .ci/install-triton` makes .venv-triton so); `engine triton` checks that first and
says what to do. The serving side needs only tritonclient (the serve extra).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import UsageError
from engine.serve.service import Rendered, RendererUnavailable, Request

log = logging.getLogger("engine.serve.triton")

DEFAULT_MODEL = "engine"
#: (name, numpy dtype) of the model's inputs, each of shape [1] per request; the client sends all of them.
INPUTS = (("seed", np.int64), ("psi", np.float32), ("steps", np.int32), ("guidance", np.float32),
          ("prompt", np.bytes_), ("negative_prompt", np.bytes_))
#: Each input's Triton datatype, for the client's InferInput.
TRITON_TYPES = {name: {np.int64: "INT64", np.float32: "FP32", np.int32: "INT32", np.bytes_: "BYTES"}[dtype]
                for name, dtype in INPUTS}


# -- the wire format (both sides) ------------------------------------------------------------------------------------
def encode_request(req: Request) -> dict[str, np.ndarray]:
    """One request as the model's inputs, batch dimension 1. req.seed must be set (the front end picks random ones)."""
    nan = float("nan")
    return {"seed": np.array([[int(req.seed)]], np.int64),
            "psi": np.array([[nan if req.psi is None else req.psi]], np.float32),
            "steps": np.array([[-1 if req.steps is None else req.steps]], np.int32),
            "guidance": np.array([[nan if req.guidance is None else req.guidance]], np.float32),
            "prompt": np.array([[(req.prompt or "").encode()]], np.object_),
            "negative_prompt": np.array([[(req.negative_prompt or "").encode()]], np.object_)}


def decode_requests(inputs: dict[str, np.ndarray]) -> list[Request]:
    """The model's batched inputs (N, 1) back into N requests."""
    def text(v: Any) -> str:
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    out = []
    for i in range(len(inputs["seed"])):
        psi, steps, guidance = float(inputs["psi"][i, 0]), int(inputs["steps"][i, 0]), float(inputs["guidance"][i, 0])
        out.append(Request(prompt=text(inputs["prompt"][i, 0]) or None,
                           negative_prompt=text(inputs["negative_prompt"][i, 0]),
                           seed=int(inputs["seed"][i, 0]), psi=None if math.isnan(psi) else psi,
                           steps=None if steps <= 0 else steps, guidance=None if math.isnan(guidance) else guidance))
    return out


# -- the Triton side: engine triton ---------------------------------------------------------------------------------
def infer_function(renderer):
    """A PyTriton inference callable for one model instance: a batch of requests -> one render_batch."""
    from pytriton.decorators import batch

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        done = renderer.render_batch(decode_requests(inputs))
        return {"image": np.stack([d.rgb for d in done]),  # (N, H, W, 3) uint8
                "prompt": np.array([[(d.prompt or "").encode()] for d in done], np.object_)}

    return infer


def check_stub_python(running: str | None = None) -> None:
    """PyTriton's stub embeds the system libpython3.X: this environment must run that same Python (`running`, default
    this interpreter's version), or the stub fails inside Triton with an obscure error (seen: '_thread.RLock' object
    has no attribute '_recursion_count')."""
    import pytriton

    running = running or platform.python_version()

    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = Path(pytriton.__file__).parent / "tritonserver" / "python_backend_stubs" / minor / "triton_python_backend_stub"
    if not stub.exists():
        raise UsageError(f"engine triton: PyTriton has no Python-backend stub for Python {minor} ({stub})")
    try:
        ldd = subprocess.run(["ldd", str(stub)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return  # no ldd: nothing to check with; Triton will say
    m = re.search(rf"libpython{re.escape(minor)}\S* => (\S+)", ldd)
    if m is None or m.group(1) == "not":
        raise UsageError(f"engine triton: Triton's Python stub needs the system's libpython{minor} "
                         f"(apt-get install libpython{minor}); then make the environment with bash .ci/install-triton")
    probe = ("import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); lib.Py_GetVersion.restype = ctypes.c_char_p; "
             "print(lib.Py_GetVersion().decode().split()[0])")
    system = subprocess.run([sys.executable, "-c", probe, m.group(1)], capture_output=True, text=True, timeout=30).stdout.strip()
    if system and system != running:
        raise UsageError(f"engine triton: Triton's Python stub embeds the system's Python {system} ({m.group(1)}) but "
                         f"this environment runs Python {running} ({sys.executable}); make one from "
                         f"the system's own python3: bash .ci/install-triton (it creates .venv-triton)")


def check_port_free(host: str, port: int, flag: str) -> None:
    """Triton would fail deep inside its startup on a taken port: say so first (engine serve also defaults to 8000)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"--host {host!r}: {e}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: a port in TIME_WAIT is free
        try:
            s.bind(address)
        except OSError as e:
            raise UsageError(f"{flag} {port}: cannot listen there ({e.strerror}); another engine triton or engine serve? "
                             f"pick another port") from None


def resolve_devices(spec: str) -> list[Any]:
    import torch

    from engine.devices import resolve_device

    if spec == "auto":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [torch.device(f"cuda:{i}") for i in range(n)] or [torch.device("cpu")]
    return [resolve_device(part.strip()) for part in spec.split(",") if part.strip()]


def cmd_triton(ns: argparse.Namespace) -> int:
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError:
        raise UsageError("engine triton needs PyTriton in an environment made from the system's python3: "
                         "bash .ci/install-triton (or pip install 'engine[triton]' there)") from None
    from engine.backends import apply_backend
    from engine.generators import create_generator
    from engine.serve.service import LocalRenderer

    for flag in ("http_port", "grpc_port", "metrics_port"):
        if not 0 < getattr(ns, flag) <= 65535:
            raise UsageError(f"--{flag.replace('_', '-')} {getattr(ns, flag)}: use 1..65535")
    if not 0 <= ns.queue_delay_ms <= 10_000:
        raise UsageError(f"--queue-delay-ms {ns.queue_delay_ms:g}: use 0..10000")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", ns.model):
        raise UsageError(f"--model {ns.model!r}: letters, digits, dots, underscores and dashes only")
    ports = [(flag, getattr(ns, flag)) for flag in ("http_port", "grpc_port", "metrics_port")]
    if len({p for _, p in ports}) < 3:
        raise UsageError("--http-port, --grpc-port and --metrics-port must differ")
    for flag, port in ports:
        check_port_free(ns.host, port, f"--{flag.replace('_', '-')}")
    check_stub_python()
    devices = resolve_devices(ns.devices)
    if not devices:
        raise UsageError(f"--devices {ns.devices!r}: no device named")
    renderers = []
    for device in devices:
        for _ in range(ns.instances):
            g = create_generator(ns.generator, output=ns.size, device=device)
            g, backend = apply_backend(g, ns.backend)
            renderers.append(LocalRenderer(g))
    g = renderers[0].generator
    # tritonserver's own log (its settings table, model loading) goes to a file unless -v asks for it here.
    log_file = None
    if not getattr(ns, "verbose", 0):
        log_file = Path(os.environ.get("ENGINE_CACHE_DIR") or Path.home() / ".cache" / "engine") / "triton" / f"tritonserver-{ns.http_port}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
    config = TritonConfig(http_address=ns.host, http_port=ns.http_port, grpc_address=ns.host, grpc_port=ns.grpc_port,
                          metrics_address=ns.host, metrics_port=ns.metrics_port, log_verbose=0, log_file=log_file)
    inputs = [Tensor(name=n, dtype=d, shape=(1,)) for n, d in INPUTS]
    outputs = [Tensor(name="image", dtype=np.uint8, shape=(g.height, g.width, 3)),
               Tensor(name="prompt", dtype=np.bytes_, shape=(1,))]
    batcher = DynamicBatcher(max_queue_delay_microseconds=int(ns.queue_delay_ms * 1000))
    with Triton(config=config) as triton:
        triton.bind(model_name=ns.model, infer_func=[infer_function(r) for r in renderers], inputs=inputs,
                    outputs=outputs, config=ModelConfig(max_batch_size=ns.max_batch, batcher=batcher), strict=True)
        where = ", ".join(str(r.generator.device) for r in renderers)
        print(f"engine triton: model {ns.model!r}: {g.name} {g.width}x{g.height}, {len(renderers)} instance(s) on "
              f"{where} ({backend}); batches of up to {ns.max_batch} within {ns.queue_delay_ms:g} ms; "
              f"engine serve --triton http://{ns.host}:{ns.http_port}"
              + (f"; Triton's log: {log_file}" if log_file else ""), flush=True)
        triton.serve()
    return 0


# -- the serving side: engine serve --triton URL --------------------------------------------------------------------
class TritonRenderer:
    """Sends each request to the Triton model; `concurrency` worker threads keep requests in flight together, so
    Triton's dynamic batcher can merge them. One HTTP client per thread (tritonclient's are not thread-safe)."""

    def __init__(self, url: str, *, model: str = DEFAULT_MODEL, concurrency: int = 8, timeout: float = 600.0):
        try:
            import tritonclient.http as http
            from tritonclient.utils import InferenceServerException
        except ImportError:
            raise UsageError("engine serve --triton needs tritonclient: pip install 'tritonclient[http]'") from None
        m = re.fullmatch(r"(?:(https?)://)?([^/\s]+?)/?", url.strip())
        if m is None:
            raise UsageError(f"--triton {url!r}: give Triton's HTTP address, e.g. http://127.0.0.1:8000")
        self._http, self._error = http, InferenceServerException
        self._ssl = m.group(1) == "https"
        self._address = m.group(2) if ":" in m.group(2) else f"{m.group(2)}:{443 if self._ssl else 8000}"
        self.url = f"{'https' if self._ssl else 'http'}://{self._address}"
        self.model = model
        self.concurrency = max(1, int(concurrency))
        self._timeout = float(timeout)
        self._local = threading.local()
        client = self._client()
        try:
            ready = client.is_server_ready() and client.is_model_ready(model)
            meta = client.get_model_metadata(model) if ready else None
        except (self._error, OSError) as e:
            raise UsageError(f"--triton {url}: no Triton server answers there ({str(e).splitlines()[0][:160]}); start "
                             f"one with: engine triton --generator SPEC --http-port {self._address.rsplit(':', 1)[1]}") from None
        if meta is None:
            raise UsageError(f"--triton {url}: Triton answers but has no ready model {model!r}; "
                             f"engine triton --model {model} serves one")
        image = next((o for o in meta["outputs"] if o["name"] == "image"), None)
        if image is None or sorted(i["name"] for i in meta["inputs"]) != sorted(n for n, _ in INPUTS):
            raise UsageError(f"--triton {url}: model {model!r} is not an engine triton model (its tensors differ)")
        self.height, self.width = (int(d) for d in image["shape"][-3:-1])

    def _client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = self._http.InferenceServerClient(
                self._address, ssl=self._ssl, connection_timeout=10.0, network_timeout=self._timeout)
        return c

    def _infer(self, inputs, wanted):
        """One inference. A transport failure (refused, reset, a kept-alive connection Triton closed on restart) gets
        one more try on a fresh connection, then is RendererUnavailable: the request's 503."""
        for attempt in (1, 2):
            try:
                return self._client().infer(self.model, inputs, outputs=wanted)
            except self._error:
                raise
            except Exception as e:  # geventhttpclient's own errors are not all OSErrors (HTTPConnectionClosed)
                self.close()
                if attempt == 2:
                    raise RendererUnavailable(f"Triton at {self.url} cannot be reached ({type(e).__name__}: {e}); "
                                              f"is engine triton running?") from None

    def describe(self) -> dict[str, Any]:
        return {"generator": f"triton:{self.model}", "size": [self.width, self.height], "device": self.url}

    def render_batch(self, reqs: list[Request]) -> list[Rendered]:
        http = self._http
        out = []
        for req in reqs:
            inputs = []
            for name, arr in encode_request(req).items():
                t = http.InferInput(name, list(arr.shape), TRITON_TYPES[name])
                t.set_data_from_numpy(arr, binary_data=True)
                inputs.append(t)
            wanted = [http.InferRequestedOutput("image", binary_data=True), http.InferRequestedOutput("prompt", binary_data=True)]
            try:
                result = self._infer(inputs, wanted)
            except self._error as e:
                text = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                if "unavailable" in text.lower() or "not ready" in text.lower() or "unknown model" in text.lower():
                    raise RendererUnavailable(f"Triton ({self.url}, model {self.model}): {text}") from None
                raise RuntimeError(f"Triton ({self.url}, model {self.model}): {text}") from None
            prompt = result.as_numpy("prompt")[0, 0]
            prompt = prompt.decode("utf-8", "replace") if isinstance(prompt, bytes) else str(prompt)
            out.append(Rendered(np.ascontiguousarray(result.as_numpy("image")[0]), prompt or None, int(req.seed)))
        return out

    def close(self) -> None:
        c = getattr(self._local, "client", None)
        self._local.client = None
        if c is not None:
            try:
                c.close()
            except Exception:
                pass
