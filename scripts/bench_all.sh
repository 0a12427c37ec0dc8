#!/usr/bin/env bash
# Run the benchmark scenarios into benchmarks/results/$DATE-cpu/, sharing one bare vLLM engine
# between the scenarios that take --target engine=... (saves an engine start-up each), then
# rebuild the results index. Each scenario's own command is recorded in its summary.md.
#   scripts/bench_all.sh [scenario ...]      (default: all, in the order below)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${OUT:-benchmarks/results/$(date -u +%F)-cpu}
SEED=${SEED:-20261128}
PORT=${ENGINE_PORT:-8300}
MODEL_DIR=$($BIN/lorafleet model fetch | tail -1)
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(gateway-overhead lora-overhead adapter-cold-start sweep cost vllm-vs-transformers)
mkdir -p "$OUT"

ENGINE=http://127.0.0.1:$PORT
ENGINE_PID=
trap '[ -z "$ENGINE_PID" ] || { kill $ENGINE_PID 2>/dev/null; wait $ENGINE_PID 2>/dev/null; } || true' EXIT
# The shared engine starts with the first scenario that uses it (lora-overhead and
# adapter-cold-start start their own).
engine() {
  if [ -z "$ENGINE_PID" ]; then
    VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_CPU_KVCACHE_SPACE=2 \
      $BIN/python -m vllm.entrypoints.openai.api_server --model "$MODEL_DIR" \
      --served-model-name smollm2-135m-instruct --dtype float32 --max-model-len 2048 \
      --host 127.0.0.1 --port "$PORT" --disable-uvicorn-access-log >"$OUT/shared-engine.log" 2>&1 &
    ENGINE_PID=$!
    until curl -sf "$ENGINE/health" >/dev/null; do
      kill -0 $ENGINE_PID || { echo "shared engine died: $OUT/shared-engine.log"; exit 1; }
      sleep 2
    done
  fi
}

run() { echo "== $1 ($(date -u +%T))"; $BIN/lorafleet bench "$@" --seed "$SEED" --no-progress --out "$OUT/$1"; }
for s in "${SCENARIOS[@]}"; do
  case $s in
    gateway-overhead) engine; run gateway-overhead --target engine=$ENGINE ;;
    lora-overhead) run lora-overhead --via engine --compare-upstream-ops --adapter-counts 1,8 \
                     --requests 32 --output-len 32 ;;
    adapter-cold-start) run adapter-cold-start ;;
    sweep) engine; run sweep --target engine=$ENGINE --requests-per-slot 2 --output-len 32 ;;
    cost) engine; run cost --target engine=$ENGINE --requests 64 --input-len 48 --output-len 32 ;;
    vllm-vs-transformers) engine; run vllm-vs-transformers --target engine=$ENGINE --vllm-requests 64 \
                     --output-len 16 --hf-requests 6 --mixed-requests 32 --mixed-output-len 24 \
                     --mixed-range-ratio 0.5 ;;
    *) echo "unknown scenario $s"; exit 2 ;;
  esac
done
rm -f "$OUT/shared-engine.log"
INTRO=()
[ -f "$OUT/INTRO.md" ] && INTRO=(--intro "$OUT/INTRO.md")
$BIN/lorafleet bench readme benchmarks/results "${INTRO[@]}"
