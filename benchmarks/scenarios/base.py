"""What every scenario shares: options, workloads, arms run in interleaved repeats, targets.

A scenario builds `Arm`s (a target URL + model + workload), hands them to `BenchContext.run_arms`,
which runs every arm once per repeat, alternating the order each repeat (A B, B A, ...) so slow
drift of a shared machine lands on both sides. Each run's prompts come from a seed unique to
(arm, repeat): no arm finds its prompts already in the engine's prefix cache.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from lorafleet.benchmarks import datasets
from lorafleet.benchmarks.environment import environment_block, load_average, now_iso
from lorafleet.benchmarks.loadgen import LoadConfig, LoadResult, run_async, run_load
from lorafleet.benchmarks.metrics import compute_metrics
from lorafleet.benchmarks.processes import (
    ManagedProcess,
    ProcessStack,
    VllmOptions,
    find_free_port,
    gateway_process,
    vllm_engine,
)
from lorafleet.benchmarks.scenarios.arms import Arm, Workload, compare, headline_row
from lorafleet.benchmarks.scenarios.options import Options, settings_json

__all__ = ["Arm", "BenchContext", "Options", "ScenarioError", "Workload", "compare", "headline_row"]

SCHEMA = "lorafleet-bench/1"


class ScenarioError(RuntimeError):
    """A scenario cannot run as asked (bad targets, missing API); the message says what to do."""


def positive_ints(text: str, flag: str) -> list[int]:
    """A flag's comma list of positive integers ("1,32,64"); ScenarioError naming the flag."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise ScenarioError(f"{flag} {text!r}: {exc}") from exc
    if not values or min(values) < 1:
        raise ScenarioError(f"{flag} must be positive integers")
    return values


@dataclass
class Target:
    role: str
    url: str
    started: bool  # started by this benchmark (else given with --target)
    process: ManagedProcess | None = None


