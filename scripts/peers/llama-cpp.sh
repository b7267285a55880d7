#!/usr/bin/env bash
# Creates (idempotently) the Python environment for the llama.cpp peer (its OpenAI
# server, `llama-cpp-python[server]`) that the load tester's 10x spike is compared
# against, and prints its python path:
#
#   PY="$(scripts/peers/llama-cpp.sh)"
#   "$PY" -m llama_cpp.server --model "$(target/release/surge models path smollm2)" \
#       --host 127.0.0.1 --port 8081 --n_threads 2
#
# The venv lives at ${SURGE_PEERS_DIR:-$HOME/.cache/surge-peers}/llama-cpp. pip builds
# llama.cpp from source (cmake and a C++ compiler: scripts/setup.sh installs them), with
# the CPU's native instruction set. Progress goes to stderr; stdout is only the path.
set -euo pipefail
. "$(dirname "$0")/venv.sh"

LCP_VERSION=0.3.16
# Built from source (minutes) for the CPU's own instruction set.
CMAKE_ARGS="-DGGML_NATIVE=ON" peer_pip llama-cpp "llama.cpp peer" \
  ".installed-llama-cpp-python-$LCP_VERSION" 'llama_cpp, llama_cpp.server' \
  "llama-cpp-python[server]==$LCP_VERSION"
