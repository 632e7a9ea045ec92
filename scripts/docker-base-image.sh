#!/usr/bin/env bash
# Build (or reuse) a local Debian bookworm base image with Python 3.11, for machines that reach
# package registries but no container registry, so `FROM python:3.11-slim` cannot be pulled.
#
#   bash scripts/docker-base-image.sh [--rebuild]      # prints the image name on stdout
#
# Order of reuse: the image if the engine has it; else the rootfs tarball cached under
# .cache/docker/ (docker import only, seconds); else debootstrap from deb.debian.org (about a
# minute) and cache the tarball. The image carries python3, python3-venv, python3-pip (Debian's,
# so PEP 668 applies: the Dockerfiles install into a venv) and this machine's CA bundle, so that
# pip inside a build can reach the package registry through whatever TLS the machine sees.
#
# Environment: DCGAN_BASE_IMAGE (default dcgan-base:bookworm-py311), DEBIAN_MIRROR.
set -euo pipefail

_base_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DCGAN_BASE_IMAGE="${DCGAN_BASE_IMAGE:-dcgan-base:bookworm-py311}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_CACHE_DIR="${BASE_CACHE_DIR:-$_base_root/.cache/docker}"
BASE_ROOTFS_TAR="$BASE_CACHE_DIR/base-bookworm-py311.rootfs.tar"
HOST_CA_BUNDLE="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
# passwd: useradd for the images' non-root user (minbase leaves it out).
BASE_PACKAGES="python3,python3-venv,python3-pip,ca-certificates,passwd"

base_log() { printf '[docker-base %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# Where to unpack the rootfs: tmpfs when there is one, since debootstrap's many small writes and
# fsyncs are more than twice as slow on the CI disk (measured: 45 s on /dev/shm, 107 s on ext4).
rootfs_scratch_dir() {
    if [[ -d /dev/shm && -w /dev/shm ]] && (($(df -Pk /dev/shm | awk 'NR==2 {print $4}') > 1048576)); then
        echo /dev/shm
    else
        echo "${TMPDIR:-/tmp}"
    fi
}

# debootstrap a minimal bookworm into a scratch directory and tar it into $BASE_ROOTFS_TAR.
# A subshell, so that its EXIT trap removes the scratch rootfs however it ends.
debootstrap_rootfs() (
    rootfs="$(mktemp -d "$(rootfs_scratch_dir)/dcgan-rootfs.XXXXXX")"
    trap 'rm -rf "$rootfs"' EXIT
    base_log "debootstrap bookworm (minbase + $BASE_PACKAGES) from $DEBIAN_MIRROR"
    if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$BASE_CACHE_DIR/debootstrap.log" 2>&1; then
        base_log "debootstrap failed; the end of its log:"
        tail -n 30 "$BASE_CACHE_DIR/debootstrap.log" >&2
        tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2 2>/dev/null || true
        return 1
    fi
    # The machine's CA bundle (it may hold a TLS-inspecting proxy's CA that Debian's lacks).
    install -m 0644 "$HOST_CA_BUNDLE" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    # Slim it: package caches, lists, docs, man pages and locales are dead weight in an image.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
    # Keep docs from coming back if a Dockerfile ever runs apt-get on this base.
    mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
    printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n' \
        >"$rootfs/etc/dpkg/dpkg.cfg.d/01-nodoc"
    printf 'deb %s bookworm main\n' "$DEBIAN_MIRROR" >"$rootfs/etc/apt/sources.list"
    # Resolution at build and run time comes from the engine; a stale host file must not ship.
    : >"$rootfs/etc/resolv.conf"
    local tmp_tar="$BASE_ROOTFS_TAR.partial"
    tar --numeric-owner --xattrs -C "$rootfs" -cf "$tmp_tar" .
    mv "$tmp_tar" "$BASE_ROOTFS_TAR"
    base_log "rootfs cached: $BASE_ROOTFS_TAR ($(du -h "$BASE_ROOTFS_TAR" | cut -f1))"
)

# docker import the cached tarball, with the environment a python image would set.
import_base_image() {
    base_log "docker import $BASE_ROOTFS_TAR as $DCGAN_BASE_IMAGE"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["python3"]' \
        --message "debootstrap bookworm minbase + python3 (scripts/docker-base-image.sh)" \
        "$BASE_ROOTFS_TAR" "$DCGAN_BASE_IMAGE" >/dev/null
}

ensure_base_image() {
    local rebuild="${1:-}"
    mkdir -p "$BASE_CACHE_DIR"
    if [[ "$rebuild" == "--rebuild" ]]; then
        rm -f "$BASE_ROOTFS_TAR"
        docker image rm -f "$DCGAN_BASE_IMAGE" >/dev/null 2>&1 || true
    fi
    if docker image inspect "$DCGAN_BASE_IMAGE" >/dev/null 2>&1; then
        base_log "reusing image $DCGAN_BASE_IMAGE"
    else
        [[ -s "$BASE_ROOTFS_TAR" ]] || debootstrap_rootfs
        import_base_image
    fi
    # A quick proof that the image is what the Dockerfiles expect.
    docker run --rm --network none "$DCGAN_BASE_IMAGE" python3 -c 'import ensurepip, venv, sys; assert sys.version_info[:2] == (3, 11), sys.version' \
        || { base_log "$DCGAN_BASE_IMAGE lacks python3.11 with venv"; return 1; }
    echo "$DCGAN_BASE_IMAGE"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    ensure_base_image "${1:-}"
fi
