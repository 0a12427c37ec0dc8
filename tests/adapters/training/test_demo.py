"""The demo report: rendered from a manifest and two eval reports, re-rendered from saved files."""

from __future__ import annotations

import json
from pathlib import Path

from lorafleet.adapters.manifest import (
    BaseModelRef,
    DatasetRef,
    Hardware,
    TrainingManifest,
    TrainingMetrics,
    write_manifest,
)
from lorafleet.adapters.training.demo import ADAPTER_NAME, main
from lorafleet.adapters.training.metrics import score


def _manifest() -> TrainingManifest:
    return TrainingManifest(
        created_at="2026-01-01T00:00:00+00:00",
        base_model=BaseModelRef("smollm2-135m-instruct", "/m", "sha256:" + "a" * 64),
        dataset=DatasetRef("/d.jsonl", "sha256:" + "b" * 64, examples=1200, bytes=10),
        config={
            "lora_r": 16,
            "lora_alpha": 32,
            "learning_rate": 0.001,
            "lr_scheduler": "constant",
            "batch_size": 2,
            "grad_accum": 2,
            "max_steps": 300,
            "max_minutes": 30.0,
        },
        libraries={"trl": "1.16.0"},
        git_revision="abc",
        metrics=TrainingMetrics(30, 0.1, 0.2, 0.15, 1800.0, 60.0, 30.0, 54000),
        hardware=Hardware("cpu", "CPU test", "fp32", None, False, 2, 1),
        adapter={"target_modules": ["q_proj", "v_proj"]},
    )


def _report(model: str, answer: str) -> dict[str, object]:
    gold = {"claim_amount": 1000, "initiator": "claimant"}
    report = score([gold], [answer])
    report.update(
        model=model, target="http://127.0.0.1:8199", errors=0,
        latency_s={"p50": 1.0, "p95": 2.0}, tokens={"completion_mean": 30.0},
    )  # fmt: skip
    return report


def test_render_only_from_saved_eval_files(tmp_path: Path) -> None:
    adapter = tmp_path / "adapters" / ADAPTER_NAME
    adapter.mkdir(parents=True)
    write_manifest(adapter, _manifest())
    base = _report("smollm2-135m-instruct", "I think the court...")
    tuned = _report(ADAPTER_NAME, '{"claim_amount": 1000, "initiator": "claimant"}')
    (tmp_path / "eval-smollm2-135m-instruct.json").write_text(json.dumps(base))
    (tmp_path / f"eval-{ADAPTER_NAME}.json").write_text(json.dumps(tuned))
    out = tmp_path / "finetune-demo.md"

    assert main(["--render-only", "--workdir", str(tmp_path), "--report", str(out)]) == 0
    text = out.read_text()
    assert "**The data is synthetic**" in text
    assert "| metric | `smollm2-135m-instruct` | `court-demo` |" in text
    assert "| claim_amount F1 | 0.000 | 1.000 |" in text
    assert "Claim-amount F1: 0.000 (base) -> 1.000 (adapter), +1.000." in text
    assert "Initiator accuracy: 0% -> 100%." in text
    assert "| machine | CPU test, 2 cores," in text
    assert "| steps | 30 (0.1 epochs; budget 300 steps or 30.0 min) |" in text
    assert "60.0 s/step, 30.0 tokens/s" in text
    assert "bare vLLM" in text
