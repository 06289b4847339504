#!/usr/bin/env bash
# Run THERE, on the lent GPU machine, from the repo root, after bench/device/fetch.sh ran here:
#     device run  carry=[".gl", ".whl"]  timeout_s=600  command="bash bench/device/check.sh"
# One prepared pass over everything issue 3 (interop, compiled generators) needs a GPU for, most important first,
# each step under its own time limit inside BUDGET_S so the whole run ends before the call's limit:
#   1. engine info              GL renderer on the NVIDIA EGL device, interop availability and reason
#   2. GPU tests                pytest -m gpu: interop round trips bit-exact (RGBA8) / fp16 (RGBA16F), 1000 frames
#                               with no memory growth, and the real render loop profiled with CUPTI: no host copy,
#                               no host sync (eager and compile backends; diffusion feedback read back through interop)
#   3. bench_interop            StyleGAN2 512 and 1024: eager+staged, eager+interop, compiled+interop
#   4. engine run stats         StyleGAN2 (config-f widths) 1024, compile + interop, unpaced: stats JSON
#   5. bench_diffusion          sd-turbo architecture (random weights) 512, the engine into the texture vs seed 001
#   6. engine bench             StyleGAN2 1024 against the seed-002 way, with NVML telemetry
# Everything lands in $OUT: log.txt (this whole output) and results.tgz (JSON, CSV, XML, PNG), to be unpacked here
# under bench/results/<device>/. Knobs: BUDGET_S (default 540), ENGINE_COMPILE_MODE (default: inductor's "default"
# mode, which compiles in about a minute; max-autotune-no-cudagraphs may be faster per frame but can take many
# minutes to tune 1024 px convolutions on a bare machine), STEPS (e.g. "tests interop" to run only those), and
# SMALL=1 (tiny sizes: proves the script on a CPU machine, with UNPACK_GL=0 so this machine's GL stays as it is,
# and WHL_DIR pointing at wheels for its own Python).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/engine-device-out}
BUDGET_S=${BUDGET_S:-540}
STEPS=${STEPS:-"info tests run interop diffusion bench"}
mkdir -p "$OUT"
RES=$(mktemp -d)
exec > >(tee -a "$OUT/log.txt") 2>&1
tee_pid=$!
started=$(date +%s)

finish() {
  tar czf "$OUT/results.tgz" -C "$RES" . && echo "== results: $(tar tzf "$OUT/results.tgz" | grep -vc '/$') files in results.tgz"
  exec >&- 2>&-
  wait "$tee_pid" 2>/dev/null  # let tee write the log's last lines before the command returns
}
trap finish EXIT

# step NAME LIMIT_S CMD...: run CMD under LIMIT_S unless it is not in STEPS or the budget cannot cover it.
step() {
  local name=$1 limit=$2 t0 rc left
  shift 2
  case " $STEPS " in *" $name "*) ;; *) echo "== $name: not in STEPS"; return 0 ;; esac
  left=$((BUDGET_S - ($(date +%s) - started)))
  if [ "$limit" -gt "$left" ]; then
    echo "== $name: skipped, ${left} s of the budget left and it may take ${limit} s"
    return 0
  fi
  echo "== $name (limit ${limit} s, ${left} s left)"
  t0=$(date +%s)
  # SIGINT first: pytest still writes its report, engine run its stats, the benchmarks keep what they wrote.
  timeout -s INT -k 20 "$limit" "$@"
  rc=$?
  echo "== $name: exit $rc after $(($(date +%s) - t0)) s$([ $rc = 124 ] && echo ' (time limit)')"
  return 0
}

# -- setup: GL loaders, missing wheels, environment ------------------------------------------------------------------
if [ "${UNPACK_GL:-1}" = 1 ] && ls .gl/*.deb >/dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
nv_egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -f "$nv_egl" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$nv_egl
export PYTHONPATH=$PWD
WHL_DIR=${WHL_DIR:-.whl}
if ls "$WHL_DIR"/*.whl >/dev/null 2>&1; then
  ${PYTHON:-python3} -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL_DIR"/*.whl \
    || { echo "== setup: installing .whl failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 ENGINE_COMPILE_MODE=${ENGINE_COMPILE_MODE:-default}
PY=${PYTHON:-python3}

if [ "${SMALL:-0}" = 1 ]; then
  SG=128 SIZES="64" DIFF=64 FRAMES=5 WIDTHS="--channel-base 1024 --channel-max 32" DIFF_OPTS="--frames 3 --warmup 1 --skip-fullvae"
else
  SG=1024 SIZES="512 1024" DIFF=512 FRAMES=100 WIDTHS="" DIFF_OPTS=""
fi

echo "== machine"
date -u +%FT%TZ
git log -1 --format='commit %H %s' 2>/dev/null || true
nvidia-smi --query-gpu=name,driver_version,temperature.gpu,clocks.sm,clocks.mem,power.draw --format=csv 2>/dev/null \
  || echo "nvidia-smi: not here"
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
$PY -m pip list 2>/dev/null | grep -iE "^(cuda-bindings|triton|moderngl|glcontext|diffusers|transformers|nvidia-ml-py) " || true

# -- the checks, most important first --------------------------------------------------------------------------------
step info 60 $PY -m engine info

step tests 240 $PY -m pytest -q -p no:cacheprovider -o timeout=150 -m gpu -rs --junitxml "$RES/gpu-tests.xml" \
  tests/test_interop_gpu.py tests/test_backends.py tests/test_kernels.py tests/test_egl_device.py tests/test_stylegan2.py

# shellcheck disable=SC2086  # SIZES, WIDTHS and DIFF_OPTS are word lists
step interop 200 $PY bench/bench_interop.py --sizes $SIZES --frames "$FRAMES" --warmup 20 --copy-iters 200 $WIDTHS \
  --out "$RES/interop.json"

step run 120 $PY -m engine run --generator stylegan2 --size "$SG" --seconds 10 --fps 0 --sink null \
  --osc-port 0 --quiet --stats-json "$RES/run-stylegan2-$SG.json"

step diffusion 180 $PY bench/bench_diffusion.py --backend auto --size "$DIFF" $DIFF_OPTS --out "$RES/diffusion-$DIFF.json"

step bench 120 $PY -m engine bench --generator stylegan2 --size "$SG" --seconds 15 --compare seeds --quiet \
  --out "$RES/bench-stylegan2-$SG"

echo "== done in $(($(date +%s) - started)) s"
