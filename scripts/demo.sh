#!/usr/bin/env bash
# The main job on the embedded default data set (scikit-learn's 1,797 handwritten digits):
# train a digits classifier (the yardstick), train briefly with the generator scored every few
# epochs, export with parity checks, serve, generate a grid through the client, stop, and print
# the generator's quality. Leaves runs/demo-classifier.pt, runs/demo (checkpoints and best.pt,
# sample grids, metrics, loss.png, quality.png), exports/demo and runs/demo/served-grid.png.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

run=runs/demo
export_dir=exports/demo
classifier=runs/demo-classifier.pt
rm -rf "$run" "$export_dir" "$classifier"  # the demo's own outputs: each demo run starts afresh

dcgan-eval train-classifier --dataset digits --epochs 5 --out "$classifier"
dcgan-train --out "$run" --image-size 32 --batch-size 64 --epochs 20 --log-every 70 \
    --eval-every 5 --eval-classifier "$classifier"
dcgan-export "$run" --out "$export_dir"

port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target="127.0.0.1:$port"
dcgan-serve --model-dir "$export_dir" --host 127.0.0.1 --port "$port" --metrics-port 0 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
    dcgan-client --target "$target" --timeout-s 1 health >/dev/null 2>&1 && break
    kill -0 "$server" || { echo "dcgan-serve exited" >&2; exit 1; }
    sleep 0.1
done
dcgan-client --target "$target" health
dcgan-client --target "$target" generate -n 64 --seed 1 --out "$run/served-grid.png"
dcgan-client --target "$target" info
kill -TERM "$server"
wait "$server"
trap - EXIT
echo "demo done: $run/samples/final.png (training), $run/served-grid.png (served), $export_dir/manifest.json"
echo "quality: $(dcgan-train inspect "$run" | sed -n 's/^quality *//p')  (FID in the digits classifier's features; lower is better)"
