#!/usr/bin/env bash
# Compile-checks the CUDA build (`--features cuda`) on a machine without a GPU or a CUDA
# install: fetches nvcc, cicc, the CUDA headers and the CUDA runtime from PyPI's
# nvidia-* wheels (CUDA 13) into a cache directory, then runs `cargo check` with them.
# Nothing is linked or run, so no driver is needed: it catches code that does not
# compile with CUDA on (cfg(feature = "cuda") paths, candle's kernels, cudarc's build).
#
#   scripts/check-cuda-build.sh            # cargo check -p surge-runtime --features cuda
#   scripts/check-cuda-build.sh -p surge-gateway   # other cargo check arguments
#
# Environment: SURGE_CUDA_TOOLKIT (where the toolkit goes; default target/cuda-toolkit),
# CUDA_COMPUTE_CAP (default 90: H100/H200; candle compiles its kernels for it),
# CARGO_TARGET_DIR (default target/cuda-check, apart from the CPU build's artifacts).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
toolkit="${SURGE_CUDA_TOOLKIT:-$root/target/cuda-toolkit}"
cuda="$toolkit/nvidia/cu13"

if [ ! -x "$cuda/bin/nvcc" ] || [ ! -x "$cuda/nvvm/bin/cicc" ]; then
  echo "check-cuda-build: fetching the CUDA 13 compiler and headers from PyPI into $toolkit"
  wheels="$toolkit/wheels"
  mkdir -p "$wheels"
  # nvcc and cudafe++ (nvidia-cuda-nvcc), cicc and libdevice (nvidia-nvvm), the crt and
  # runtime headers, cub/thrust (cccl). The cu12 nvcc wheel ships ptxas only, no nvcc.
  python3 -m pip download --quiet --no-deps -d "$wheels" \
    nvidia-cuda-nvcc nvidia-nvvm nvidia-cuda-crt nvidia-cuda-runtime nvidia-cuda-cccl
  for w in "$wheels"/*.whl; do
    python3 -m zipfile -e "$w" "$toolkit"
  done
  chmod +x "$cuda"/bin/* "$cuda"/nvvm/bin/*
fi

export PATH="$cuda/bin:$PATH"
export CUDA_HOME="$cuda"
export NVCC="$cuda/bin/nvcc"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/cuda-check}"
# cudarc reads the toolkit version from `nvcc --version` and knows releases up to its
# own; pin the newest it supports when nvcc is newer (bindings only, nothing links).
release="$(nvcc --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
read -r major minor <<<"$release"
if [ -z "${CUDARC_CUDA_VERSION:-}" ] && [ "$major" -eq 13 ] && [ "$minor" -gt 4 ]; then
  export CUDARC_CUDA_VERSION=13040
fi
echo "check-cuda-build: nvcc $major.$minor, compute cap $CUDA_COMPUTE_CAP, target $CARGO_TARGET_DIR"

cd "$root"
if [ $# -eq 0 ]; then
  set -- -p surge-runtime
fi
start=$(date +%s)
cargo check --features cuda "$@"
echo "check-cuda-build: ok in $(( $(date +%s) - start )) s"
