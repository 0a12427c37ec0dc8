"""What `lorafleet label` reads and writes: documents in, training pairs and a review sample out.

Documents come from a folder of `.txt` files (the id is the path under the folder) or from one
field of a JSONL file (the id is `--id-field` when present, else `FILE:LINE`). Labels go out in
the trainer's chat format (`data.py`): the task's system prompt, the document, the label JSON.
The review sample is a CSV (or JSONL) a person corrects in place; `agreement` reads it back.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorafleet.adapters.training.court_task import SYSTEM_PROMPT, CourtLabel

LABEL_FIELDS = ("claimant", "defendant", "dispute_subject", "claim_amount", "outcome", "initiator")


class LabelError(ValueError):
    """The documents, a label file or a review file are unusable; the message says where."""


@dataclass(frozen=True)
class Document:
    id: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def load_documents(source: Path, field: str = "text", id_field: str = "id") -> list[Document]:
    if source.is_dir():
        docs = _from_folder(source)
    elif source.is_file():
        docs = _from_jsonl(source, field, id_field)
    else:
        raise LabelError(f"{source} is neither a folder of .txt files nor a JSONL file")
    if not docs:
        raise LabelError(f"{source} holds no non-empty documents")
    seen: set[str] = set()
    for doc in docs:
        if doc.id in seen:
            raise LabelError(f"{source}: document id {doc.id!r} appears twice")
        seen.add(doc.id)
    return docs


def _from_folder(folder: Path) -> list[Document]:
    docs = []
    for path in sorted(folder.rglob("*.txt")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise LabelError(f"cannot read {path}: {exc}") from exc
        if text.strip():
            docs.append(Document(path.relative_to(folder).as_posix(), text.strip()))
    return docs


def _from_jsonl(path: Path, field: str, id_field: str) -> list[Document]:
    docs = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise LabelError(f"{path.name}:{number}: not valid JSON ({exc})") from exc
        text = row.get(field) if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise LabelError(f"{path.name}:{number}: no string field {field!r}")
        if text.strip():
            doc_id = row.get(id_field)
            docs.append(Document(str(doc_id) if doc_id is not None else f"{path.name}:{number}",
                                 text.strip()))  # fmt: skip
    return docs


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read {path}: {exc}") from exc


def training_record(doc: Document, label: dict[str, Any], labeller: str) -> dict[str, Any]:
    """One line of the trainer's chat JSONL; `meta.source` ties it back to its document."""
    answer = CourtLabel(**label).to_json()
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": doc.text},
            {"role": "assistant", "content": answer},
        ],
        "meta": {"source": doc.id, "doc_sha256": doc.sha256, "labeller": labeller},
    }


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_labels(path: Path) -> dict[str, dict[str, Any]]:
    """Document id -> the model's label, from a `labels.jsonl` this command wrote."""
    labels = {}
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            labels[str(record["meta"]["source"])] = json.loads(record["messages"][-1]["content"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LabelError(f"{path.name}:{number}: not a labelled record ({exc!r})") from exc
    return labels


def review_sample(
    records: list[dict[str, Any]], fraction: float, seed: int
) -> list[dict[str, Any]]:
    """A seeded random `fraction` of the labelled records (at least one), in input order."""
    if not records:
        return []
    count = min(len(records), max(1, math.ceil(fraction * len(records))))
    picked = set(random.Random(seed).sample(range(len(records)), count))
    return [r for i, r in enumerate(records) if i in picked]


def write_review(path: Path, records: list[dict[str, Any]]) -> None:
    """Model labels a person corrects in place: CSV (a spreadsheet) or JSONL, by suffix."""
    rows = []
    for record in records:
        label = json.loads(record["messages"][-1]["content"])
        rows.append({"id": record["meta"]["source"], **{k: label[k] for k in LABEL_FIELDS},
                     "document": record["messages"][1]["content"]})  # fmt: skip
    if path.suffix == ".jsonl":
        write_jsonl(path, rows)
        return
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", *LABEL_FIELDS, "document"])
        writer.writeheader()
        writer.writerows(rows)


def read_review(path: Path) -> dict[str, dict[str, Any]]:
    """Document id -> the corrected label; an empty cell means "no value" (null)."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in _lines(path) if line.strip()]
    else:
        try:
            # utf-8-sig: spreadsheets often save CSV with a byte-order mark before `id`
            with path.open(encoding="utf-8-sig", newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError as exc:
            raise LabelError(f"cannot read {path}: {exc}") from exc
    corrected = {}
    for number, row in enumerate(rows, start=1):
        missing = [k for k in ("id", *LABEL_FIELDS) if k not in row]
        if missing:
            raise LabelError(f"{path.name}: row {number} lacks {', '.join(missing)}")
        corrected[str(row["id"])] = {k: _cell(row[k]) for k in LABEL_FIELDS}
    return corrected


def _cell(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    return value
