"""`lorafleet export`: ship a merged model in a format other runtimes load.

    lorafleet merge runs/court --output models/smollm2-court
    lorafleet export models/smollm2-court --format gguf --quant q8_0 --quant q4_0 \\
        --output exports/smollm2-court
    # -> exports/smollm2-court/smollm2-court-q8_0.gguf, ...-q4_0.gguf, lorafleet-export.json

    # int8 weights and activations for vLLM (compressed-tensors; needs llmcompressor),
    # calibrated on the task's own training data
    lorafleet export models/smollm2-court --format w8a8 --calibration data/train.jsonl \\
        --output exports/smollm2-court-w8a8

Exit status: 0 on success, 1 on a failure the message explains, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    from lorafleet.adapters.training.export import QUANTS

    export = subparsers.add_parser(
        "export", help="export a merged model (GGUF for llama.cpp, w8a8/w4a16 for vLLM)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    export.add_argument("model", type=Path, help="merged model directory (`lorafleet merge`)")
    export.add_argument("--format", choices=("gguf", "w8a8", "w4a16"), default="gguf",
                        help="gguf (llama.cpp) or compressed-tensors for vLLM")  # fmt: skip
    export.add_argument("--quant", action="append", choices=QUANTS,
                        help="repeat for several files (default: q8_0)")  # fmt: skip
    export.add_argument("--output", type=Path, required=True, help="output directory")
    export.add_argument(
        "--calibration",
        type=Path,
        help="w8a8/w4a16: chat JSONL to calibrate on (the training data)",
    )
    export.add_argument("--calibration-samples", type=int, default=64)
    export.add_argument(
        "--gptq",
        action="store_true",
        help="GPTQ weights instead of round-to-nearest (slow on a CPU)",
    )
    export.add_argument("--tokenizer-pre", help="llama.cpp pre-tokenizer name (default: detect)")
    export.set_defaults(func=export_main)


def export_main(args: argparse.Namespace) -> int:
    from lorafleet.adapters.training.export import ExportError, export_model
    from lorafleet.adapters.training.gguf_tokenizer import TokenizerExportError

    if args.format != "gguf":
        return quant_main(args)
    quants = list(dict.fromkeys(args.quant or ["q8_0"]))
    try:
        manifest = export_model(args.model, args.output, quants, tokenizer_pre=args.tokenizer_pre)
    except (ExportError, TokenizerExportError, OSError) as exc:
        print(f"lorafleet export: {exc}", file=sys.stderr)
        return 1
    print(manifest.read_text(), end="")
    return 0


def quant_main(args: argparse.Namespace) -> int:
    import json

    from lorafleet.adapters.training.export import ExportError
    from lorafleet.adapters.training.export_quant import quantize

    if args.quant or args.calibration_samples < 1 or (args.gptq and args.calibration is None):
        print(f"lorafleet export: --format {args.format} takes no --quant, --gptq needs "
              "--calibration FILE, --calibration-samples at least 1", file=sys.stderr)  # fmt: skip
        return 2
    try:
        manifest = quantize(args.model, args.output, args.format, args.calibration,
                            samples=args.calibration_samples, gptq=args.gptq)  # fmt: skip
    except (ExportError, OSError, ValueError) as exc:
        print(f"lorafleet export: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(manifest, indent=2))
    return 0
