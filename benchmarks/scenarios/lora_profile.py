"""`lora-profile`: where a LoRA engine's CPU time goes, from vLLM's own torch profiler.

    lorafleet bench lora-profile --out benchmarks/results/DATE-cpu/lora-profile

Starts `lorafleet serve` with its defaults plus vLLM's `--profiler-config` (the torch profiler,
CPU activities, no stacks) through `LORAFLEET_ENGINE_EXTRA_ARGS`, and plain vLLM (LoRA off, no
lorafleet plugin, a component) with the same profiler. Each arm runs its workload once, through
`serve`'s gateway or straight at plain vLLM, between the engine's `/start_profile` and
`/stop_profile`: base model, one rank-16 all-linear adapter, 8 all-linear adapters mixed (at
the default `--max-loras`), and plain vLLM's base model. The adapters are the product benchmark's
trained ones.

vLLM's worker writes each profile's operator table (`*.profiler_out.txt`, torch's
`key_averages().table()`), which is kept under `profiles/` as the raw data. The result gives
each arm's total profiled CPU time and the share inside lorafleet's LoRA ops (`lorafleet::*`,
with what they call), inside compiled graphs, and the top operators by self time. Profiling
slows the engine, so its throughput here is not a benchmark figure; the shares are the finding.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from lorafleet.benchmarks.processes import descendant_commands, plain_vllm_process, serve_process
from lorafleet.benchmarks.scenarios.base import Arm, BenchContext, ScenarioError, Workload
from lorafleet.benchmarks.scenarios.lora_overhead import register_via_gateway
from lorafleet.benchmarks.trained_adapters import trained_adapters

NAME = "lora-profile"
HELP = "torch-profile serve's LoRA engine and plain vLLM: CPU share of the LoRA ops per arm"
DEFAULTS = {"repeats": 1}

TABLE_SUFFIX = ".profiler_out.txt"
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=32, help="requests per profiled run")
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--mixed", type=int, default=8, help="distinct adapters, mixed arm")


def profiler_args(directory: Path) -> list[str]:
    """vLLM's flag for the torch profiler (one shell word: the gateway splits on spaces)."""
    config = {
        "profiler": "torch",
        "torch_profiler_dir": str(directory),
        "torch_profiler_with_stack": False,
        "torch_profiler_use_gzip": True,
    }
    return ["--profiler-config", json.dumps(config, separators=(",", ":"))]


def run(ctx: BenchContext, args: argparse.Namespace) -> dict[str, Any]:
    adapters = trained_adapters(
        ctx.adapter_dir, args.mixed, args.rank, "all-linear", prefix="all-linear"
    )
    dirs = {role: ctx.workdir / f"profile-{role}" for role in ("serve", "plain-vllm")}
    urls = _start(ctx, dirs)
    register_via_gateway(urls["serve"], adapters, ctx.options.served_model_name)
    workload = Workload(
        num_requests=args.requests, input_len=args.input_len, output_len=args.output_len,
        concurrency=args.concurrency,
    )  # fmt: skip
    model = ctx.options.served_model_name
    names = tuple(name for name, _ in adapters)
    arms = {
        "plain": ("plain-vllm", Arm("plain vLLM, LoRA off, base model (component)",
                                    urls["plain-vllm"], model, workload)),
        "base": ("serve", Arm("serve: base model", urls["serve"], model, workload)),
        "al": ("serve", Arm(f"serve: 1 adapter, r{args.rank} all-linear", urls["serve"], model,
                            workload, adapters=names[:1])),
        "mixed": ("serve", Arm(f"serve: {len(names)} adapters mixed, r{args.rank} all-linear",
                               urls["serve"], model, workload, adapters=names)),
    }  # fmt: skip
    out = ctx.out_dir / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    profiles: dict[str, Any] = {}
    for key, (role, arm) in arms.items():
        ctx.warm_up(arm)
        engine = urls[f"{role}-engine"]
        table = _profiled(engine, dirs[role], lambda arm=arm: arm.runs.append(
            ctx.run_once(arm, 0, 0)))  # fmt: skip
        kept = out / f"{key}{TABLE_SUFFIX}"
        kept.write_text(table)
        profiles[key] = {"arm": arm.name, "table": f"profiles/{kept.name}", **summarize(table)}
        print(f"[bench] {arm.name}: LoRA ops {profiles[key]['lora_share']:.1%} of "
              f"{profiles[key]['self_cpu_total_s']:.1f} CPU s", flush=True)  # fmt: skip
    ctx.notes.append(
        "Profiled runs: the torch profiler slows the engine, so their throughput is not a "
        "benchmark figure. Shares are of the profile's `Self CPU time total`; a `lorafleet::*` "
        "op's CPU total includes the aten ops it calls."
    )
    headline = [
        {"name": f"{p['arm']}: CPU in LoRA ops", "value": round(p["lora_share"], 4),
         "unit": "share", "detail": f"compiled graphs {p['compiled_share']:.1%}"}
        for p in profiles.values()
    ]  # fmt: skip
    return ctx.result(
        arms=[arm for _, arm in arms.values()], comparisons=[], headline=headline,
        extra={"profiles": profiles},
    )  # fmt: skip


