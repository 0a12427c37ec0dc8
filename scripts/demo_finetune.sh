#!/usr/bin/env bash
# Fine-tuning demo (make demo-finetune), end to end: synthetic raw documents -> lorafleet label
# (a ground-truth oracle stands in for a strong labelling model) -> review sample + label
# agreement -> lorafleet train (CPU LoRA) -> merge -> export (GGUF; w8a8 and w4a16, calibrated
# where llmcompressor is found) -> lorafleet serve -> every arm scored through the OpenAI API ->
# raw predictions, table and report.md in $DEMO_RESULTS (docs/finetune-demo.md discusses them).
#
#   scripts/demo_finetune.sh                           # the whole path (~30 min of training)
#   DEMO_FROM=score scripts/demo_finetune.sh           # later steps again on runs/demo-finetune
#   LORAFLEET_QUANT_PATH=.venv/quant scripts/demo_finetune.sh   # llmcompressor: make quant-tools
#
# Training stops after DEMO_MAX_MINUTES (default 30) even if its step budget is not spent;
# DEMO_THREADS=1 is faster when other processes keep the cores busy.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
args=(--workdir "${DEMO_WORKDIR:-runs/demo-finetune}"
      --results "${DEMO_RESULTS:-runs/demo-finetune/results}"
      --max-minutes "${DEMO_MAX_MINUTES:-30}" --from "${DEMO_FROM:-data}")
if [ -n "${DEMO_THREADS:-}" ]; then
  args+=(--threads "$DEMO_THREADS")
fi
exec "$python" -m lorafleet.adapters.training.demo "${args[@]}" "$@"
