"""`lorafleet model fetch`: build or locate a base model directory.

    lorafleet model fetch                          # the embedded default, smollm2-135m-instruct
    lorafleet model fetch meta-llama/Llama-3.1-8B-Instruct
    lorafleet model fetch /models/my-llama

The model directory is the last line of the output, so scripts can use `$(... | tail -1)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    model = subparsers.add_parser("model", help="base models")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    fetch = model_sub.add_parser("fetch", help="fetch or build a base model, print its directory")
    fetch.add_argument("model", nargs="?", help="model id, Hugging Face id or local directory")
    fetch.add_argument("--cache-dir", type=Path, help="default: $LORAFLEET_CACHE_DIR or ~/.cache")
    fetch.add_argument("--verify", action="store_true", help="re-hash the weights")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(func=fetch_main)


def fetch_main(args: argparse.Namespace) -> int:
    from lorafleet.adapters.base_models import ModelFetchError, fetch_model, verify_model

    try:
        path = fetch_model(args.model, args.cache_dir, progress=not args.quiet)
        if args.verify:
            verify_model(path)
    except ModelFetchError as exc:
        print(f"lorafleet model fetch: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