def _start(ctx: BenchContext, dirs: dict[str, Path]) -> dict[str, str]:
    engine_port = ctx.port()
    settings = {"LORAFLEET_ENGINE_EXTRA_ARGS": " ".join(profiler_args(dirs["serve"]))}
    spec = serve_process(
        ctx.port(), engine_port, ctx.workdir, adapter_roots=[ctx.adapter_dir],
        settings_env=settings, name="serve",
    )  # fmt: skip
    serve = ctx.stack.start(spec)
    ctx.started("serve", serve)
    ctx.settings_changed["serve"] = settings
    plain_spec = plain_vllm_process(
        ctx.model_dir(), ctx.port(), ctx.options.served_model_name,
        extra_args=tuple(profiler_args(dirs["plain-vllm"])),
    )  # fmt: skip
    plain = ctx.stack.start(plain_spec)
    ctx.started("plain-vllm", plain)
    ctx.stack.wait_ready()
    pid = serve.pid
    commands = descendant_commands(pid) if pid else []
    ctx.engine_commands["serve"] = [c for c in commands if "vllm.entrypoints" in " ".join(c)][:1]
    return {
        "serve": serve.url,
        "serve-engine": f"http://127.0.0.1:{engine_port}",
        "plain-vllm": plain.url,
        "plain-vllm-engine": plain.url,
    }


def _profiled(engine_url: str, directory: Path, body: Any, timeout_s: float = 300.0) -> str:
    """Run `body` between the engine's /start_profile and /stop_profile; the operator table
    the worker writes for it."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    with httpx.Client(base_url=engine_url, timeout=timeout_s) as client:
        client.post("/start_profile").raise_for_status()
        try:
            body()
        finally:
            client.post("/stop_profile").raise_for_status()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # The worker's table; the API server writes a (near-empty) one of its own too.
        tables = [t for t in directory.glob(f"*{TABLE_SUFFIX}") if "async_llm" not in t.name]
        if tables and tables[0].stat().st_size > 0:
            time.sleep(1.0)  # written in one print; let it close
            return tables[0].read_text()
        time.sleep(1.0)
    raise ScenarioError(f"no profiler table in {directory} {timeout_s:.0f} s after /stop_profile")


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"not a profiler time: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_table(table: str) -> tuple[list[dict[str, Any]], float]:
    """Rows of torch's `key_averages().table()` (name, self and total CPU seconds, calls) and
    its `Self CPU time total`."""
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("Name"))
    columns = re.split(r"\s{2,}", lines[header].strip())
    rows: list[dict[str, Any]] = []
    for line in lines[header + 2 :]:
        if line.startswith("-"):
            break
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(columns):
            continue
        cell = dict(zip(columns, cells, strict=True))
        rows.append({
            "name": cell["Name"],
            "self_cpu_s": _seconds(cell["Self CPU"]),
            "cpu_total_s": _seconds(cell["CPU total"]),
            "calls": int(cell["# of Calls"]),
        })  # fmt: skip
    total = re.search(r"Self CPU time total:\s*([0-9.]+(?:us|ms|s))", table)
    if total is None:
        raise ValueError("no 'Self CPU time total' line in the profiler table")
    return rows, _seconds(total.group(1))


def summarize(table: str, top: int = 12) -> dict[str, Any]:
    rows, total = parse_table(table)
    lora = [r for r in rows if r["name"].startswith("lorafleet::")]
    # Inductor's compiled graph, as vLLM's CPU runner calls it (and torch.compile's own name).
    compiled = [r for r in rows if r["name"].startswith(("## Call CompiledFxGraph",
                                                          "Torch-Compiled Region"))]  # fmt: skip
    lora_s = sum(r["cpu_total_s"] for r in lora)
    compiled_s = sum(r["cpu_total_s"] for r in compiled)
    return {
        "self_cpu_total_s": total,
        "lora_cpu_s": lora_s,
        "lora_share": lora_s / total if total else 0.0,
        "lora_ops": lora,
        "compiled_cpu_s": compiled_s,
        "compiled_share": compiled_s / total if total else 0.0,
        "top_self_cpu": sorted(rows, key=lambda r: -r["self_cpu_s"])[:top],
    }
