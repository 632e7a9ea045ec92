#!/usr/bin/env bash
# Build the images on this machine, on one that reaches package registries but no container
# registry (CI: fresh Debian bookworm, root): a Docker engine, a debootstrap base image, the
# wheelhouse served over loopback, then the images. The end-to-end tests run on what it built:
#
#   bash scripts/docker-build.sh                  # dcgan-serve:cpu and dcgan-train:latest
#   bash scripts/docker-build.sh --gpu-image      # and dcgan-serve:gpu
#   bash scripts/test.sh -m e2e tests/e2e         # then: compose, for real (tests/e2e)
#
# Every build is a legacy (non-BuildKit) one on the host network, so that its RUN steps reach
# the wheel server on 127.0.0.1 (dockerd has no bridge). Environment: DCGAN_SERVE_IMAGE,
# DCGAN_SERVE_GPU_IMAGE and DCGAN_TRAIN_IMAGE (the tags docker-compose.yml runs). Build logs stay
# under .cache/docker/; a failed build prints its log's tail and exits 1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/docker-engine.sh
source scripts/docker-engine.sh
# shellcheck source=scripts/docker-base-image.sh
source scripts/docker-base-image.sh
# shellcheck source=scripts/docker-wheelhouse.sh
source scripts/docker-wheelhouse.sh

SERVE_IMAGE="${DCGAN_SERVE_IMAGE:-dcgan-serve:cpu}"
SERVE_GPU_IMAGE="${DCGAN_SERVE_GPU_IMAGE:-dcgan-serve:gpu}"
TRAIN_IMAGE="${DCGAN_TRAIN_IMAGE:-dcgan-train:latest}"
LOG_DIR="$ROOT/.cache/docker"

gpu_image=false
case "${1:-}" in
    "") ;;
    --gpu-image) gpu_image=true ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

log() { printf '[docker-build %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

declare -a TIMINGS=()
started=$SECONDS
timed() {  # timed NAME COMMAND...: run it, record how long it took
    local name="$1" start=$SECONDS
    shift
    "$@"
    TIMINGS+=("$(printf '%-28s %5ds' "$name" $((SECONDS - start)))")
}
on_exit() {
    stop_wheel_server
    printf '[docker-build] timings (total %ds):\n' $((SECONDS - started)) >&2
    printf '  %s\n' "${TIMINGS[@]}" >&2
}
trap on_exit EXIT

# build_image TAG DOCKERFILE [BUILD-ARG...]
build_image() {
    local tag="$1" dockerfile="$2"
    shift 2
    local build_log="$LOG_DIR/build-${tag//[:\/]/-}.log"
    log "docker build $tag ($dockerfile $*; log: $build_log)"
    if ! DOCKER_BUILDKIT=0 docker build --network host -f "$dockerfile" -t "$tag" \
        --build-arg "BASE_IMAGE=$base_image" --build-arg "PIP_WHEELS_URL=$WHEELS_URL" "$@" . \
        >"$build_log" 2>&1; then
        tail -n 60 "$build_log" >&2
        log "FAILED: docker build $tag"
        return 1
    fi
    log "$tag: $(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

engine() {
    ensure_docker_installed
    ensure_dockerd_running
    log "compose: $(docker-compose version --short 2>/dev/null || docker compose version --short)"
}
base_image=""
base() { base_image="$(ensure_base_image)"; }

mkdir -p "$LOG_DIR"
timed engine engine
timed "base image" base
flavours=(cpu train)
[[ "$gpu_image" == true ]] && flavours+=(gpu)
timed wheels download_wheels "${flavours[@]}"
start_wheel_server
timed "$SERVE_IMAGE" build_image "$SERVE_IMAGE" docker/Dockerfile --build-arg FLAVOUR=cpu
timed "$TRAIN_IMAGE" build_image "$TRAIN_IMAGE" docker/Dockerfile.train
if [[ "$gpu_image" == true ]]; then
    timed "$SERVE_GPU_IMAGE" build_image "$SERVE_GPU_IMAGE" docker/Dockerfile --build-arg FLAVOUR=gpu
fi
docker image ls --filter "reference=dcgan-*" >&2
