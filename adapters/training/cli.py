"""`lorafleet train | merge | eval`: fine-tune, fold and measure LoRA adapters.

    # LoRA on CPU (fp32, no gradient checkpointing), the default base smollm2-135m-instruct
    python -m lorafleet.adapters.training.synthetic --out data/court
    lorafleet train --dataset data/court/train.jsonl --eval-dataset data/court/valid.jsonl \\
        --output /srv/lorafleet/adapters/court --max-steps 120 --batch-size 8 \\
        --lora-r 16 --target-modules all-linear --learning-rate 1e-3

    # the same from a YAML file, one value overridden by a flag
    lorafleet train --config adapters/training/configs/court-demo.yaml --max-steps 10

    # continue after an interruption, from the latest checkpoint in OUTPUT.checkpoints/
    lorafleet train --config run.yaml --resume

    # register the result on a running gateway (the output must be under LORAFLEET_ADAPTER_ROOTS)
    lorafleet train --config run.yaml --publish http://127.0.0.1:8000 --adapter-name court

    # QLoRA on a CUDA GPU: base in 4-bit NF4 (bitsandbytes), bf16 compute
    lorafleet train --base-model meta-llama/Llama-3.1-8B-Instruct --qlora \\
        --dataset train.jsonl --output /adapters/court-8b --epochs 3 --batch-size 8

    # fold an adapter into its base (full precision) to serve it as a base model
    lorafleet merge /srv/lorafleet/adapters/court --output /models/smollm2-court

    # base vs adapter through the gateway (or any OpenAI-compatible endpoint)
    lorafleet eval --target http://127.0.0.1:8000 --model court --dataset data/court/test.jsonl

Exit status: 0 on success, 1 on a failure the message explains, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorafleet.adapters.training.config import ConfigError, add_config_arguments, config_from_args


def add_parser(subparsers: Any) -> None:
    from lorafleet.adapters.training import export_cli, label_cli

    train = subparsers.add_parser(
        "train", help="fine-tune a LoRA/QLoRA adapter (TRL SFT)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_config_arguments(train)
    train.set_defaults(func=train_main)

    merge = subparsers.add_parser("merge", help="merge an adapter into its base model")
    merge.add_argument("adapter", type=Path, help="adapter directory")
    merge.add_argument("--output", type=Path, required=True, help="merged model directory")
    merge.add_argument("--base-model", help="base id or path (default: from the adapter)")
    merge.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    merge.set_defaults(func=merge_main)

    ev = subparsers.add_parser("eval", help="score an extraction dataset on an OpenAI endpoint")
    ev.add_argument("--target", required=True, help="endpoint URL (with or without /v1)")
    ev.add_argument("--model", required=True, help="model name: base id, adapter, adapter@version")
    ev.add_argument("--dataset", type=Path, required=True, help="JSONL with gold JSON answers")
    ev.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    ev.add_argument("--max-tokens", type=int, default=256)
    ev.add_argument("--timeout", type=float, default=900.0, help="seconds per request")
    ev.add_argument("--limit", type=int, help="first N examples only")
    ev.add_argument("--api-key", help="default: $LORAFLEET_API_KEY or $OPENAI_API_KEY")
    ev.add_argument("--output", type=Path, help="write the JSON report here")
    ev.add_argument("--answers", type=Path, help="write every raw answer here (JSONL)")
    ev.add_argument("--markdown", type=Path, help="write the Markdown table here")
    ev.set_defaults(func=eval_main)

    label_cli.add_parser(subparsers)
    export_cli.add_parser(subparsers)


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def train_main(args: argparse.Namespace) -> int:
    from lorafleet.adapters.base_models import ModelFetchError
    from lorafleet.adapters.training.data import DatasetError
    from lorafleet.adapters.training.hardware import HardwareError
    from lorafleet.adapters.training.publish import PublishError, publish_adapter
    from lorafleet.adapters.training.train import run_training
    from lorafleet.adapters.validation import AdapterValidationError

    _setup_logging()
    try:
        config = config_from_args(args)
        result = run_training(config)
    except (ConfigError, DatasetError, HardwareError, ModelFetchError) as exc:
        print(f"lorafleet train: {exc}", file=sys.stderr)
        return 1
    except AdapterValidationError as exc:
        print(f"lorafleet train: the trained adapter breaks a serving rule ({exc.code}): {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    metrics = result.manifest.metrics
    print(
        f"adapter: {result.adapter_dir}\n"
        f"steps {metrics.steps}, train loss {metrics.train_loss}, eval loss {metrics.eval_loss}, "
        f"{metrics.seconds_per_step} s/step, {metrics.tokens_per_s} tokens/s, "
        f"{metrics.wall_time_s} s"
    )
    if config.publish:
        name = config.adapter_name or result.adapter_dir.name
        try:
            record = publish_adapter(
                config.publish, name=name, source=result.adapter_dir,
                base_model=result.manifest.base_model.id,
            )  # fmt: skip
        except PublishError as exc:
            print(f"lorafleet train: adapter saved but not published: {exc}", file=sys.stderr)
            return 1
        print(f"published: {record.get('name')}@{record.get('version')} on {config.publish}")
    return 0


def merge_main(args: argparse.Namespace) -> int:
    from lorafleet.adapters.base_models import ModelFetchError
    from lorafleet.adapters.training.merge import MergeError, merge_adapter

    _setup_logging()
    try:
        path = merge_adapter(
            args.adapter, args.output, base_model=args.base_model, dtype=args.dtype
        )
    except (MergeError, ModelFetchError, OSError) as exc:
        print(f"lorafleet merge: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def eval_main(args: argparse.Namespace) -> int:
    from lorafleet.adapters.training.data import DatasetError
    from lorafleet.adapters.training.evaluation import (
        EvalOptions,
        evaluate,
        load_items,
        render_markdown,
    )

    if args.concurrency < 1:
        print("lorafleet eval: --concurrency must be at least 1", file=sys.stderr)
        return 2
    try:
        items = load_items(args.dataset, args.limit)
    except DatasetError as exc:
        print(f"lorafleet eval: {exc}", file=sys.stderr)
        return 1
    options = EvalOptions(
        target=args.target, model=args.model, concurrency=args.concurrency,
        max_tokens=args.max_tokens, api_key=args.api_key, timeout_s=args.timeout,
    )  # fmt: skip
    report, answers = evaluate(items, options)
    report["dataset"] = str(args.dataset)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    table = render_markdown([report])
    if args.output:
        args.output.write_text(text + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    if args.answers:
        with args.answers.open("w", encoding="utf-8") as f:
            for item, answer in zip(items, answers, strict=True):
                record = {"gold": item.gold, "answer": answer.text, "error": answer.error}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(text)
    print(table)
    return 1 if report["errors"] == report["examples"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lorafleet.adapters.training.cli train|merge|eval ...` (same as `lorafleet`)."""
    parser = argparse.ArgumentParser(prog="lorafleet")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
