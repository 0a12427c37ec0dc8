"""`make demo-finetune` at toy size: raw documents -> label (oracle) -> verify -> train (two
steps) -> merge -> export (GGUF) -> serve (`lorafleet serve`, the base model with the adapter,
the merged model as a base model, the GGUF on llama.cpp's server behind the gateway) -> score
every arm through the OpenAI API -> table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorafleet.adapters.training import demo_table
from lorafleet.adapters.training.demo import main

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end_at_toy_size(tmp_path: Path) -> None:
    work, results = tmp_path / "work", tmp_path / "results"
    argv = [
        "--workdir", str(work), "--results", str(results),
        "--train-examples", "16", "--valid-examples", "2", "--test-examples", "3",
        "--max-steps", "2", "--batch-size", "1", "--grad-accum", "1", "--threads", "2",
        "--export", "gguf", "--gguf-quant", "q8_0", "--max-tokens", "160", "--shots", "1",
        "--speed-requests", "1",
    ]  # fmt: skip
    assert main(argv) == 0

    assert (work / "exports" / "gguf" / "court-merged-q8_0.gguf").is_file()
    arms = [a["name"] for a in json.loads((results / "arms.json").read_text())]
    assert arms == [
        "empty", "majority", "base", "base-fewshot-schema", "adapter", "merged", "gguf-q8_0",
    ]  # fmt: skip
    adapter = json.loads((results / "arms.json").read_text())[4]
    assert adapter["model"] == "court-demo@1"  # registered on the gateway, pinned
    for arm in arms:
        rows = (results / f"predictions-{arm}.jsonl").read_text().splitlines()
        assert len(rows) == 3 and all(json.loads(r)["error"] is None for r in rows)
    # vLLM enforced the schema through the gateway: every constrained answer is valid JSON
    scores = json.loads((results / "scores.json").read_text())
    assert scores["base-fewshot-schema"]["json_valid_rate"] == 1.0
    serving = json.loads((results / demo_table.SERVING_FILE).read_text())
    assert serving["merged"]["rss_bytes"] > 100 * 2**20 and serving["merged"]["tok_s_c1"] > 0
    # the GGUF export answered through llama.cpp's server behind the gateway
    gguf = serving["gguf-q8_0"]
    assert gguf["rss_bytes"] > 100 * 2**20 and gguf["tok_s_c1"] > 0
    assert (
        gguf["size_bytes"] == (work / "exports" / "gguf" / "court-merged-q8_0.gguf").stat().st_size
    )
    assert demo_table.main([str(results), "--check"]) == 0
    text = (results / "report.md").read_text()  # the run's report sits beside its data
    assert "| `merged` |" in text and "predictions-merged.jsonl" in text
    # the manifests behind the table are kept beside it
    kept = sorted(p.name for p in (results / "provenance").iterdir())
    assert kept == [
        "export-gguf.json", "label-agreement.json", "label-report.json",
        "merge-manifest.json", "step-timings.json", "training-manifest.json",
    ]  # fmt: skip
    timings = json.loads((results / "provenance" / "step-timings.json").read_text())
    assert set(timings) >= {"train", "export", "score"}
