"""Documents in, review samples out: `label_data`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorafleet.adapters.training.label_data import (
    Document,
    LabelError,
    load_documents,
    review_sample,
)


def test_a_folder_gives_one_document_per_text_file(tmp_path: Path) -> None:
    (tmp_path / "2024").mkdir()
    (tmp_path / "2024" / "b.txt").write_text("  second  \n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not a document", encoding="utf-8")
    docs = load_documents(tmp_path)
    assert [(d.id, d.text) for d in docs] == [("2024/b.txt", "second"), ("a.txt", "first")]


def test_a_jsonl_field_with_ids_or_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    rows = [{"id": 7, "body": "seven"}, {"body": "no id"}, {"body": ""}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs = load_documents(path, field="body")
    assert [(d.id, d.text) for d in docs] == [("7", "seven"), ("docs.jsonl:2", "no id")]
    with pytest.raises(LabelError, match=r"docs\.jsonl:1: no string field 'text'"):
        load_documents(path)


def test_duplicate_ids_and_empty_sources_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n')
    with pytest.raises(LabelError, match="appears twice"):
        load_documents(path)
    (tmp_path / "none").mkdir()
    with pytest.raises(LabelError, match="no non-empty documents"):
        load_documents(tmp_path / "none")
    with pytest.raises(LabelError, match="neither"):
        load_documents(tmp_path / "missing")


def test_review_sample_is_seeded_ordered_and_never_empty() -> None:
    records = [{"n": n} for n in range(10)]
    sample = review_sample(records, 0.25, seed=3)
    assert len(sample) == 3  # ceil(2.5)
    assert sample == sorted(sample, key=lambda r: r["n"])
    assert sample == review_sample(records, 0.25, seed=3)
    assert len(review_sample(records, 0.01, seed=0)) == 1
    assert review_sample([], 0.5, seed=0) == []


def test_document_hash_is_of_its_text() -> None:
    assert Document("x", "abc").sha256 == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
