#!/usr/bin/env bash
# Creates (idempotently) a Python environment holding OpenAI's own Python SDK, which
# gateway/tests/openai_sdk.rs drives against a real `surge serve` (structured outputs
# with `chat.completions.parse`, tool calls, streamed tool calls), and prints its python:
#
#   PY="$(scripts/peers/openai-sdk.sh)"
#   "$PY" gateway/tests/sdk/openai_sdk_check.py --base-url http://127.0.0.1:8080/v1
#
# The venv lives at ${SURGE_PEERS_DIR:-$HOME/.cache/surge-peers}/openai-sdk and holds
# openai==3.63.0 and pydantic==2.14.4 from the package index. Progress goes to stderr;
# stdout is only the python path.
set -euo pipefail
. "$(dirname "$0")/venv.sh"

OPENAI_VERSION=3.63.0
PYDANTIC_VERSION=2.14.4
peer_pip openai-sdk "openai sdk" ".installed-openai-$OPENAI_VERSION-pydantic-$PYDANTIC_VERSION" \
  'openai, pydantic' "openai==$OPENAI_VERSION" "pydantic==$PYDANTIC_VERSION"
