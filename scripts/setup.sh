#!/usr/bin/env bash
# Installs what building and testing surge needs on a fresh Debian machine with a Rust
# toolchain. Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v cmake >/dev/null || need+=(cmake)          # pingora's build (gateway)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v mount >/dev/null || need+=(mount)          # disk-full test mounts a tiny tmpfs
command -v espeak-ng >/dev/null || need+=(espeak-ng)  # whisper test synthesises speech
command -v sox >/dev/null || need+=(sox)              # whisper test resamples to 16 kHz
grep -q ' mp3 ' <<<"$(sox -h 2>/dev/null)" || need+=(libsox-fmt-mp3)  # audio test encodes mp3
command -v promtool >/dev/null || need+=(prometheus)  # dashboards/ rules: promtool, and a real Prometheus
command -v chromium >/dev/null || need+=(chromium)      # the status page, rendered headless

if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
