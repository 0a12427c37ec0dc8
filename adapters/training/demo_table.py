"""The demo's results table, generated from its raw files and nothing else.

    python -m lorafleet.adapters.training.demo_table benchmarks/results/2026-12-07-cpu/demo
    python -m lorafleet.adapters.training.demo_table DIR --check   # exit 1 if table.md is stale

DIR holds `test.jsonl` (the test split with its gold labels), `arms.json` (each arm: model, how
it was asked) and one `predictions-<arm>.jsonl` per arm (the raw answers). Every answer is
scored again here with `metrics.score` against the gold in `test.jsonl`; the result goes to
`scores.json` and the Markdown table to `table.md`, each row linking its raw predictions.
Optional `serving.json` (per arm: size on disk, memory when served, output tok/s at c=1 and
c=32) adds those columns; an export the machine could not serve is listed under the table
with the reason `lorafleet serve` gave (`not_served`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorafleet.adapters.training.demo_score import ARMS_FILE, predictions_path
from lorafleet.adapters.training.error_analysis import amount_section
from lorafleet.adapters.training.metrics import latency_summary, score

TABLE_FILE, SCORES_FILE, SERVING_FILE = "table.md", "scores.json", "serving.json"
FIELDS = ("claim_amount", "claimant", "defendant", "dispute_subject", "outcome")


class TableError(ValueError):
    """A raw file is missing or does not match the test split."""


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise TableError(f"{path} is missing")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def score_arm(golds: list[dict[str, Any]], predictions: list[dict[str, Any]]) -> dict[str, Any]:
    if len(predictions) != len(golds):
        raise TableError(f"{len(predictions)} predictions for {len(golds)} test documents")
    for gold, row in zip(golds, predictions, strict=True):
        if row.get("gold") is not None and row["gold"] != gold:
            raise TableError(f"document {row.get('doc')}: its gold label differs from test.jsonl")
    report = score(golds, [row.get("answer") for row in predictions])
    latencies = [r["latency_s"] for r in predictions if r.get("latency_s") is not None]
    completions = [r.get("completion_tokens") or 0 for r in predictions if not r.get("error")]
    report["errors"] = sum(bool(r.get("error")) for r in predictions)
    report["latency_s"] = latency_summary(latencies)
    report["completion_tokens_mean"] = (
        round(sum(completions) / len(completions), 1) if completions and latencies else None
    )
    return report


def score_dir(folder: Path) -> dict[str, dict[str, Any]]:
    golds = [json.loads(r["messages"][-1]["content"]) for r in _rows(folder / "test.jsonl")]
    arms = json.loads((folder / ARMS_FILE).read_text())
    return {a["name"]: score_arm(golds, _rows(predictions_path(folder, a["name"]))) for a in arms}


def _how(arm: dict[str, Any]) -> str:
    if arm.get("model") is None:
        return str(arm["description"])
    parts = [f"`{arm['model']}`"]
    if arm.get("few_shot"):
        parts.append(f"{arm['few_shot']}-shot")
    if arm.get("json_schema"):
        parts.append("json_schema")
    return ", ".join(parts) + f": {arm['description']}"


def _num(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render(folder: Path, scores: dict[str, dict[str, Any]]) -> str:
    arms = json.loads((folder / ARMS_FILE).read_text())
    serving_path = folder / SERVING_FILE
    serving = json.loads(serving_path.read_text()) if serving_path.is_file() else {}
    head = ["arm", "model, how asked", "JSON valid", *(f"{f} F1" for f in FIELDS),
            "initiator acc.", "all exact", "errors", "latency p50 s", "raw"]  # fmt: skip
    extra = ["size on disk", "served RSS", "tok/s c=1", "tok/s c=32"] if serving else []
    lines = ["| " + " | ".join(head[:-1] + extra + head[-1:]) + " |",
             "|" + "---|---|" + "---:|" * (len(head) - 3 + len(extra)) + "---|"]  # fmt: skip
    for arm in arms:
        s = scores[arm["name"]]
        cells = [f"`{arm['name']}`", _how(arm), _num(s["json_valid_rate"]),
                 *(_num(s["fields"][f]["f1"]) for f in FIELDS),
                 _num(s["initiator_accuracy"]), _num(s["exact_match_rate"]), str(s["errors"]),
                 _num(s["latency_s"]["p50"], 1)]  # fmt: skip
        cells += _serving_cells(serving.get(arm["name"])) if serving else []
        link = predictions_path(Path("."), arm["name"]).name
        lines.append("| " + " | ".join([*cells, f"[{link}]({link})"]) + " |")
    n = next(iter(scores.values()))["examples"] if scores else 0
    table = "\n".join(lines) + "\n"
    notes = (
        f"\n{n} held-out test documents (templates never seen in training), temperature 0. "
        "F1 per field (a wrong value counts as a false positive and a false negative); "
        "`JSON valid`: the whole answer is one JSON object (fields are still read from the "
        "first object in an answer with prose around it). Scored by "
        "`python -m lorafleet.adapters.training.demo_table` from the raw files here.\n"
    )
    adapter = folder / predictions_path(Path("."), "adapter").name
    analysis = "\n" + amount_section(folder / "test.jsonl", adapter) if adapter.is_file() else ""
    return table + notes + _not_served(serving) + analysis


def _not_served(serving: dict[str, Any]) -> str:
    """Exports this machine could not serve, each with the reason `lorafleet serve` gave."""
    refused = {arm: facts for arm, facts in serving.items() if facts.get("not_served")}
    if not refused:
        return ""
    lines = [f"- `{arm}` ({facts['size_bytes'] / 1e6:.0f} MB on disk): {facts['not_served']}"
             for arm, facts in refused.items()]  # fmt: skip
    return "\nNot served on this machine, so not scored:\n\n" + "\n".join(lines) + "\n"


def _serving_cells(facts: dict[str, Any] | None) -> list[str]:
    if not facts:
        return ["n/a"] * 4
    size, rss = facts.get("size_bytes"), facts.get("rss_bytes")
    return [
        "n/a" if size is None else f"{size / 1e6:.0f} MB",
        "n/a" if rss is None else f"{rss / 2**20:.0f} MiB",
        _num(facts.get("tok_s_c1"), 1),
        _num(facts.get("tok_s_c32"), 1),
    ]


def write(folder: Path) -> str:
    scores = score_dir(folder)
    (folder / SCORES_FILE).write_text(json.dumps(scores, indent=2) + "\n")
    text = render(folder, scores)
    (folder / TABLE_FILE).write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lorafleet.adapters.training.demo_table")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--check", action="store_true", help="fail if table.md is out of date")
    args = parser.parse_args(argv)
    try:
        if args.check:
            fresh = render(args.folder, score_dir(args.folder))
            stale = (args.folder / TABLE_FILE).read_text() != fresh
            print(f"{args.folder / TABLE_FILE}: {'stale' if stale else 'up to date'}")
            return int(stale)
        print(write(args.folder), end="")
    except (TableError, OSError, ValueError, KeyError) as exc:
        print(f"demo_table: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
