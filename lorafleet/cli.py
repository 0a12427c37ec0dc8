"""The `lorafleet` command line: one sub-command per feature, each defined beside its code.

Each feature module exposes `add_parser(subparsers)`, registering its sub-command(s) with
`set_defaults(func=...)` where `func(args) -> int`. Heavy imports (torch, vllm, transformers)
stay inside those functions so `lorafleet --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lorafleet import __version__

# Sub-command modules, in the order `--help` lists them. The CLI is the one place that names
# them all: the gateway itself never imports the trainer or the benchmarks.
COMMAND_MODULES = (
    "lorafleet.server.cli",
    "lorafleet.adapters.cli",
    "lorafleet.server.keys_cli",
    "lorafleet.adapters.training.cli",
    "lorafleet.benchmarks.cli",
)
# Packages an install may leave out (a gateway image without the benchmarks); their commands
# are then simply not offered.
OPTIONAL_PACKAGES = ("lorafleet.benchmarks",)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorafleet", description="OpenAI-compatible LoRA serving on vLLM."
    )
    parser.add_argument("--version", action="version", version=f"lorafleet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name not in OPTIONAL_PACKAGES:
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    result: int = func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
