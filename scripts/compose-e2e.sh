#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions run through run_step and the EXIT trap, unseen by it
# End-to-end test of the images and docker-compose.yml, on a machine that reaches package
# registries but no container registry (CI: fresh Debian bookworm, root, CI=true).
#
#   bash scripts/compose-e2e.sh                 # everything, then tear down
#   bash scripts/compose-e2e.sh --phase1        # engine, base, wheels, build, train, export:
#                                               #   no serving steps
#   bash scripts/compose-e2e.sh --steps build,train --keep
#
# Steps (in order; --steps picks a subset, comma-separated):
#   engine  install docker.io + docker-compose from Debian if missing, start dockerd if none runs
#   base    a debootstrap bookworm base image with python3 (scripts/docker-base-image.sh), reused
#   wheels  pip download the images' wheels on the host, serve them on 127.0.0.1 to the builds
#   build   the CPU serving image and the training image, FROM the base, host-network builds
#   train   the compose `train` job, briefly (embedded digits, tiny model), checkpoint in a volume
#   export  the compose `export` job into the `models` volume
#   serve   serve up, health check, Generate from the host, images checked, no torch inside,
#           metrics answer
#   scale   `--scale serve=2` on two ports: both healthy, both answer alike, and one client's
#           round_robin over both addresses reaches both (their Prometheus counters say so)
# Every container runs on the host network (docker/compose.e2e.yml) and talks to 127.0.0.1 only.
#
# Options: --keep (leave containers and volumes), --gpu-image (also build the GPU flavour).
# Environment: E2E_PROJECT (compose project, default dcgan-e2e), E2E_PORT and E2E_METRICS_PORT
# (host ports, default 56051 and 56090; scaling takes the next one of each too), DOCKER_COMPOSE
# (default docker-compose, else docker compose).
# On failure: compose ps, the services' logs and health, the failing build's log tail and the
# daemon's errors, then exit 1. Build logs and client outputs stay under .cache/docker/e2e/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/docker-engine.sh
source scripts/docker-engine.sh
# shellcheck source=scripts/docker-base-image.sh
source scripts/docker-base-image.sh
# shellcheck source=scripts/docker-wheelhouse.sh
source scripts/docker-wheelhouse.sh

ALL_STEPS="engine,base,wheels,build,train,export,serve,scale"
PHASE1_STEPS="engine,base,wheels,build,train,export"
E2E_PROJECT="${E2E_PROJECT:-dcgan-e2e}"
SERVE_IMAGE="${DCGAN_SERVE_IMAGE:-dcgan-serve:cpu}"
SERVE_GPU_IMAGE="${DCGAN_SERVE_GPU_IMAGE:-dcgan-serve:gpu}"
TRAIN_IMAGE="${DCGAN_TRAIN_IMAGE:-dcgan-train:latest}"
LOG_DIR="$ROOT/.cache/docker/e2e"
# The model the jobs make: small enough to train in seconds on two CPU cores.
TRAIN_ARGS=(--dataset digits --image-size 32 --ngf 16 --ndf 16 --max-steps 20 --device cpu)
HEALTH_TIMEOUT_S=120

