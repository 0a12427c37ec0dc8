"""`lorafleet label` and `lorafleet label agreement`: label raw documents, then check a sample.

    # label a folder of .txt files (or --input docs.jsonl --field text) with any
    # OpenAI-compatible endpoint; the key comes from $OPENAI_API_KEY or $LORAFLEET_API_KEY
    lorafleet label --input raw/ --base-url https://api.openai.com/v1 --model gpt-4o-mini \\
        --output data/labelled --verify-fraction 0.05
    # -> labels.jsonl (the trainer's chat format), rejected.jsonl (invalid answers, with the
    #    reason), review.csv (5% of the labels, to correct by hand), report.json

    # after correcting review.csv: per-field agreement, amount F1, and a verdict
    lorafleet label agreement --labels data/labelled/labels.jsonl \\
        --review data/labelled/review.csv --threshold 0.9

Rerunning the same command after an interruption pays only for the documents not yet answered
(answers are cached under --cache-dir, by document hash, prompt and model).

Exit status: 0 on success (invalid answers are set aside, not failures); 1 when a request
still failed after the retries (rerun to resume) or, for `agreement`, when the labels are
below the threshold; 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from lorafleet.adapters.training.label import Counters, LabelCache, LabelOptions, Outcome
from lorafleet.adapters.training.label_data import (
    LabelError,
    load_documents,
    read_labels,
    read_review,
    review_sample,
    training_record,
    write_jsonl,
    write_review,
)
from lorafleet.adapters.training.prices import DEFAULT_PRICES, PriceError, TokenPrice, price_for


def add_parser(subparsers: Any) -> None:
    label = subparsers.add_parser(
        "label", help="label raw documents with an OpenAI-compatible model", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    label.add_argument("--input", type=Path, help="folder of .txt files, or a JSONL file")
    label.add_argument("--field", default="text", help="JSONL field holding the document")
    label.add_argument("--id-field", default="id", help="JSONL field naming the document")
    label.add_argument("--base-url", help="OpenAI-compatible endpoint (with or without /v1)")
    label.add_argument("--model", help="the labelling model")
    label.add_argument("--output", type=Path, help="output folder")
    label.add_argument("--api-key", help="default: $LORAFLEET_API_KEY or $OPENAI_API_KEY")
    label.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    label.add_argument("--max-attempts", type=int, default=6, help="tries per document")
    label.add_argument("--max-tokens", type=int, default=512)
    label.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    label.add_argument("--cache-dir", type=Path, help="default: <lorafleet cache>/labels")
    label.add_argument("--verify-fraction", type=float, default=0.0,
                       help="share of the labels to write to a review sample")  # fmt: skip
    label.add_argument("--review-format", choices=("csv", "jsonl"), default="csv")
    label.add_argument("--seed", type=int, default=0, help="review sample seed")
    label.add_argument("--prices", type=Path, default=DEFAULT_PRICES, help="price table (YAML)")
    label.add_argument("--no-progress", action="store_true")
    label.set_defaults(func=label_main)

    sub = label.add_subparsers(dest="label_command", metavar="SUBCOMMAND")
    agree = sub.add_parser("agreement", help="score labels against a corrected review sample")
    agree.add_argument("--labels", type=Path, required=True, help="labels.jsonl")
    agree.add_argument("--review", type=Path, required=True, help="the corrected sample")
    agree.add_argument("--threshold", type=float, default=0.9, help="minimum agreement, 0-1")
    agree.add_argument("--output", type=Path, help="write the JSON report here")
    agree.set_defaults(func=agreement_main)


class BarProgress:
    """tqdm bar: documents done, tokens paid in this run, and their estimated cost."""

    def __init__(self, total: int, price: TokenPrice | None, disable: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="doc", desc="label", disable=disable)
        self.price = price
        self.prompt_tokens = self.completion_tokens = self.cached = self.rejected = 0

    def update(self, outcome: Outcome) -> None:
        self.prompt_tokens += outcome.prompt_tokens
        self.completion_tokens += outcome.completion_tokens
        self.cached += outcome.cached
        self.rejected += outcome.label is None
        cost = f"${self.cost:.4f}" if self.cost is not None else "$?"
        self.bar.set_postfix_str(
            f"tok in {self.prompt_tokens} out {self.completion_tokens} {cost} "
            f"cached {self.cached} set aside {self.rejected}", refresh=False,
        )  # fmt: skip
        self.bar.update(1)

    @property
    def cost(self) -> float | None:
        if self.price is None:
            return None
        return round(self.price.cost(self.prompt_tokens, self.completion_tokens), 6)


def label_main(args: argparse.Namespace) -> int:
    missing = [f"--{n.replace('_', '-')}" for n in ("input", "base_url", "model", "output")
               if getattr(args, n) is None]  # fmt: skip
    if missing:
        print(f"lorafleet label: {', '.join(missing)} required", file=sys.stderr)
        return 2
    if args.concurrency < 1 or args.max_attempts < 1 or not 0 <= args.verify_fraction <= 1:
        print("lorafleet label: --concurrency and --max-attempts must be at least 1, "
              "--verify-fraction within 0-1", file=sys.stderr)  # fmt: skip
        return 2
    try:
        report = run_label(args)
    except (LabelError, PriceError, OSError) as exc:
        print(f"lorafleet label: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 1 if report["failed"] else 0


def run_label(args: argparse.Namespace) -> dict[str, Any]:
    from lorafleet.adapters.base_models import default_cache_dir
    from lorafleet.adapters.training.label import label_documents

    docs = load_documents(args.input, args.field, args.id_field)
    options = LabelOptions(
        base_url=args.base_url, model=args.model, api_key=args.api_key,
        concurrency=args.concurrency, max_attempts=args.max_attempts,
        max_tokens=args.max_tokens, timeout_s=args.timeout,
    )  # fmt: skip
    cache = LabelCache(args.cache_dir or default_cache_dir() / "labels")
    price = price_for(args.model, args.prices)
    progress = BarProgress(len(docs), price, disable=args.no_progress)
    counters = Counters()
    started = time.perf_counter()
    try:
        outcomes = asyncio.run(label_documents(docs, options, cache, progress, counters))
    finally:
        progress.bar.close()
    return write_outputs(args, outcomes, progress, counters, time.perf_counter() - started)


def write_outputs(
    args: argparse.Namespace, outcomes: list[Outcome], progress: BarProgress,
    counters: Counters, wall_s: float,
) -> dict[str, Any]:  # fmt: skip
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    records = [training_record(o.doc, o.label, args.model) for o in outcomes if o.label]
    write_jsonl(out / "labels.jsonl", records)
    aside = [{"id": o.doc.id, "doc_sha256": o.doc.sha256, "reason": o.reason, "raw": o.raw,
              "failed": o.failed} for o in outcomes if o.label is None]  # fmt: skip
    write_jsonl(out / "rejected.jsonl", aside)
    report: dict[str, Any] = {
        "documents": len(outcomes),
        "labelled": len(records),
        "rejected": sum(not o.failed for o in outcomes if o.label is None),
        "failed": sum(o.failed for o in outcomes),
        "cached": progress.cached,
        "requests": counters.requests,
        "retries": counters.retries,
        "prompt_tokens": progress.prompt_tokens,
        "completion_tokens": progress.completion_tokens,
        "estimated_cost_usd": progress.cost,
        "price": None if progress.price is None else progress.price.source,
        "model": args.model,
        "wall_s": round(wall_s, 2),
        "labels": str(out / "labels.jsonl"),
        "rejected_file": str(out / "rejected.jsonl"),
    }
    if args.verify_fraction > 0:
        sample = review_sample(records, args.verify_fraction, args.seed)
        path = out / f"review.{args.review_format}"
        write_review(path, sample)
        report.update({"review": str(path), "review_size": len(sample)})
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def agreement_main(args: argparse.Namespace) -> int:
    from lorafleet.adapters.training.agreement import agreement_report, render_agreement

    if not 0 <= args.threshold <= 1:
        print("lorafleet label agreement: --threshold must be within 0-1", file=sys.stderr)
        return 2
    try:
        report = agreement_report(read_labels(args.labels), read_review(args.review),
                                  args.threshold)  # fmt: skip
    except LabelError as exc:
        print(f"lorafleet label agreement: {exc}", file=sys.stderr)
        return 1
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(render_agreement(report))
    return 0 if report["good_enough"] else 1
