"""Options every scenario takes, from the command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lorafleet.benchmarks.metrics import parse_goodput
from lorafleet.benchmarks.processes import VllmOptions


@dataclass(frozen=True)
class Options:
    """Options every scenario takes (see `add_common_arguments`)."""

    out_dir: Path
    repeats: int = 3
    seed: int = 0
    percentiles: tuple[float, ...] = (50.0, 90.0, 99.0)
    goodput: dict[str, float] = field(default_factory=dict)
    progress: bool = True
    time_limit_s: float = 600.0
    request_timeout_s: float = 300.0
    api_key: str | None = None
    ignore_eos: bool = True
    temperature: float | None = 0.0
    targets: dict[str, str] = field(default_factory=dict)
    model_dir: Path | None = None
    served_model_name: str = "smollm2-135m-instruct"
    engine: VllmOptions = field(default_factory=VllmOptions)
    warmup: int = 4
    save_detailed: bool = True


def settings_json(options: Options) -> dict[str, Any]:
    data = asdict(options)
    data["out_dir"] = str(options.out_dir)
    data["model_dir"] = str(options.model_dir) if options.model_dir else None
    data.pop("api_key", None)
    return data


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common")
    group.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default ./bench-results/SCENARIO-DATE)",
    )
    group.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="ROLE=URL",
        help="use a running server for ROLE instead of starting one (roles: scenario's help)",
    )
    group.add_argument("--repeats", type=int, default=3, help="runs per arm (>= 3 for comparisons)")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--percentiles", default="50,90,99", help="latency percentiles to report")
    group.add_argument(
        "--goodput", nargs="+", default=[], metavar="NAME:MS", help="SLOs, e.g. ttft:500 tpot:50"
    )
    group.add_argument("--time-limit-s", type=float, default=600.0, help="upper bound on each run")
    group.add_argument("--request-timeout-s", type=float, default=300.0)
    group.add_argument(
        "--warmup", type=int, default=4, help="warm-up requests per arm (not recorded)"
    )
    group.add_argument("--api-key", default=None, help="bearer token (default: $OPENAI_API_KEY)")
    group.add_argument(
        "--no-ignore-eos",
        dest="ignore_eos",
        action="store_false",
        help="do not send vLLM's ignore_eos/min_tokens (hosted APIs); output lengths then vary",
    )
    group.add_argument(
        "--temperature", type=float, default=0.0, help="sampling temperature sent (default greedy)"
    )
    group.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar"
    )
    group.add_argument(
        "--no-detail", dest="save_detailed", action="store_false", help="omit per-request arrays"
    )
    engine = parser.add_argument_group("engines the benchmark starts")
    engine.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="base model dir (default: lorafleet model fetch)",
    )
    engine.add_argument("--served-model-name", default="smollm2-135m-instruct")
    engine.add_argument("--engine-threads-bind", default="0-1", help="VLLM_CPU_OMP_THREADS_BIND")
    engine.add_argument(
        "--kv-cache-gib", type=float, default=2.0, help="VLLM_CPU_KVCACHE_SPACE per engine"
    )
    engine.add_argument(
        "--engine-arg", action="append", default=[], help="extra vLLM argument (repeatable)"
    )


def options_from_args(name: str, args: argparse.Namespace) -> Options:
    """Validated options; ValueError names the flag that is wrong."""
    if args.repeats < 1:
        raise ValueError("--repeats must be at least 1")
    targets = {}
    for item in args.target:
        role, sep, url = item.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise ValueError(f"--target {item!r}: expected ROLE=http://HOST:PORT")
        targets[role] = url
    out = args.out or Path("bench-results") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    engine = VllmOptions(
        served_model_name=args.served_model_name,
        kv_cache_gib=args.kv_cache_gib,
        threads_bind=args.engine_threads_bind,
        extra_args=tuple(args.engine_arg),
    )
    return Options(
        out_dir=out,
        repeats=args.repeats,
        seed=args.seed,
        percentiles=tuple(float(p) for p in args.percentiles.split(",")),
        goodput=parse_goodput(args.goodput),
        progress=args.progress and sys.stderr.isatty(),
        time_limit_s=args.time_limit_s,
        request_timeout_s=args.request_timeout_s,
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY"),
        ignore_eos=args.ignore_eos,
        temperature=args.temperature,
        targets=targets,
        model_dir=args.model_dir,
        served_model_name=args.served_model_name,
        engine=engine,
        warmup=args.warmup,
        save_detailed=args.save_detailed,
    )