steps="$ALL_STEPS"
keep=false
gpu_image=false
while (($#)); do
    case "$1" in
        --phase1) steps="$PHASE1_STEPS" ;;
        --steps) steps="$2"; shift ;;
        --steps=*) steps="${1#--steps=}" ;;
        --keep) keep=true ;;
        --gpu-image) gpu_image=true ;;
        -h | --help) sed -n '3,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { printf '\n[compose-e2e %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
wants() { [[ ",$steps," == *",$1,"* ]]; }

# ---------------------------------------------------------------------------- timings

declare -a TIMINGS=()
SCRIPT_START=$SECONDS
# run_step NAME FUNCTION: run it, record how long it took.
run_step() {
    local name="$1" start=$SECONDS
    log "step $name"
    "$2"
    TIMINGS+=("$(printf '%-10s %4ds' "$name" $((SECONDS - start)))")
}
print_timings() {
    ((${#TIMINGS[@]})) || return 0
    printf '\n[compose-e2e] timings (total %ds):\n' $((SECONDS - SCRIPT_START)) >&2
    printf '  %s\n' "${TIMINGS[@]}" >&2
}

# ---------------------------------------------------------------------------- compose

compose_cmd() {
    if [[ -n "${DOCKER_COMPOSE:-}" ]]; then
        echo "$DOCKER_COMPOSE"
    elif command -v docker-compose >/dev/null; then
        echo docker-compose
    else
        echo "docker compose"
    fi
}

# docker-compose 1.29 (docker-py) refuses a host-network container that publishes `ports`
# ("host network_mode is incompatible with port_bindings"), and an override file cannot empty a
# list the base file sets. So the e2e resolves docker-compose.yml + docker/compose.e2e.yml with
# `compose config`, drops `ports` where network_mode is host, and runs compose on the result.
# Called again whenever the E2E_* variables it interpolates change.
E2E_COMPOSE_FILE="$LOG_DIR/compose.resolved.yml"
resolve_compose_file() {
    local python
    python="$(yaml_python)"
    mkdir -p "$LOG_DIR"
    # shellcheck disable=SC2046  # "docker compose" is two words on purpose
    $(compose_cmd) --project-name "$E2E_PROJECT" --project-directory "$ROOT" \
        -f "$ROOT/docker-compose.yml" -f "$ROOT/docker/compose.e2e.yml" config |
        "$python" -c '
import sys, yaml
config = yaml.safe_load(sys.stdin)
for service in config["services"].values():
    if service.get("network_mode") == "host":
        service.pop("ports", None)
yaml.safe_dump(config, sys.stdout, sort_keys=False)
' >"$E2E_COMPOSE_FILE"
}

# A python with PyYAML: docker-compose 1.29 runs on Debian's python3 with python3-yaml.
yaml_python() {
    local python
    for python in python3 /usr/bin/python3; do
        if "$python" -c 'import yaml' 2>/dev/null; then
            echo "$python"
            return 0
        fi
    done
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-yaml >/dev/null
    echo /usr/bin/python3
}

# compose ARGS...: compose on the resolved e2e file, profile train on.
compose() {
    # shellcheck disable=SC2046  # "docker compose" is two words on purpose
    $(compose_cmd) --project-name "$E2E_PROJECT" --project-directory "$ROOT" \
        -f "$E2E_COMPOSE_FILE" --profile train "$@"
}

# Fixed host ports (the replicas of step_scale take consecutive ones): fail at once if taken.
E2E_PORT="${E2E_PORT:-56051}"
E2E_PORT2=$((E2E_PORT + 1))
E2E_METRICS_PORT="${E2E_METRICS_PORT:-56090}"
E2E_METRICS_PORT2=$((E2E_METRICS_PORT + 1))
check_ports_free() {
    python3 - "$@" <<'EOF' || die "a host port the e2e needs is taken (set E2E_PORT / E2E_METRICS_PORT)"
import socket, sys
for port in map(int, sys.argv[1:]):
    try:  # with SO_REUSEADDR, as the servers bind: TIME_WAIT leftovers do not count
        socket.create_server(("127.0.0.1", port)).close()
    except OSError as error:
        sys.exit(f"127.0.0.1:{port}: {error.strerror}")
EOF
}

# What compose interpolates into the files (see docker-compose.yml and docker/compose.e2e.yml).
export DCGAN_SERVE_IMAGE="$SERVE_IMAGE" DCGAN_TRAIN_IMAGE="$TRAIN_IMAGE" E2E_PORT E2E_METRICS_PORT
export E2E_SERVE_PORTS="$E2E_PORT-$E2E_PORT"
export COMPOSE_HTTP_TIMEOUT=300

# ---------------------------------------------------------------------------- failure and cleanup

compose_used=false
print_diagnostics() {
    log "diagnostics"
    if [[ "$compose_used" == true ]]; then
        compose ps -a >&2 || true
        compose logs --no-color --timestamps --tail=200 >&2 || true
        local id
        for id in $(compose ps -q serve 2>/dev/null); do
            echo "--- health of $id" >&2
            docker inspect --format '{{json .State.Health}}' "$id" >&2 || true
        done
    fi
    if [[ -s "$DOCKERD_LOG" ]]; then
        echo "--- the last errors of $DOCKERD_LOG" >&2
        grep -E 'level=(error|fatal)' "$DOCKERD_LOG" | tail -n 20 >&2 || true
    fi
}

teardown() {
    if [[ "$compose_used" == true && "$keep" != true ]]; then
        log "tearing down project $E2E_PROJECT (containers and volumes)"
        compose down --volumes --remove-orphans --timeout 20 >&2 || true
    fi
}

on_exit() {
    local status=$?
    set +e
    trap - EXIT
    if ((status != 0)); then
        print_diagnostics
    fi
    teardown
    stop_wheel_server
    print_timings
    if ((status != 0)); then
        log "compose e2e FAILED (exit $status); logs under $LOG_DIR"
    else
        log "compose e2e passed (steps: $steps)"
    fi
    exit "$status"
}
trap on_exit EXIT

# ---------------------------------------------------------------------------- steps

step_engine() {
    ensure_docker_installed
    ensure_dockerd_running
    log "compose: $($(compose_cmd) version 2>/dev/null | head -n 1)"
}

BASE_IMAGE_NAME=""
step_base() {
    BASE_IMAGE_NAME="$(ensure_base_image)"
    docker image ls "$BASE_IMAGE_NAME" >&2
}

step_wheels() {
    local flavours=(cpu)
    wants build && flavours+=(train)
    [[ "$gpu_image" == true ]] && flavours+=(gpu)
    download_wheels "${flavours[@]}"
    start_wheel_server
}

# build_image TAG DOCKERFILE [BUILD-ARG...]: a legacy (non-BuildKit) build on the host network,
# so RUN steps reach the wheel server on 127.0.0.1; its log goes to a file, its tail to stderr
# if it fails.
build_image() {
    local tag="$1" dockerfile="$2" start=$SECONDS
    shift 2
    local build_log="$LOG_DIR/build-${tag//[:\/]/-}.log"
    local -a args=(--network host --build-arg "BASE_IMAGE=$BASE_IMAGE_NAME" -f "$dockerfile" -t "$tag")
    [[ -n "$WHEELS_URL" ]] && args+=(--build-arg "PIP_WHEELS_URL=$WHEELS_URL")
    log "docker build $tag ($dockerfile $*; log: $build_log)"
    if ! DOCKER_BUILDKIT=0 docker build "${args[@]}" "$@" . >"$build_log" 2>&1; then
        tail -n 60 "$build_log" >&2
        die "docker build $tag"
    fi
    TIMINGS+=("$(printf '%-10s %4ds  %s %s' "  image" $((SECONDS - start)) "$tag" \
        "$(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')")")
}

step_build() {
    [[ -n "$BASE_IMAGE_NAME" ]] || BASE_IMAGE_NAME="$(ensure_base_image)"
    # Builds always take their wheels from the host (cheap when the wheelhouse is complete): a
    # build from the index would be slower and miss the layer cache of earlier runs.
    [[ -n "$WHEELS_URL" ]] || step_wheels
    build_image "$SERVE_IMAGE" docker/Dockerfile --build-arg FLAVOUR=cpu
    build_image "$TRAIN_IMAGE" docker/Dockerfile.train
    if [[ "$gpu_image" == true ]]; then
        build_image "$SERVE_GPU_IMAGE" docker/Dockerfile --build-arg FLAVOUR=gpu
    fi
    docker image ls --filter "reference=dcgan-*" >&2
    # The serving image must not carry torch; onnxruntime must work in it.
    if docker run --rm --network none --entrypoint python "$SERVE_IMAGE" -c "import torch" 2>/dev/null; then
        die "torch is importable in $SERVE_IMAGE"
    fi
    docker run --rm --network none --entrypoint python "$SERVE_IMAGE" \
        -c "import onnxruntime, grpc; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())" \
        || die "onnxruntime does not import in $SERVE_IMAGE"
    docker run --rm --network none --entrypoint id "$SERVE_IMAGE" | grep -q 'uid=10001(dcgan)' \
        || die "$SERVE_IMAGE does not run as the non-root user dcgan"
    # onnxruntime's telemetry is off: an ORT environment leaves no device id behind.
    local image
    for image in "$SERVE_IMAGE" "$TRAIN_IMAGE"; do
        docker run --rm --network none --entrypoint sh "$image" -c '
            python -c "import onnxruntime as ort
try:
    ort.InferenceSession(b\"not a model\")
except Exception:
    pass" && test ! -e "$HOME/.cache/Microsoft"' || die "onnxruntime telemetry is on in $image"
    done
}

# A file listing of a named volume, read from a throwaway container (no host paths involved).
volume_files() {
    docker run --rm --network none --user 10001 --entrypoint find \
        -v "${E2E_PROJECT}_$1:/v:ro" "$TRAIN_IMAGE" /v \( -type f -o -type l \)
}

step_train() {
    compose_used=true
    resolve_compose_file
    # A fresh run: the volume from an earlier --keep run would make dcgan-train refuse.
    compose down --volumes --remove-orphans >&2 || true
    compose run --rm -T train "${TRAIN_ARGS[@]}" 2>&1 | tee "$LOG_DIR/train.log" >&2
    local files
    files="$(volume_files runs)"
    echo "$files" >&2
    grep -q '^/v/dcgan/checkpoints/latest.pt$' <<<"$files" || die "no checkpoint in the runs volume"
    grep -q '^/v/dcgan/samples/final.png$' <<<"$files" || die "no sample grid in the runs volume"
}

step_export() {
    compose_used=true
    resolve_compose_file
    compose run --rm -T export 2>&1 | tee "$LOG_DIR/export.log" >&2
    local files
    files="$(volume_files models)"
    echo "$files" >&2
    grep -q '^/v/dcgan/manifest.json$' <<<"$files" || die "no manifest.json in the models volume"
    grep -q '^/v/dcgan/generator_serving.onnx$' <<<"$files" || die "no generator_serving.onnx in the models volume"
}

# host_tool dcgan-client|dcgan-bench ARGS...: our client tools from the host, on 127.0.0.1: the
# project's venv if there is one, else the serving image on the host network.
host_tool() {
    local tool="$1"
    shift
    if [[ -x "$ROOT/.venv/bin/$tool" ]]; then
        "$ROOT/.venv/bin/$tool" "$@"
    else
        docker run --rm --network host -v "$LOG_DIR:$LOG_DIR" --user "$(id -u)" --entrypoint "$tool" \
            "$SERVE_IMAGE" "$@"
    fi
}
host_client() { host_tool dcgan-client "$@"; }

# wait_healthy CONTAINER...: until docker reports every one healthy. A replica may restart once
# or twice (see the port race in docker/compose.e2e.yml); one that keeps failing fails the test.
wait_healthy() {
    local deadline=$((SECONDS + HEALTH_TIMEOUT_S)) id state health restarts pending
    while :; do
        pending=0
        for id in "$@"; do
            state="$(docker inspect --format '{{.State.Status}}' "$id")"
            health="$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")"
            restarts="$(docker inspect --format '{{.RestartCount}}' "$id")"
            [[ "$state" == running || "$state" == restarting || "$state" == created ]] \
                || die "container $id is $state"
            ((restarts <= 3)) || die "container $id restarted $restarts times"
            [[ "$state" == running && "$health" == healthy ]] || pending=$((pending + 1))
        done
        ((pending == 0)) && return 0
        ((SECONDS < deadline)) || die "not healthy within ${HEALTH_TIMEOUT_S}s: $*"
        sleep 1
    done
}

# generate_calls PORT: Generate calls answered OK by the replica whose metrics are on PORT.
generate_calls() {
    python3 - "$1" <<'EOF'
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
print(sum(
    int(float(line.rsplit(" ", 1)[1]))
    for line in body.splitlines()
    if line.startswith("dcgan_requests_total{") and 'method="Generate"' in line and 'code="OK"' in line
))
EOF
}

# check_grid PNG N: a real image of N samples, not blank.
check_grid() {
    python3 - "$1" "$2" <<'EOF' || die "bad image grid $1"
import struct, sys, zlib
path, n = sys.argv[1], int(sys.argv[2])
data = open(path, "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
width, height = struct.unpack(">II", data[16:24])
# The pixel data, without PIL (the host may have no venv): concatenated IDAT chunks.
pos, idat = 8, b""
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    if kind == b"IDAT":
        idat += data[pos + 8:pos + 8 + length]
    pos += 12 + length
raw = zlib.decompress(idat)
assert len(set(raw)) > 8, "a blank or nearly blank image"
print(f"{path}: {width}x{height} PNG of {n} samples, {len(set(raw))} distinct byte values")
EOF
}

step_serve() {
    compose_used=true
    resolve_compose_file
    compose up -d serve >&2
    local id
    id="$(compose ps -q serve)"
    [[ -n "$id" ]] || die "no serve container"
    wait_healthy "$id"
    log "serve is healthy on 127.0.0.1:$E2E_PORT; calling it from the host"
    host_client --target "127.0.0.1:$E2E_PORT" health
    host_client --target "127.0.0.1:$E2E_PORT" info | tee "$LOG_DIR/info.json" >&2
    host_client --target "127.0.0.1:$E2E_PORT" generate -n 16 --seed 1 --out "$LOG_DIR/grid-a.png"
    host_client --target "127.0.0.1:$E2E_PORT" generate -n 16 --seed 1 --out "$LOG_DIR/grid-b.png"
    check_grid "$LOG_DIR/grid-a.png" 16
    cmp -s "$LOG_DIR/grid-a.png" "$LOG_DIR/grid-b.png" || die "the same seed gave different images"
    # The running serving container: no torch in it.
    if docker exec "$id" python -c "import torch" 2>/dev/null; then
        die "torch is importable inside the serving container"
    fi
    # Prometheus metrics on the configured port.
    python3 -c "import urllib.request; body = urllib.request.urlopen('http://127.0.0.1:$E2E_METRICS_PORT/metrics', timeout=5).read(); assert body, 'empty metrics'" \
        || die "no metrics on 127.0.0.1:$E2E_METRICS_PORT"
}

# Two replicas on two host ports: `--scale serve=2` with a port range (how each replica finds
# its own port: docker/compose.e2e.yml), both healthy, both answer with the same images, and one
# client spreads its calls over both with gRPC's round_robin.
step_scale() {
    compose_used=true
    local ids port before_a before_b after_a after_b
    export E2E_SERVE_PORTS="$E2E_PORT-$E2E_PORT2"
    log "scaling serve to 2 replicas on ports $E2E_SERVE_PORTS"
    resolve_compose_file
    # The environment changed: compose recreates the first replica with the range, too.
    compose up -d --scale serve=2 serve >&2
    mapfile -t ids < <(compose ps -q serve)
    ((${#ids[@]} == 2)) || die "expected 2 serve replicas, got ${#ids[@]}"
    wait_healthy "${ids[@]}"
    for port in "$E2E_PORT" "$E2E_PORT2"; do
        host_client --target "127.0.0.1:$port" health
        host_client --target "127.0.0.1:$port" generate -n 4 --seed 2 --out "$LOG_DIR/grid-$port.png"
        check_grid "$LOG_DIR/grid-$port.png" 4
    done
    cmp -s "$LOG_DIR/grid-$E2E_PORT.png" "$LOG_DIR/grid-$E2E_PORT2.png" || die "the replicas disagree"
    # One target naming both addresses: the client's round_robin must reach both replicas.
    before_a="$(generate_calls "$E2E_METRICS_PORT")"
    before_b="$(generate_calls "$E2E_METRICS_PORT2")"
    host_tool dcgan-bench --target "ipv4:127.0.0.1:$E2E_PORT,127.0.0.1:$E2E_PORT2" \
        --concurrency 4 --latents 4 --duration-s 2 --warmup-s 0 >"$LOG_DIR/bench-rr.txt" \
        || { cat "$LOG_DIR/bench-rr.txt" >&2; die "dcgan-bench over both replicas"; }
    after_a="$(generate_calls "$E2E_METRICS_PORT")"
    after_b="$(generate_calls "$E2E_METRICS_PORT2")"
    log "round robin: $((after_a - before_a)) calls on :$E2E_PORT, $((after_b - before_b)) on :$E2E_PORT2"
    ((after_a > before_a && after_b > before_b)) || die "round robin did not reach both replicas"
}

# ---------------------------------------------------------------------------- main

mkdir -p "$LOG_DIR"
log "steps: $steps (project $E2E_PROJECT, ports $E2E_PORT $E2E_PORT2 $E2E_METRICS_PORT $E2E_METRICS_PORT2)"
if wants serve || wants scale; then
    check_ports_free "$E2E_PORT" "$E2E_PORT2" "$E2E_METRICS_PORT" "$E2E_METRICS_PORT2"
fi
wants engine && run_step engine step_engine
wants base && run_step base step_base
wants wheels && run_step wheels step_wheels
wants build && run_step build step_build
wants train && run_step train step_train
wants export && run_step export step_export
wants serve && run_step serve step_serve
wants scale && run_step scale step_scale
exit 0