class BenchContext:
    def __init__(self, scenario: str, options: Options) -> None:
        self.scenario = scenario
        self.options = options
        self.out_dir = options.out_dir
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.stack = ProcessStack(self.out_dir / "logs")
        # Scratch space (adapters, gateway registries), removed when the scenario ends.
        self.workdir = Path(tempfile.mkdtemp(prefix=f"lorafleet-bench-{scenario}-"))
        self.environment = environment_block()
        self.targets: dict[str, Target] = {}
        self.ports: set[int] = set()
        self.tag = time.strftime("%H%M%S")  # in adapter names: unique on long-lived engines
        self.generator_usage: list[tuple[float, float]] = []  # (CPU s, wall s) of every load run
        self.notes: list[str] = []
        # What a started `lorafleet serve` was told beyond its defaults, and the engine command
        # lines it really ran (role -> ...), recorded with the result.
        self.settings_changed: dict[str, dict[str, str]] = {}
        self.engine_commands: dict[str, list[list[str]]] = {}
        self._words: datasets.WordSource | None = None
        self._model_dir: Path | None = options.model_dir

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def port(self) -> int:
        return find_free_port(taken=self.ports)

    @property
    def adapter_dir(self) -> Path:
        return self.workdir / "adapters"

    def start_engine(
        self, options: VllmOptions | None = None, name: str = "engine"
    ) -> ManagedProcess:
        """Start a bare vLLM engine (not waited for) and record it under role `name`."""
        spec = vllm_engine(self.model_dir(), self.port(), options or self.options.engine, name=name)
        process = self.stack.start(spec)
        self.started(name, process)
        return process

    def start_gateway(self, engine_urls: list[str], name: str = "gateway") -> ManagedProcess:
        """Start `lorafleet serve` in cluster mode with its own registry, wait until ready."""
        spec = gateway_process(
            engine_urls,
            self.options.served_model_name,
            self.port(),
            adapter_roots=[self.adapter_dir],
            state_dir=self.workdir,
            name=name,
        )
        process = self.stack.start(spec)
        self.stack.wait_ready([process])
        self.started(name, process)
        return process

    # --- model and prompts ----------------------------------------------------------------
    def model_dir(self) -> Path:
        """The base model directory: --model-dir, else what `lorafleet model fetch` resolves."""
        if self._model_dir is None:
            self._model_dir = resolve_model_dir()
        return self._model_dir

    def words(self) -> datasets.WordSource:
        if self._words is None:
            try:
                self._words = datasets.TokenizerWords.from_dir(self.model_dir())
            except (OSError, ScenarioError, ValueError) as exc:
                self.notes.append(f"no tokenizer ({exc}); prompt lengths are approximate")
                self._words = datasets.FallbackWords()
        return self._words

    def requests(
        self, workload: Workload, seed: int, prompt_seed: int | None = None
    ) -> list[datasets.RequestSpec]:
        if workload.dataset == "chat-file":
            if workload.dataset_path is None:
                raise ScenarioError("--dataset chat-file needs --dataset-path")
            return datasets.chat_file_dataset(
                workload.dataset_path,
                workload.num_requests,
                output_len=workload.output_len,
                seed=seed,
            )
        return datasets.random_dataset(
            workload.num_requests,
            input_len=workload.input_len,
            output_len=workload.output_len,
            output_range_ratio=workload.output_range_ratio,
            seed=seed,
            prompt_seed=prompt_seed,
            words=self.words(),
        )

    # --- targets ---------------------------------------------------------------------------
    def given(self, role: str) -> str | None:
        url = self.options.targets.get(role)
        if url:
            self.targets[role] = Target(role, url.rstrip("/"), started=False)
        return url.rstrip("/") if url else None

    def started(self, role: str, process: ManagedProcess) -> Target:
        target = Target(role, process.url, started=True, process=process)
        self.targets[role] = target
        return target

    # --- running ---------------------------------------------------------------------------
    def load_config(
        self, arm: Arm, seed: int, label: str, workload: Workload | None = None
    ) -> LoadConfig:
        load = workload or arm.workload
        return LoadConfig(
            base_url=arm.base_url,
            model=arm.model,
            endpoint=load.endpoint,
            concurrency=load.concurrency,
            request_rate=load.request_rate,
            burstiness=load.burstiness,
            adapters=arm.adapters,
            adapter_assignment=arm.adapter_assignment,
            ignore_eos=self.options.ignore_eos,
            temperature=self.options.temperature,
            api_key=self.options.api_key,
            seed=seed,
            time_limit_s=self.options.time_limit_s,
            request_timeout_s=self.options.request_timeout_s,
            progress=self.options.progress,
            label=label,
        )

    def warm_up(self, arm: Arm) -> None:
        if self.options.warmup <= 0:
            return
        workload = Workload(
            num_requests=self.options.warmup,
            input_len=arm.workload.input_len,
            output_len=min(arm.workload.output_len, 8),
            concurrency=min(arm.workload.concurrency or 4, self.options.warmup),
            endpoint=arm.workload.endpoint,
        )
        config = self.load_config(
            arm, seed=self.options.seed + 99_991, label=f"warm-up {arm.name}", workload=workload
        )
        result = self.execute(config, self.requests(workload, config.seed))
        failed = [r.error for r in result.records if not r.success]
        if failed:
            raise ScenarioError(f"warm-up of {arm.name} at {arm.base_url} failed: {failed[0]}")

    def execute(self, config: LoadConfig, specs: list[datasets.RequestSpec]) -> LoadResult:
        """One load run; its generator CPU counts toward the result's `generator` block."""
        result = run_async(run_load(config, specs))
        self.generator_usage.append((result.generator_cpu_s, result.duration))
        return result

    def run_once(self, arm: Arm, repeat: int, arm_index: int) -> dict[str, Any]:
        # Every arm of a repeat draws the same output (and prompt) lengths, so an A/B compares
        # equal work; the prompt words differ per arm, so no arm reads another's prefix cache.
        seed = self.options.seed + 1000 * (repeat + 1)
        label = f"{arm.name} r{repeat + 1}/{self.options.repeats}"
        config = self.load_config(arm, seed, label)
        specs = self.requests(arm.workload, seed, prompt_seed=seed + arm_index + 1)
        cpu_before = {name: p.cpu_seconds() for name, p in arm.metered.items()}
        load_before = load_average()
        result = self.execute(config, specs)
        cpu_after = {name: p.cpu_seconds() for name, p in arm.metered.items()}
        run = self.summarize(result, arm, repeat, seed)
        run["load_average_before"] = load_before
        for name in arm.metered:
            before, after = cpu_before[name], cpu_after[name]
            if before is not None and after is not None:
                run[f"{name}_cpu_s"] = after - before
                tokens = run["total_output_tokens"]
                run[f"{name}_cpu_s_per_1k_output_tokens"] = (
                    (after - before) / (tokens / 1000) if tokens else None
                )
        self.save_run_file(arm, repeat, result, run)
        errors = sorted({r.error for r in result.records if r.error})
        if errors:
            print(
                f"[bench] {label}: {run['failed']} failed, e.g. {errors[0][:200]}", file=sys.stderr
            )
        print(
            f"[bench] {label}: {run['output_throughput']:.1f} out tok/s, TTFT p50 "
            f"{run['median_ttft_ms']:.1f} ms, ITL p50 {run['median_itl_ms']:.1f} ms, "
            f"{run['completed']}/{len(specs)} ok, gen CPU {run['generator_cpu_fraction']:.0%}",
            file=sys.stderr,
        )
        return run

    def summarize(self, result: LoadResult, arm: Arm, repeat: int, seed: int) -> dict[str, Any]:
        run = compute_metrics(
            result.records,
            result.duration,
            percentiles=self.options.percentiles,
            goodput_slos_ms=self.options.goodput or None,
        )
        run["repeat"] = repeat + 1
        run["seed"] = seed
        run["started_at"] = result.started_at
        run["not_sent"] = result.not_sent
        run["generator_cpu_s"] = result.generator_cpu_s
        run["generator_cpu_fraction"] = (
            result.generator_cpu_s / result.duration if result.duration else 0.0
        )
        run["generator_max_rss_mb"] = result.generator_max_rss_mb
        return run

    def run_arms(self, arms: list[Arm], *, interleave: bool = True) -> None:
        """Every arm once per repeat; the order flips each repeat."""
        for arm in arms:
            self.warm_up(arm)
        for repeat in range(self.options.repeats):
            order = list(enumerate(arms))
            if interleave and repeat % 2 == 1:
                order.reverse()
            for index, arm in order:
                arm.runs.append(self.run_once(arm, repeat, index))

    def save_run_file(self, arm: Arm, repeat: int, result: LoadResult, run: dict[str, Any]) -> None:
        """A per-run JSON in `vllm bench serve`'s layout (with per-request arrays)."""
        config = result.config
        data: dict[str, Any] = {
            "date": result.started_at,
            "endpoint_type": "openai-chat" if config.endpoint == "chat" else "openai",
            "backend": "openai-chat" if config.endpoint == "chat" else "openai",
            "label": arm.name,
            "model_id": arm.model,
            "tokenizer_id": str(self._model_dir) if self._model_dir else None,
            "num_prompts": len(result.records),
            "request_rate": "inf" if math.isinf(config.request_rate) else config.request_rate,
            "burstiness": config.burstiness,
            "max_concurrency": config.concurrency,
            "lora_modules": list(config.adapters) or None,
            "lora_assignment": config.adapter_assignment if config.adapters else None,
            **run,
        }
        if self.options.save_detailed:
            records = result.records
            data |= {
                "input_lens": [r.prompt_len for r in records],
                "output_lens": [r.output_tokens if r.success else 0 for r in records],
                "ttfts": [r.ttft for r in records],
                "itls": [r.itl for r in records],
                "latencies": [r.latency for r in records],
                "start_times": [r.start_time for r in records],
                "queue_times": [r.client_queue_time for r in records],
                "models": [r.model for r in records],
                "errors": [r.error for r in records],
            }
        path = self.out_dir / "runs" / f"{_slug(arm.name)}-r{repeat + 1}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        )

    # --- the result ------------------------------------------------------------------------
    def result(
        self,
        *,
        arms: list[Arm],
        comparisons: list[dict[str, Any]],
        headline: list[dict[str, Any]],
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = {
            "schema": SCHEMA,
            "scenario": self.scenario,
            **self.environment,
            "finished": now_iso(),
            "load_average_at_end": load_average(),
            "settings": settings_json(self.options),
            "targets": {
                role: {
                    "url": t.url,
                    "started_by_bench": t.started,
                    "command": t.process.spec.argv if t.process else None,
                    "ready_after_s": t.process.ready_after_s if t.process else None,
                }
                for role, t in self.targets.items()
            },
            "gateway_settings_changed": self.settings_changed,
            "engine_commands": self.engine_commands,
            "arms": {arm.name: arm.as_dict() for arm in arms},
            "comparisons": comparisons,
            "headline": headline,
            "generator": {
                "cpu_s_total": sum(cpu for cpu, _ in self.generator_usage),
                "cpu_fraction_max": max(
                    (cpu / wall for cpu, wall in self.generator_usage if wall), default=0.0
                ),
                "runs": len(self.generator_usage),
                "note": "load generator CPU seconds (user+system); fraction = per run / wall time",
            },
            "notes": self.notes,
        }
        if extra:
            result |= extra
        return result


def resolve_model_dir() -> Path:
    """Ask the product where its default model lives (`lorafleet model fetch --quiet`)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lorafleet.cli", "model", "fetch", "--quiet"],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScenarioError(f"`lorafleet model fetch` failed: {exc}; pass --model-dir") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not Path(lines[-1]).is_dir():
        raise ScenarioError(
            f"`lorafleet model fetch` failed ({done.stderr[-500:]}); pass --model-dir"
        )
    return Path(lines[-1])


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-")
