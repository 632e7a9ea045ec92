#!/usr/bin/env bash
# Make sure a Docker engine and docker-compose are usable on this machine (CI or a dev box).
#
#   bash scripts/docker-engine.sh          # install what is missing, start dockerd if none runs
#
# On CI (root, fresh Debian bookworm, no systemd, no container registry) this installs docker.io
# and docker-compose from Debian and starts dockerd by hand. The daemon runs with no bridge and
# no iptables rules: every container of the tests uses the host network and talks to loopback
# only, so nothing may reach private addresses through a docker0 NAT.
#
# Environment: DOCKERD_LOG (default .cache/docker/dockerd.log), DOCKERD_WAIT_S (default 60).
# It can also be sourced for its functions (ensure_docker_installed, ensure_dockerd_running).
set -euo pipefail

_engine_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKERD_LOG="${DOCKERD_LOG:-$_engine_root/.cache/docker/dockerd.log}"
DOCKERD_WAIT_S="${DOCKERD_WAIT_S:-60}"

engine_log() { printf '[docker-engine %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# Install the engine (dockerd, containerd, runc), docker-compose v1 and debootstrap from Debian if
# any is missing. A docker CLI alone (some images ship one in /usr/local/bin) is not enough.
ensure_docker_installed() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        engine_log "missing ${missing[*]} and not root: install them (apt-get install docker.io docker-compose debootstrap)"
        return 1
    fi
    engine_log "installing ${missing[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends: no apparmor, cgroupfs-mount, git ... that CI does not need.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

docker_ready() { docker info >/dev/null 2>&1; }

# Start dockerd in its own session (it outlives this script, later runs reuse it) unless one
# answers already. It logs to $DOCKERD_LOG; on a start failure the log's tail is printed.
ensure_dockerd_running() {
    if docker_ready; then
        return 0
    fi
    if pgrep -x dockerd >/dev/null; then
        engine_log "a dockerd runs but does not answer yet; waiting"
    else
        if [[ $(id -u) -ne 0 ]]; then
            engine_log "no Docker engine answers and only root can start one here"
            return 1
        fi
        mkdir -p "$(dirname "$DOCKERD_LOG")"
        engine_log "starting dockerd (log: $DOCKERD_LOG)"
        # --bridge=none: no docker0, so no container gets a NATed route out; containers use the
        #   host network (or none). --iptables/--ip-masq off: leave the host's rules alone.
        # overlay2 on the host's ext4; containerd is started by dockerd itself.
        setsid dockerd \
            --bridge=none \
            --iptables=false \
            --ip-masq=false \
            --ip-forward=false \
            --storage-driver=overlay2 \
            >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    local waited=0
    until docker_ready; do
        if ((waited >= DOCKERD_WAIT_S)); then
            engine_log "dockerd did not answer within ${DOCKERD_WAIT_S}s; the end of its log:"
            tail -n 40 "$DOCKERD_LOG" >&2 || true
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    engine_log "dockerd ready after ${waited}s ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    ensure_docker_installed
    ensure_dockerd_running
fi
