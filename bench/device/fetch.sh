#!/usr/bin/env bash
# Run HERE (the machine with internet-backed package registries), in any directory: fetches what the lent GPU machine
# lacks into the repo root's .gl/ and .whl/ (both git-ignored), for bench/device/check.sh to unpack there.
#   .gl/   glvnd's EGL/GL loader libraries (amd64 .debs): NVIDIA's driver brings the vendor library, not the loaders.
#   .whl/  the Python packages its image lacks (moderngl, glcontext, python-osc; diffusers + importlib-metadata for the
#          diffusion checks), as wheels for its Python (3.12, x86-64). torch, triton, cuda-bindings, numpy, pillow,
#          nvidia-ml-py, transformers, safetensors, matplotlib and tqdm are already there (device tool's KINDS.md).
# Idempotent; about 1.5 MB in all. Then:  device run  carry=[".gl", ".whl"]  command="bash bench/device/check.sh"
set -euo pipefail
cd "$(dirname "$0")/../.."
PYVER=${PYVER:-3.12}
WHEELS=${WHEELS:-"moderngl==5.13.0 glcontext==3.1.0 python-osc==1.10.2 diffusers==0.42.1 importlib-metadata==10.2.0"}

mkdir -p .gl .whl /tmp/amd64/partial
apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
if ! ls .gl/libegl1_*.deb >/dev/null 2>&1; then
  apt-get "${apt_opts[@]}" update -qq
  (cd .gl && apt-get "${apt_opts[@]}" download libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
fi

platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 manylinux_2_5_x86_64; do
  platforms+=(--platform "$p")
done
# shellcheck disable=SC2086  # WHEELS is a list of requirement strings
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  "${platforms[@]}" -d .whl $WHEELS 2>&1 | grep -v "^WARNING: Location" || true

echo "fetch: .gl has $(ls .gl/*.deb | wc -l) packages, .whl has $(ls .whl/*.whl | wc -l) wheels ($(du -sh .gl .whl | awk '{print $1}' | paste -sd+ -))"
