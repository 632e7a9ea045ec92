# Sourced by demo.sh and test.sh: the virtual environment .venv with the pinned packages
# (constraints.txt), installed once and again only when pyproject.toml or the pins change.
# Usage: source scripts/setup.sh [--dev]    (--dev adds the test and lint tools)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
groups=()
[[ "${1:-}" == "--dev" ]] && groups=(--group dev)

python=python3.11
command -v "$python" >/dev/null || python=python3
"$python" -c 'import sys; assert sys.version_info[:2] >= (3, 11), "dcgan-serving needs Python 3.11+"'

[[ -x "$root/.venv/bin/python" ]] || "$python" -m venv "$root/.venv"
stamp="$root/.venv/.dcgan-installed"
want=$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -c1-16)"${groups[*]:-}"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "setting up $root/.venv (torch, onnxruntime, grpc ...; a few minutes the first time)" >&2
    "$root/.venv/bin/python" -m pip install -q --disable-pip-version-check -U "pip>=25.1"
    "$root/.venv/bin/python" -m pip install -q --disable-pip-version-check \
        -c "$root/constraints.txt" -e "$root[train,serve]" "${groups[@]}"
    echo "$want" > "$stamp"
fi
# shellcheck disable=SC1091
source "$root/.venv/bin/activate"
export ORT_DISABLE_TELEMETRY=1  # onnxruntime's telemetry is on by default in its Linux wheels
