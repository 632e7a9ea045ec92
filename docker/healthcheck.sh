#!/bin/sh
# Container health check of the serving image: healthy only when this replica answers SERVING.
#
# Target: $DCGAN_HEALTH_TARGET if set; else 127.0.0.1 on the port this replica bound, read from
# $DCGAN_PORT_FILE when the server writes one (replicas that pick their port from a range on the
# host network), else $DCGAN_PORT, else 50051 (the server's default: the image sets no port).
# 127.0.0.1 works on a bridge network (the container's own loopback) and on the host network
# (the replica's own port) alike.
set -eu
port="${DCGAN_PORT:-50051}"
port="${port%%-*}"  # a range A-B: its first port, until the server has written the one it bound
if [ -n "${DCGAN_PORT_FILE:-}" ] && [ -s "${DCGAN_PORT_FILE}" ]; then
    port="$(cat "${DCGAN_PORT_FILE}")"
fi
DCGAN_TIMEOUT_S="${DCGAN_HEALTH_TIMEOUT_S:-3}" exec dcgan-client \
    --target "${DCGAN_HEALTH_TARGET:-127.0.0.1:${port}}" health
