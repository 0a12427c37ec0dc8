#!/usr/bin/env bash
# Fine-tuning demo (make demo-finetune): synthetic court decisions -> LoRA on CPU -> publish to
# the gateway -> base vs adapter evaluation -> docs/finetune-demo.md.
#
#   scripts/demo_finetune.sh [GATEWAY_URL]          # default $LORAFLEET_URL or http://127.0.0.1:8000
#   DEMO_STANDALONE=1 scripts/demo_finetune.sh      # no gateway: evaluate on a bare vLLM engine
#
# The adapter is written under $DEMO_WORKDIR (default ./runs/demo-finetune, git-ignored). To publish, that
# directory must be under one of the gateway's allowed roots (LORAFLEET_ADAPTER_ROOTS), e.g.
#   LORAFLEET_ADAPTER_ROOTS=$PWD/runs/demo-finetune make serve
# Training stops after DEMO_MAX_MINUTES (default 30) even if its step budget is not spent.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
gateway="${1:-${LORAFLEET_URL:-http://127.0.0.1:8000}}"
args=(--gateway "$gateway" --workdir "${DEMO_WORKDIR:-runs/demo-finetune}"
      --max-minutes "${DEMO_MAX_MINUTES:-30}")
if [ "${DEMO_STANDALONE:-0}" = 1 ]; then
  args+=(--standalone)
fi
if [ -n "${DEMO_THREADS:-}" ]; then
  args+=(--threads "$DEMO_THREADS")   # 1 beats 2 when other processes keep the cores busy
fi
if [ "${DEMO_SKIP_TRAIN:-0}" = 1 ]; then
  args+=(--skip-train)
fi
exec "$python" -m lorafleet.adapters.training.demo "${args[@]}"
