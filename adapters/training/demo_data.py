"""The demo's data steps: synthetic raw documents -> `lorafleet label` -> reviewed sample.

    data/        train/valid/test splits with their ground truth (synthetic.py)
    raw/         the training split's documents as .txt files, no labels: what a user starts from
    labels/      `lorafleet label` output (labels.jsonl, review.csv, report.json)
    labels/review-corrected.csv   the review sample as a person would correct it
    labels/agreement.json         `lorafleet label agreement` on that sample

The labeller is the deterministic oracle (`demo_oracle`): it answers each document with its
synthetic ground truth, so the demo and CI need no model strong enough to label court
decisions. The "person" who corrects the review sample writes the ground truth too. Both are
stand-ins, said so in the report: with real documents, `--labeller-url`/`--labeller-model` name
a strong model and a person edits `review.csv`.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorafleet.adapters.training import synthetic
from lorafleet.adapters.training.demo_oracle import ORACLE_MODEL, labels_from_records, oracle_server


@dataclass(frozen=True)
class DataPaths:
    work: Path

    @property
    def data(self) -> Path:
        return self.work / "data"

    @property
    def raw(self) -> Path:
        return self.work / "raw"

    @property
    def labels(self) -> Path:
        return self.work / "labels"

    @property
    def train(self) -> Path:
        """What the trainer reads: the labeller's output, not the ground truth."""
        return self.labels / "labels.jsonl"

    @property
    def valid(self) -> Path:
        return self.data / "valid.jsonl"

    @property
    def test(self) -> Path:
        return self.data / "test.jsonl"


def write_splits(paths: DataPaths, train: int, valid: int, test: int) -> None:
    synthetic.main(["--out", str(paths.data), "--train", str(train), "--valid", str(valid),
                    "--test", str(test)])  # fmt: skip
    paths.raw.mkdir(parents=True, exist_ok=True)
    for old in paths.raw.glob("*.txt"):
        old.unlink()
    for number, record in enumerate(read_jsonl(paths.data / "train.jsonl"), start=1):
        (paths.raw / f"doc-{number:05d}.txt").write_text(
            record["messages"][1]["content"] + "\n", encoding="utf-8"
        )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def run_cli(*args: str) -> int:
    command = [sys.executable, "-m", "lorafleet.cli", *args]
    print("+ lorafleet " + " ".join(args), flush=True)
    return subprocess.run(command, check=False).returncode


def label(paths: DataPaths, verify_fraction: float, labeller: tuple[str, str] | None) -> None:
    """`lorafleet label` over raw/; `labeller` = (base URL, model), else the oracle."""
    args = ["label", "--input", str(paths.raw), "--output", str(paths.labels),
            "--verify-fraction", str(verify_fraction), "--concurrency", "8", "--no-progress",
            "--cache-dir", str(paths.work / "label-cache")]  # fmt: skip
    if labeller is not None:
        code = run_cli(*args, "--base-url", labeller[0], "--model", labeller[1])
    else:
        truth = labels_from_records(read_jsonl(paths.data / "train.jsonl"))
        with oracle_server(truth) as url:
            code = run_cli(*args, "--base-url", url, "--model", ORACLE_MODEL)
    if code != 0:
        raise RuntimeError(f"lorafleet label exited {code}; see {paths.labels}/rejected.jsonl")


def correct_review(paths: DataPaths) -> Path:
    """The review sample with every cell set to the ground truth: the simulated reviewer."""
    truth = {r["messages"][1]["content"].strip(): json.loads(r["messages"][-1]["content"])
             for r in read_jsonl(paths.data / "train.jsonl")}  # fmt: skip
    source = paths.labels / "review.csv"
    with source.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    fields = list(rows[0]) if rows else ["id", "document"]
    for row in rows:
        row.update({k: v for k, v in truth[row["document"].strip()].items() if k in row})
    target = paths.labels / "review-corrected.csv"
    with target.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return target


def verify(paths: DataPaths, threshold: float = 0.9) -> dict[str, Any]:
    """`lorafleet label agreement` on the corrected sample; stops the demo if it says no."""
    review = correct_review(paths)
    report = paths.labels / "agreement.json"
    code = run_cli("label", "agreement", "--labels", str(paths.train), "--review", str(review),
                   "--threshold", str(threshold), "--output", str(report))  # fmt: skip
    if code != 0:
        raise RuntimeError(f"the labels are not good enough to train on (see {report})")
    result: dict[str, Any] = json.loads(report.read_text())
    return result
