#!/usr/bin/env bash
# Fill a wheelhouse on the host for the image builds, and serve it to them over loopback.
#
#   bash scripts/docker-wheelhouse.sh download cpu train [gpu]   # pip download into the wheelhouse
#   source scripts/docker-wheelhouse.sh; start_wheel_server; echo "$WHEELS_URL"; stop_wheel_server
#
# Why: the training image needs ~2.8 GB of torch and nvidia-* wheels. Downloading them once on
# the host (from the registry or a local mirror, with the host's pip configuration and cache)
# and serving the folder to host-network builds on 127.0.0.1 (--no-index --find-links) puts no
# GBs in the build context and no wheel layer in any image, and a rebuild after a code change
# downloads nothing. The lists are the images' own: `uv export` of uv.lock for the packages each
# image installs (see docker/Dockerfile), with their hashes, plus the pinned uv that the builds
# bootstrap. The wheels are resolved for the images' interpreter (CPython 3.11, glibc manylinux
# x86_64), binary only: nothing compiles inside a build.
#
# Environment: WHEELHOUSE (default .cache/wheelhouse), WHEEL_SERVER_PORT (38551).
set -euo pipefail

_wh_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELHOUSE="${WHEELHOUSE:-$_wh_root/.cache/wheelhouse}"
WHEEL_SERVER_LOG="${WHEEL_SERVER_LOG:-$_wh_root/.cache/docker/wheel-server.log}"
WHEEL_SERVER_PID=""
WHEELS_URL=""

wh_log() { printf '[docker-wheelhouse %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# The uv version the workspace pins ([tool.uv] required-version of pyproject.toml).
workspace_uv_version() {
    python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["tool"]["uv"]["required-version"].lstrip("="))' \
        "$_wh_root/pyproject.toml"
}

# The directory of a venv holding that uv (and pip), where scripts/setup.sh keeps it: made from
# PyPI the first time.
workspace_uv_venv() {
    local version venv
    version="$(workspace_uv_version)"
    venv="$_wh_root/.cache/uv-$version"
    if [[ ! -x "$venv/bin/uv" ]]; then
        wh_log "installing uv $version from PyPI into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "uv==$version"
    fi
    echo "$venv"
}

# flavour_requirements FLAVOUR UV: the pinned, hashed requirement list of one image flavour,
# exactly as the Dockerfiles export it from uv.lock.
flavour_requirements() {
    local flavour="$1" uv="$2"
    local -a packages
    case "$flavour" in
        cpu | gpu) packages=(--package dcgan-serve --package dcgan-client --extra "$flavour") ;;
        train) packages=(--package dcgan-train --package dcgan-export) ;;
        *) wh_log "unknown flavour '$flavour' (cpu, gpu or train)"; return 2 ;;
    esac
    "$uv" export --quiet --project "$_wh_root" --frozen --no-dev --no-emit-workspace \
        --no-header --no-annotate "${packages[@]}"
}

# pip download every flavour named into $WHEELHOUSE (wheels already there are not fetched again).
download_wheels() {
    local venv flavour reqs glibc_minor uv_version
    local -a platforms=()
    # pip takes each --platform literally (no manylinux_2_36 => 2_35 ... expansion): list them.
    for glibc_minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${glibc_minor}_x86_64"); done
    platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
    venv="$(workspace_uv_venv)"
    uv_version="$(workspace_uv_version)"
    mkdir -p "$WHEELHOUSE"
    reqs="$(mktemp)"
    for flavour in "$@"; do
        flavour_requirements "$flavour" "$venv/bin/uv" >"$reqs"
        echo "uv==$uv_version" >"$reqs.uv"
        # Skip a flavour whose list is that of its last complete download.
        local stamp="$WHEELHOUSE/.complete-$flavour" digest
        digest="$(cat "$reqs" "$reqs.uv" | sha256sum | cut -d' ' -f1)"
        if [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]]; then
            wh_log "wheels for $flavour already complete"
            continue
        fi
        wh_log "pip download ($flavour, $(grep -c '^[a-z]' "$reqs") packages) into $WHEELHOUSE"
        # --platform/--python-version: wheels for the images' CPython 3.11 on glibc >= 2.36
        # (bookworm; python:3.11-slim is as new or newer), whatever python runs this. The list
        # carries hashes, so pip checks every wheel against uv.lock; uv's own wheel is a second
        # call (a hashed list admits no unhashed line). The grep drops pip's noise about local
        # mirror folders that lack a project (harmless).
        local list
        for list in "$reqs" "$reqs.uv"; do
            "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
                --only-binary=:all: "${platforms[@]}" \
                --python-version 3.11 --implementation cp --abi cp311 \
                -r "$list" -d "$WHEELHOUSE" 2>&1 |
                { grep -v 'is ignored: it is neither a file nor a directory' || true; } >&2
        done
        echo "$digest" >"$stamp"
    done
    rm -f "$reqs" "$reqs.uv"
    wh_log "wheelhouse: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
}

# Serve $WHEELHOUSE on 127.0.0.1:$WHEEL_SERVER_PORT; sets WHEELS_URL and WHEEL_SERVER_PID.
# pip and uv take plain HTTP from 127.0.0.0/8. The port is fixed on purpose: the URL is a build
# argument, part of the layer cache key, and a new port would rebuild the GBs of the training
# image's dependency layer on every run.
start_wheel_server() {
    local port="${WHEEL_SERVER_PORT:-38551}" waited=0
    # SO_REUSEADDR as http.server sets it: the TIME_WAIT sockets of an earlier run do not count.
    if ! python3 -c "import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $port))" 2>/dev/null; then
        port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
        wh_log "port ${WHEEL_SERVER_PORT:-38551} is taken: serving on $port (the builds' layer cache will miss)"
    fi
    mkdir -p "$(dirname "$WHEEL_SERVER_LOG")"
    python3 -m http.server --bind 127.0.0.1 --directory "$WHEELHOUSE" "$port" >"$WHEEL_SERVER_LOG" 2>&1 &
    WHEEL_SERVER_PID=$!
    WHEELS_URL="http://127.0.0.1:$port/"
    until python3 -c "import urllib.request; urllib.request.urlopen('$WHEELS_URL', timeout=1)" 2>/dev/null; do
        if ((waited >= 20)) || ! kill -0 "$WHEEL_SERVER_PID" 2>/dev/null; then
            wh_log "the wheel server did not start:"; cat "$WHEEL_SERVER_LOG" >&2
            return 1
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    wh_log "serving $WHEELHOUSE at $WHEELS_URL (pid $WHEEL_SERVER_PID)"
}

stop_wheel_server() {
    if [[ -n "$WHEEL_SERVER_PID" ]]; then
        kill "$WHEEL_SERVER_PID" 2>/dev/null || true
        wait "$WHEEL_SERVER_PID" 2>/dev/null || true
        WHEEL_SERVER_PID=""
    fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    case "${1:-}" in
        download) shift; download_wheels "${@:-cpu}" ;;
        *) echo "usage: $0 download [cpu] [gpu] [train]" >&2; exit 2 ;;
    esac
fi
