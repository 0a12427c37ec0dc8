"""The demo's ground-truth labeller, driven by the real `lorafleet label` client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from lorafleet.adapters.training.demo_oracle import ORACLE_MODEL, labels_from_records, oracle_server
from lorafleet.adapters.training.label import LabelCache, LabelOptions, label_documents
from lorafleet.adapters.training.label_data import Document
from lorafleet.adapters.training.synthetic import generate


def test_label_client_gets_the_ground_truth_and_unknown_documents_fail(tmp_path: Path) -> None:
    records = [example.to_record() for example in generate(3, "train", seed=1)]
    docs = [Document(f"d{i}", r["messages"][1]["content"]) for i, r in enumerate(records)]
    docs.append(Document("stranger", "A document the oracle never saw."))
    with oracle_server(labels_from_records(records)) as url:
        options = LabelOptions(base_url=url, model=ORACLE_MODEL, max_attempts=1)
        outcomes = asyncio.run(label_documents(docs, options, LabelCache(tmp_path)))
    for record, outcome in zip(records, outcomes, strict=False):
        assert outcome.label == json.loads(record["messages"][-1]["content"])
    assert outcomes[-1].failed and "HTTP 404" in (outcomes[-1].reason or "")
