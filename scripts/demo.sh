#!/usr/bin/env bash
# The main job on the bundled sample corpus, from a fresh machine:
# curate -> start the service -> build a 3-phase mixture through it -> train a tiny model on it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate

DATA=${MIDMIX_DATA_DIR:-$PWD/midmix-data}
PORT=${MIDMIX_DEMO_PORT:-8765}
URL="http://127.0.0.1:$PORT"
export MIDMIX_DATA_DIR="$DATA"

echo "== 1/4 curate the bundled sample corpus"
midmix curate data/sample-corpus/corpus.jsonl.gz --out "$DATA"

echo "== 2/4 start the service on $URL"
midmix serve --host 127.0.0.1 --port "$PORT" --data-dir "$DATA" > "$DATA/service.log" 2>&1 &
SERVICE_PID=$!
trap 'kill $SERVICE_PID 2>/dev/null || true' EXIT
python - "$URL" <<'PY'
import sys, time, httpx
for _ in range(120):
    try:
        if httpx.get(sys.argv[1] + "/health", timeout=1).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    time.sleep(0.5)
else:
    sys.exit(f"the service at {sys.argv[1]} did not come up; see the service log in the data directory (service.log)")
PY

echo "== 3/4 plan and build the 3-phase mixture through the service"
midmix remote plan examples/demo-mixture.yaml --url "$URL"
VERSION=$(midmix remote build examples/demo-mixture.yaml --url "$URL" --wait --print-version)
midmix remote show "$VERSION" --url "$URL"

echo "== 4/4 train a tiny model on it (CPU, a few minutes)"
midmix train examples/train-demo.yaml --url "$URL" --mixture "$VERSION" --out "$DATA/runs/$VERSION"
echo "metrics: $DATA/runs/$VERSION/metrics.jsonl  plot: $DATA/runs/$VERSION/training.png"
