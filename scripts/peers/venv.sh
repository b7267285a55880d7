# Sourced by the peer scripts: `peer_venv DIR LABEL` makes sure DIR is a Python venv
# (installing python3-venv with apt-get when the system Python lacks it).
peer_venv() {
  local dir="$1" label="$2"
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "$label: installing python3-venv" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >&2
  fi
  if [ ! -x "$dir/bin/python" ]; then
    echo "$label: creating venv at $dir" >&2
    mkdir -p "$(dirname "$dir")"
    python3 -m venv "$dir" >&2
  fi
}
