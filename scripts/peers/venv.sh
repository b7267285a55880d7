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

# `peer_pip NAME LABEL STAMP IMPORTS PACKAGE...` makes sure
# ${SURGE_PEERS_DIR:-$HOME/.cache/surge-peers}/NAME is a venv holding PACKAGE... (pip,
# once: the file STAMP in it marks them installed and `import IMPORTS` working) and
# prints its python. Environment set before the call (CMAKE_ARGS=…) reaches pip.
peer_pip() {
  local name="$1" label="$2" stamp="$3" imports="$4"
  shift 4
  local dir="${SURGE_PEERS_DIR:-$HOME/.cache/surge-peers}/$name"
  local py="$dir/bin/python"
  if [ ! -f "$dir/$stamp" ]; then
    peer_venv "$dir" "$label"
    echo "$label: installing $*" >&2
    "$py" -m pip install -q --disable-pip-version-check "$@" >&2
    "$py" -c "import $imports" >&2
    touch "$dir/$stamp"
  fi
  echo "$py"
}
