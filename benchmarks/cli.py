"""`lorafleet bench`: run a benchmark scenario by name; each starts what it needs or takes URLs.

    lorafleet bench gateway-overhead                      # starts vLLM + gateway, compares them
    lorafleet bench vllm-vs-transformers --out benchmarks/results/DATE-cpu/vllm-vs-transformers
    lorafleet bench lora-overhead --via engine
    lorafleet bench adapter-cold-start
    lorafleet bench sweep --concurrencies 1,2,4,8,16,32,64
    lorafleet bench cost --from benchmarks/results/.../sweep/result.json
    lorafleet bench load --target server=http://127.0.0.1:8000 --model smollm2-135m-instruct -c 8
    lorafleet bench readme benchmarks/results            # rebuild the headline table
    lorafleet bench soak --url http://127.0.0.1:8000 --minutes 10   # streams checked for hours

Every scenario writes result.json, summary.md and PNG plots under --out (soak: a JSON report).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from lorafleet.benchmarks.scenarios import SCENARIO_NAMES, load


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark scenarios: latency, throughput, cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scenarios = parser.add_subparsers(dest="bench_scenario", metavar="SCENARIO")
    from lorafleet.benchmarks.scenarios.options import add_common_arguments

    for name in (*SCENARIO_NAMES, "load"):
        module = load(name)
        sub = scenarios.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        add_common_arguments(sub)
        sub.set_defaults(**getattr(module, "DEFAULTS", {}))
    readme = scenarios.add_parser("readme", help="rebuild the results README's headline table")
    readme.add_argument("results_dir", type=Path, nargs="?", default=Path("benchmarks/results"))
    readme.add_argument(
        "--intro", type=Path, default=None, help="markdown file placed above the table"
    )
    readme.add_argument(
        "--project-readme",
        type=Path,
        default=None,
        help="also rewrite this file's product table from the newest `product` result",
    )
    from lorafleet.benchmarks import soak

    soak_parser = scenarios.add_parser(
        "soak",
        help="many concurrent streams for a while: lost, truncated, mixed; gateway RSS",
        description=soak.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    soak.add_arguments(soak_parser)
    parser.set_defaults(func=main, bench_parser=parser)


def main(args: argparse.Namespace) -> int:
    name = getattr(args, "bench_scenario", None)
    if name is None:
        args.bench_parser.print_help()
        return 2
    if name == "readme":
        return write_readme(args.results_dir, args.intro, args.project_readme)
    if name == "soak":
        from lorafleet.benchmarks import soak

        return soak.main(args)
    return run_scenario(name, args)


def run_scenario(name: str, args: argparse.Namespace) -> int:
    from lorafleet.benchmarks.lora_adapters import AdapterCreationError
    from lorafleet.benchmarks.processes import ProcessStartError
    from lorafleet.benchmarks.report import write_result
    from lorafleet.benchmarks.scenarios.base import BenchContext, ScenarioError
    from lorafleet.benchmarks.scenarios.options import options_from_args

    try:
        options = options_from_args(name, args)
    except ValueError as exc:
        print(f"lorafleet bench {name}: {exc}", file=sys.stderr)
        return 2
    module = load(name)
    _stop_on_sigterm()
    ctx = BenchContext(name, options)
    try:
        with ctx.stack:
            result = module.run(ctx, args)
    except (ScenarioError, ProcessStartError, AdapterCreationError) as exc:
        print(f"lorafleet bench {name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"lorafleet bench {name}: interrupted; started processes were stopped", file=sys.stderr
        )
        return 130
    finally:
        ctx.cleanup()
    plots = (
        module.plots(result, options.out_dir)
        if hasattr(module, "plots")
        else default_plots(result, options.out_dir)
    )
    path = write_result(options.out_dir, result, plots)
    print(f"[bench] wrote {path} and {options.out_dir / 'summary.md'}", file=sys.stderr)
    for row in result.get("headline", []):
        status = {True: "meets", False: "MISSES", None: ""}[row.get("meets_bar")]
        print(
            f"  {row['measure']}: {row['value']:.4g} {row['unit']} {status} {row.get('bar') or ''}"
        )
    return 0


def default_plots(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from lorafleet.benchmarks.plots import plot_arm_latency, plot_arm_throughput

    if not result.get("arms"):
        return []
    return [
        plot_arm_throughput(result, out_dir / "throughput.png"),
        plot_arm_latency(result, out_dir / "latency.png"),
    ]


def write_readme(results_dir: Path, intro: Path | None, project_readme: Path | None = None) -> int:
    from lorafleet.benchmarks.report import render_readme, update_project_readme

    if not results_dir.is_dir():
        print(f"lorafleet bench readme: {results_dir} is not a directory", file=sys.stderr)
        return 2
    text = render_readme(results_dir, intro.read_text(encoding="utf-8") if intro else "")
    (results_dir / "README.md").write_text(text, encoding="utf-8")
    print(f"[bench] wrote {results_dir / 'README.md'}", file=sys.stderr)
    if project_readme is not None:
        try:
            updated = update_project_readme(project_readme, results_dir)
        except (OSError, ValueError) as exc:
            print(f"lorafleet bench readme: {exc}", file=sys.stderr)
            return 2
        if updated:
            print(f"[bench] rewrote the product table in {project_readme}", file=sys.stderr)
    return 0


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the `with` blocks stop every started process."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _standalone(argv: list[str] | None = None) -> int:
    """`python -m lorafleet.benchmarks.cli SCENARIO ...` until `lorafleet bench` is registered."""
    parser = argparse.ArgumentParser(prog="lorafleet")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(_standalone())
