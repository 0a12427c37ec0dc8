"""The demo's data steps (oracle labels, review, agreement), its arms and its generated table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lorafleet.adapters.training import demo_table
from lorafleet.adapters.training.demo import export_method, main, quant_flags
from lorafleet.adapters.training.demo_data import read_jsonl
from lorafleet.adapters.training.demo_score import (
    Arm,
    few_shot_messages,
    forget_arm,
    majority_answer,
    pick_shots,
    run_trivial,
    write_predictions,
)
from lorafleet.adapters.training.evaluation import Answer
from lorafleet.adapters.training.synthetic import generate


def records(n: int, split: str) -> list[dict[str, Any]]:
    return [example.to_record() for example in generate(n, split, seed=0)]


def test_data_label_and_verify_steps_train_on_what_the_labeller_answered(tmp_path: Path) -> None:
    argv = ["--workdir", str(tmp_path), "--train-examples", "6", "--valid-examples", "2",
            "--test-examples", "2", "--verify-fraction", "0.5", "--until", "verify"]  # fmt: skip
    assert main(argv) == 0
    assert len(list((tmp_path / "raw").glob("*.txt"))) == 6
    truth = read_jsonl(tmp_path / "data" / "train.jsonl")
    labels = read_jsonl(tmp_path / "labels" / "labels.jsonl")
    assert [r["messages"] for r in labels] == [r["messages"] for r in truth]
    assert {r["meta"]["labeller"] for r in labels} == {"synthetic-ground-truth"}
    assert json.loads((tmp_path / "labels" / "agreement.json").read_text())["good_enough"]
    assert set(json.loads((tmp_path / "timings.json").read_text())) == {"data", "label", "verify"}


def test_few_shot_prompt_puts_worked_examples_between_instruction_and_document() -> None:
    train = records(40, "train")
    shots = pick_shots(train, 3)
    initiators = {json.loads(s["messages"][-1]["content"])["initiator"] for s in shots}
    assert len(shots) == 3 and initiators == {"claimant", "defendant"}
    question = records(1, "test")[0]["messages"][:2]
    messages = few_shot_messages(shots, question)
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert messages[0] == question[0] and messages[-1] == question[1]
    assert messages[2]["content"] == shots[0]["messages"][2]["content"]
    assert pick_shots(train, 0) == []


def test_majority_answer_and_response_format() -> None:
    answer = json.loads(majority_answer(records(60, "train")))
    assert answer["initiator"] == "claimant"  # half first instance, half appeals by either side
    assert set(answer) == {"dispute_subject", "outcome", "initiator"}
    assert Arm("b", "m", "plain").response_format() is None
    constrained = Arm("b", "m", "schema", json_schema=True).response_format()
    assert constrained is not None and constrained["type"] == "json_schema"
    assert constrained["json_schema"]["schema"]["required"][0] == "claimant"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    test = records(4, "test")
    with (tmp_path / "test.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in test)
    run_trivial(tmp_path, Arm("majority", None, "most common"), test, '{"initiator": "claimant"}')
    run_trivial(tmp_path, Arm("empty", None, "nothing"), test, "")
    golds = [r["messages"][-1]["content"] for r in test]
    answers = [Answer(text=g, latency_s=1.0, completion_tokens=40) for g in golds[:3]]
    answers.append(Answer(error="APITimeoutError: timed out"))
    adapter = Arm("adapter", "court-demo@1", "the adapter")
    write_predictions(tmp_path, adapter, test, answers)
    (tmp_path / "arms.json").write_text(json.dumps(
        [*json.loads((tmp_path / "arms.json").read_text()), {**adapter.__dict__}]))  # fmt: skip
    return tmp_path


def test_table_is_scored_from_the_raw_files(results: Path) -> None:
    text = demo_table.write(results)
    lines = text.splitlines()
    assert lines[0].startswith("| arm | model, how asked | JSON valid | claim_amount F1 |")
    assert [line.split(" | ")[0] for line in lines[2:5]] == ["| `empty`", "| `majority`",
                                                             "| `adapter`"]  # fmt: skip
    adapter = lines[4]
    assert "| 0.75 | 0.86 |" in adapter  # 3 of 4 valid; amount F1 = 2*1*0.75/1.75
    assert adapter.endswith("| 1 | 1.0 | [predictions-adapter.jsonl](predictions-adapter.jsonl) |")
    scores = json.loads((results / "scores.json").read_text())
    assert scores["empty"]["json_valid_rate"] == 0.0
    assert scores["majority"]["fields"]["initiator"]["accuracy"] == pytest.approx(
        scores["majority"]["initiator_accuracy"]
    )
    assert "### Claim amount by test template (adapter)" in text


def test_check_says_when_the_table_no_longer_matches_the_raw_files(results: Path) -> None:
    demo_table.write(results)
    assert demo_table.main([str(results), "--check"]) == 0
    rows = read_jsonl(results / "predictions-adapter.jsonl")
    rows[0]["answer"] = "changed"
    (results / "predictions-adapter.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )
    assert demo_table.main([str(results), "--check"]) == 1


def test_predictions_that_do_not_match_the_test_split_are_refused(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = read_jsonl(results / "predictions-empty.jsonl")[:-1]
    (results / "predictions-empty.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert demo_table.main([str(results)]) == 1
    assert "3 predictions for 4 test documents" in capsys.readouterr().err


def test_serving_facts_add_columns(results: Path) -> None:
    serving = {"adapter": {"size_bytes": 540_000_000, "rss_bytes": 2**30, "tok_s_c1": 9.5,
                           "tok_s_c32": 81.25}}  # fmt: skip
    (results / demo_table.SERVING_FILE).write_text(json.dumps(serving))
    lines = demo_table.write(results).splitlines()
    assert "| size on disk | served RSS | tok/s c=1 | tok/s c=32 | raw |" in lines[0]
    assert "| 540 MB | 1024 MiB | 9.5 | 81.2 |" in lines[4]
    assert "| n/a | n/a | n/a | n/a |" in lines[2]


def test_an_export_the_machine_could_not_serve_is_listed_with_its_reason(results: Path) -> None:
    reason = "lorafleet serve: court-w4a16 (/x) has 4-bit weights, and ... cpu_gemm_wna16 ..."
    write_predictions(results, Arm("w4a16", "court-w4a16", "an earlier run's"),
                      records(4, "test"), [Answer(text="{}")] * 4)  # fmt: skip
    forget_arm(results, "w4a16")  # this run could not serve it: no row, no stale predictions
    assert not (results / "predictions-w4a16.jsonl").exists()
    serving = {"w4a16": {"not_served": reason, "size_bytes": 176_713_357}}
    (results / demo_table.SERVING_FILE).write_text(json.dumps(serving))
    text = demo_table.write(results)
    assert "| `w4a16`" not in text
    assert (
        f"Not served on this machine, so not scored:\n\n- `w4a16` (177 MB on disk): {reason}"
        in text
    )
    assert [a["name"] for a in json.loads((results / "arms.json").read_text())] == [
        "empty", "majority", "adapter"]  # fmt: skip


@pytest.mark.parametrize(
    ("fmt", "calibrated", "expected"),
    [
        ("w8a8", False, []),  # data-free: round-to-nearest with the lock's compressed-tensors
        ("w4a16", False, []),
        ("w8a8", True, ["--calibration", "train.jsonl", "--calibration-samples", "8"]),
        ("w4a16", True, ["--calibration", "train.jsonl", "--calibration-samples", "8", "--gptq"]),
    ],
)
def test_quantised_exports_calibrate_only_where_llmcompressor_is_found(
    fmt: str, calibrated: bool, expected: list[str]
) -> None:
    assert quant_flags(fmt, calibrated, Path("train.jsonl"), 8) == expected


def test_a_served_export_says_how_it_was_quantised(tmp_path: Path) -> None:
    assert export_method(tmp_path) == ""  # the fp32 merge has no export manifest
    method = "compressed-tensors (data-free) round-to-nearest, scheme W4A16: groups of 64"
    (tmp_path / "lorafleet-export.json").write_text(json.dumps({"method": method}))
    assert export_method(tmp_path) == f"; {method}"


COMMITTED_DEMOS = sorted(Path(__file__).parents[3].glob("benchmarks/results/**/*demo/table.md"))


@pytest.mark.parametrize("table", COMMITTED_DEMOS, ids=lambda p: p.parent.name)
def test_committed_demo_tables_are_generated_from_their_raw_predictions(table: Path) -> None:
    """docs/finetune-demo.md quotes these tables: each must be what its raw files score to."""
    assert demo_table.main([str(table.parent), "--check"]) == 0


def test_committed_demo_results_are_found() -> None:
    assert len(COMMITTED_DEMOS) >= 1
