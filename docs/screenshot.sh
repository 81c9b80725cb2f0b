#!/usr/bin/env bash
# Takes docs/tensorboard.png: a real TensorBoard page on LOG_DIR, rendered by headless Chromium.
# Usage: [PAGE='#images&tagFilter=grad_rollout'] bash docs/screenshot.sh LOG_DIR [OUT.png]
# (needs Debian's chromium: apt-get install chromium)
set -euo pipefail
log_dir=${1:?usage: docs/screenshot.sh LOG_DIR [OUT.png]}
out=${2:-docs/tensorboard.png}
port=6123
.venv/bin/tensorboard --logdir "$log_dir" --host 127.0.0.1 --port "$port" --samples_per_plugin images=100 \
  >/tmp/tensorboard.log 2>&1 &
tb=$!
trap 'kill $tb' EXIT
for _ in $(seq 60); do
  curl -sf "http://127.0.0.1:$port/data/plugin/images/tags" >/dev/null && break
  sleep 1
done
profile=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars --run-all-compositor-stages-before-draw \
  --window-size=1600,1400 ${WAIT_FLAG:---virtual-time-budget=30000} --screenshot="$out" \
  "http://127.0.0.1:$port/${PAGE:-#timeseries}"
echo "wrote $out"
