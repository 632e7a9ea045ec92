# Sourced by demo.sh and test.sh: the workspace's environment, .venv, exactly as uv.lock pins it.
# `uv sync --locked` installs every package of the workspace (editable) and the dev tools, and
# does nothing when .venv already matches the lock. uv itself comes from PyPI the first time.
# Usage: source scripts/setup.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
uv_version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["tool"]["uv"]["required-version"].lstrip("="))' "$root/pyproject.toml")
uv="$root/.cache/uv-$uv_version/bin/uv"
if [[ ! -x "$uv" ]]; then
    python=python3.11
    command -v "$python" >/dev/null || python=python3
    echo "installing uv $uv_version from PyPI into $root/.cache" >&2
    "$python" -m venv "$root/.cache/uv-$uv_version"
    "$root/.cache/uv-$uv_version/bin/pip" install -q --disable-pip-version-check "uv==$uv_version"
fi
"$uv" sync --locked --quiet --project "$root"
# shellcheck disable=SC1091
source "$root/.venv/bin/activate"
