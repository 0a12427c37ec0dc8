# Russian party names are the point of the task: Cyrillic letters are not look-alike typos.
# ruff: noqa: RUF001
"""`lorafleet label agreement` on a hand-corrected review sample with hand-computed scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from lorafleet.adapters.training.agreement import agreement_report
from lorafleet.adapters.training.label_data import (
    Document,
    LabelError,
    read_labels,
    read_review,
    training_record,
    write_jsonl,
    write_review,
)
from lorafleet.cli import main


def label(n: int, **changes: Any) -> dict[str, Any]:
    base = {
        "claimant": f"ООО «Альфа-{n}»", "defendant": f"АО Бета-{n}",
        "dispute_subject": "lease", "claim_amount": 1_000_000 * (n + 1),
        "outcome": "dismissed", "initiator": "claimant",
    }  # fmt: skip
    return base | changes


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """Four model labels in labels.jsonl, and all four written to review.csv."""
    records = [
        training_record(Document(f"doc{n}", f"decision {n}"), label(n), "m") for n in range(4)
    ]
    write_jsonl(tmp_path / "labels.jsonl", records)
    write_review(tmp_path / "review.csv", records)
    return tmp_path


def correct(path: Path, fixes: dict[str, dict[str, str]]) -> None:
    """What a reviewer does in a spreadsheet: overwrite some cells, save."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.update(fixes.get(row["id"], {}))
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# doc0 untouched; doc1: the amount was wrong; doc2: the initiator was wrong, and the defendant
# retyped in another case (the same name); doc3: the document states no principal sum.
FIXES = {
    "doc1": {"claim_amount": "2 500 000"},
    "doc2": {"initiator": "defendant", "defendant": "ао бета-2"},
    "doc3": {"claim_amount": ""},
}


def test_agreement_per_field_and_amount_f1(labelled: Path) -> None:
    correct(labelled / "review.csv", FIXES)
    report = agreement_report(
        read_labels(labelled / "labels.jsonl"), read_review(labelled / "review.csv"), 0.6
    )
    assert report["reviewed"] == 4
    assert report["field_agreement"] == {
        "claimant": 1.0, "defendant": 1.0, "dispute_subject": 1.0,
        "claim_amount": 0.5, "outcome": 1.0, "initiator": 0.75,
    }  # fmt: skip
    # amount: right on doc0 and doc2 (tp 2); a wrong value on doc1 (fp + fn) and a value where
    # there is none on doc3 (fp): precision 2/4, recall 2/3, F1 = 2 * 0.5 * 2/3 / (0.5 + 2/3)
    assert report["claim_amount"] == {"precision": 0.5, "recall": 0.6667, "f1": 0.5714}
    assert report["all_fields_agree"] == 0.25  # doc0 only
    assert report["weakest_field"] == "claim_amount" and report["good_enough"] is False
    assert {(d["id"], d["field"]) for d in report["disagreements"]} == {
        ("doc1", "claim_amount"),
        ("doc2", "initiator"),
        ("doc3", "claim_amount"),
    }


def test_cli_verdict_follows_the_threshold(
    labelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    correct(labelled / "review.csv", FIXES)
    args = ["label", "agreement", "--labels", str(labelled / "labels.jsonl"),
            "--review", str(labelled / "review.csv")]  # fmt: skip
    assert main([*args, "--threshold", "0.5", "--output", str(labelled / "a.json")]) == 0
    assert "good enough to train on" in capsys.readouterr().out
    assert json.loads((labelled / "a.json").read_text())["good_enough"] is True
    assert main([*args, "--threshold", "0.6"]) == 1
    assert "NOT good enough" in capsys.readouterr().out


def test_an_untouched_sample_agrees_fully(labelled: Path) -> None:
    report = agreement_report(
        read_labels(labelled / "labels.jsonl"), read_review(labelled / "review.csv"), 1.0
    )
    assert set(report["field_agreement"].values()) == {1.0}
    assert report["claim_amount"]["f1"] == 1.0 and report["good_enough"] is True


def test_a_csv_saved_with_a_byte_order_mark_reads(labelled: Path) -> None:
    path = labelled / "review.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as spreadsheets save "CSV UTF-8"
    assert sorted(read_review(path)) == ["doc0", "doc1", "doc2", "doc3"]


def test_jsonl_review_round_trips(tmp_path: Path) -> None:
    record = training_record(Document("a", "text"), label(0), "m")
    write_review(tmp_path / "review.jsonl", [record])
    row = json.loads((tmp_path / "review.jsonl").read_text())
    assert row["id"] == "a" and row["document"] == "text"
    assert read_review(tmp_path / "review.jsonl") == {"a": label(0)}


def test_refuses_a_bad_amount_or_an_unknown_id(labelled: Path) -> None:
    labels = read_labels(labelled / "labels.jsonl")
    with pytest.raises(LabelError, match="not a number"):
        agreement_report(labels, {"doc0": label(0, claim_amount="about a million")}, 0.9)
    with pytest.raises(LabelError, match="no model label: ghost"):
        agreement_report(labels, {"ghost": label(0)}, 0.9)
