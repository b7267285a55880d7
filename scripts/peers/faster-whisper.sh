#!/usr/bin/env bash
# Creates (idempotently) the Python environment for the faster-whisper peer that
# `whisper-bench` and testdata/speech/ compare surge's Whisper worker against, and prints
# its python path:
#
#   PY="$(scripts/peers/faster-whisper.sh)"
#   "$PY" loadtest/peers/faster_whisper_peer.py --surge target/release/surge wer clip.wav
#
# The venv lives at ${SURGE_PEERS_DIR:-$HOME/.cache/surge-peers}/faster-whisper and holds
# faster-whisper==1.2.1 (CTranslate2 wheels) from the package index. The peer reads the same
# CTranslate2 weights surge serves, from surge's model cache (see the peer script's --surge).
# Progress goes to stderr; stdout is only the python path.
set -euo pipefail
. "$(dirname "$0")/venv.sh"

FW_VERSION=1.2.1
peer_pip faster-whisper "faster-whisper peer" ".installed-faster-whisper-$FW_VERSION" \
  'faster_whisper, ctranslate2' "faster-whisper==$FW_VERSION"
