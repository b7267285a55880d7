#!/usr/bin/env bash
# Builds (idempotently) llama.cpp's C++ OpenAI server, `llama-server`, the peer that
# `llm-bench` compares surge's LLM worker against, and prints its path:
#
#   LLAMA_SERVER="$(scripts/peers/llama-server.sh)"
#   target/release/llm-bench --surge target/release/surge --llama-server "$LLAMA_SERVER" ...
#
# The sources are the llama.cpp tree vendored in the llama-cpp-python source package on
# the package index (the only source reachable from the development machines); the build
# is CMake Release with the server on and UI/OpenSSL/curl off, GGML_NATIVE=OFF with
# AVX2/FMA/F16C/AVX-512/VNNI/VBMI/BF16 on and AMX off (some VMs report AMX but fault on
# it, and a native build then dies with SIGILL). Takes ~15 minutes on 2 cores; lives in
# ${SURGE_PEERS_DIR:-$HOME/.cache/surge-peers}/llama-server. Progress goes to stderr.
set -euo pipefail

LCP_VERSION=0.3.36
root="${SURGE_PEERS_DIR:-$HOME/.cache/surge-peers}/llama-server"
bin="$root/build/bin/llama-server"
stamp="$root/.built-$LCP_VERSION"

if [ ! -f "$stamp" ]; then
  command -v cmake >/dev/null || { echo "llama-server peer: cmake missing (scripts/setup.sh installs it)" >&2; exit 1; }
  mkdir -p "$root"
  echo "llama-server peer: fetching llama-cpp-python==$LCP_VERSION sources" >&2
  python3 -m pip download -q --no-deps --no-binary :all: -d "$root/sdist" \
    "llama-cpp-python==$LCP_VERSION" >&2
  rm -rf "$root/src"
  mkdir -p "$root/src"
  tar -xzf "$root"/sdist/llama_cpp_python-"$LCP_VERSION".tar.gz -C "$root/src" --strip-components=1
  echo "llama-server peer: building llama-server (minutes)" >&2
  cmake -S "$root/src/vendor/llama.cpp" -B "$root/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_WEBUI=OFF -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF >&2
  cmake --build "$root/build" --target llama-server -j "$(nproc)" >&2
  "$bin" --version >&2
  touch "$stamp"
fi
echo "$bin"
