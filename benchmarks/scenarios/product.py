"""`product`: lorafleet as users run it, against plain vLLM on the same model and cores.

    lorafleet bench product --repeats 5 --out benchmarks/results/DATE-cpu/product
    lorafleet bench product --peer-client     # also vLLM's own `vllm bench serve`, same targets

Started together on this machine (an idle one uses no CPU while another arm runs):
- `serve`: `lorafleet serve` with its defaults. Local mode: the gateway starts its engine from
  the product's one engine recipe (LoRA on, the default `--max-loras`, lorafleet's CPU LoRA ops
  plugin, the base guard as `auto` decides). Only ports and state directories are set.
- `serve-max-loras-8`: the same with `LORAFLEET_ENGINE_MAX_LORAS=8`.
- `plain-vllm` (a component, not the product): the engine `serve` starts, with LoRA off and no
  lorafleet plugin. What a user compares the product against.

Arms, all at one workload (default random 64 in / 64 out, 64 requests, c=32, greedy, fixed
output lengths), alternated every repeat: plain vLLM; `serve`'s engine straight (a component:
the LoRA-enabled engine without the gateway); `serve` base model; one rank-16 adapter on
all-linear (the trainer's default); one on q_proj,v_proj; 8 all-linear adapters mixed; and on
`serve-max-loras-8`, one adapter and 8 mixed. Adapters are real ones from the product's own
trainer (benchmarks/trained_adapters.py: non-zero A and B on every target), registered through
the gateway's admin API. Every arm of a repeat gets the same output lengths and prompt lengths.

Each headline is the median of per-repeat ratios, with min, max and how many repeats met the
bar. The result records the exact engine command lines (read from the running processes) and
the gateway settings that differ from the defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lorafleet.benchmarks.processes import (
    descendant_commands,
    plain_vllm_process,
    serve_process,
)
from lorafleet.benchmarks.scenarios.base import (
    Arm,
    BenchContext,
    ScenarioError,
    Workload,
    compare,
    headline_row,
)
from lorafleet.benchmarks.scenarios.lora_overhead import register_via_gateway
from lorafleet.benchmarks.scenarios.peer_client import PeerRun, peer_arms
from lorafleet.benchmarks.trained_adapters import trained_adapters

NAME = "product"
HELP = "lorafleet serve (defaults) vs plain vLLM: base, adapters, 8 mixed; ratios per repeat"
DEFAULTS = {"repeats": 5}

MAX_LORAS_8 = {"LORAFLEET_ENGINE_MAX_LORAS": "8"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=64, help="requests per run (every arm)")
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument(
        "--mixed", type=int, default=8, help="distinct adapters in the mixed arms (default 8)"
    )
    parser.add_argument(
        "--peer-client",
        action="store_true",
        help="also measure plain vLLM and `serve` with vLLM's own `vllm bench serve`",
    )


def run(ctx: BenchContext, args: argparse.Namespace) -> dict[str, Any]:
    all_linear = trained_adapters(
        ctx.adapter_dir, args.mixed, args.rank, "all-linear", prefix="all-linear"
    )
    qv = trained_adapters(ctx.adapter_dir, 1, args.rank, "q_proj,v_proj", prefix="qv")
    urls = _start(ctx)
    for role in ("serve", "serve-max-loras-8"):
        register_via_gateway(urls[role], [*all_linear, *qv], ctx.options.served_model_name)
    _record_commands(ctx)
    workload = Workload(
        num_requests=args.requests,
        input_len=args.input_len,
        output_len=args.output_len,
        concurrency=args.concurrency,
    )
    model = ctx.options.served_model_name
    al = tuple(name for name, _ in all_linear)
    mixed = f"{len(al)} adapters mixed, r{args.rank} all-linear"
    arms = {
        "plain": Arm("plain vLLM, LoRA off (component)", urls["plain-vllm"], model, workload),
        "engine": Arm(
            "serve's engine, base model, no gateway (component)", urls["serve-engine"], model,
            workload,
        ),
        "base": Arm("serve: base model", urls["serve"], model, workload),
        "al": Arm(
            f"serve: 1 adapter, r{args.rank} all-linear", urls["serve"], model, workload,
            adapters=al[:1],
        ),
        "qv": Arm(
            f"serve: 1 adapter, r{args.rank} q_proj,v_proj", urls["serve"], model, workload,
            adapters=(qv[0][0],),
        ),
        "mixed": Arm(f"serve: {mixed}", urls["serve"], model, workload, adapters=al),
        "al8": Arm(
            f"serve --max-loras 8: 1 adapter, r{args.rank} all-linear",
            urls["serve-max-loras-8"], model, workload, adapters=al[:1],
        ),
        "mixed8": Arm(
            f"serve --max-loras 8: {mixed}", urls["serve-max-loras-8"], model, workload,
            adapters=al,
        ),
    }  # fmt: skip
    ctx.run_arms(list(arms.values()))
    comparisons, headline = _compare(arms, args, workload)
    extra: dict[str, Any] = {}
    if args.peer_client:
        peer = peer_arms(ctx, workload, {"plain": urls["plain-vllm"], "serve": urls["serve"]})
        extra["peer_client"] = _peer_block(peer, arms)
        headline.append(extra["peer_client"]["headline"])
    ctx.notes.append(
        f"Adapters: {len(al)} all-linear and 1 q_proj,v_proj, rank {args.rank}, trained by "
        "benchmarks/trained_adapters.py (lorafleet's trainer, a few steps each, distinct seeds; "
        "non-zero A and B on every target checked before use), registered through each "
        "gateway's POST /v1/adapters."
    )
    ctx.notes.append(
        "Same output lengths and prompt lengths for every arm of a repeat (different prompt "
        "words per arm, so no arm reads another's prefix cache)."
    )
    return ctx.result(
        arms=list(arms.values()), comparisons=comparisons, headline=headline, extra=extra
    )


def _start(ctx: BenchContext) -> dict[str, str]:
    """Start plain vLLM and two `lorafleet serve`; wait for all of them. Role -> URL."""
    model_dir = ctx.model_dir()
    name = ctx.options.served_model_name
    urls: dict[str, str] = {}
    for role, settings in (("serve", {}), ("serve-max-loras-8", MAX_LORAS_8)):
        given = ctx.given(role)
        if given:
            raise ScenarioError(f"--target {role}=...: this scenario starts its own `serve`")
        engine_port = ctx.port()
        spec = serve_process(
            ctx.port(), engine_port, ctx.workdir, adapter_roots=[ctx.adapter_dir],
            settings_env=settings, name=role,
        )  # fmt: skip
        process = ctx.stack.start(spec)
        ctx.started(role, process)
        urls[role] = process.url
        if role == "serve":
            urls["serve-engine"] = f"http://127.0.0.1:{engine_port}"
        ctx.settings_changed[role] = settings
    plain = ctx.stack.start(plain_vllm_process(model_dir, ctx.port(), name))
    ctx.started("plain-vllm", plain)
    urls["plain-vllm"] = plain.url
    ctx.stack.wait_ready()
    return urls


def _record_commands(ctx: BenchContext) -> None:
    """The engine command line each `serve` really started (read from /proc)."""
    for role in ("serve", "serve-max-loras-8"):
        target = ctx.targets[role]
        pid = target.process.pid if target.process else None
        commands = descendant_commands(pid) if pid else []
        engines = [command for command in commands if "vllm.entrypoints" in " ".join(command)]
        ctx.engine_commands[role] = engines[:1]


def _compare(
    arms: dict[str, Arm], args: argparse.Namespace, workload: Workload
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    key = "output_throughput"
    c = f"c={args.concurrency}"
    desc = workload.describe()
    goals = [
        ("lorafleet serve (defaults, base model) / plain vLLM", "base", "plain", 0.95),
        (f"one r{args.rank} all-linear adapter / plain vLLM base", "al", "plain", 0.8),
        ("base model: LoRA-enabled engine / plain vLLM (no gateway)", "engine", "plain", 0.95),
        ("8 all-linear adapters mixed / one, default max-loras", "mixed", "al", 0.9),
    ]
    others = [
        (f"one r{args.rank} q_proj,v_proj adapter / plain vLLM base", "qv", "plain"),
        (f"one r{args.rank} all-linear adapter / serve base model", "al", "base"),
        ("8 all-linear adapters mixed / one, --max-loras 8", "mixed8", "al8"),
        ("gateway / its engine straight (base model)", "base", "engine"),
    ]
    comparisons, headline = [], []
    for measure, a, b, bar in goals:
        comparison = compare(
            measure, arms[a], arms[b], key, bar=f">= {bar}", passes=lambda v, bar=bar: v >= bar
        )
        comparisons.append(comparison)
        headline.append(headline_row(f"{measure}, output tok/s ({c})", comparison, "x", desc))
    for measure, a, b in others:
        comparison = compare(measure, arms[a], arms[b], key)
        comparisons.append(comparison)
        headline.append(headline_row(f"{measure}, output tok/s ({c})", comparison, "x", desc))
    ttft = compare(
        "median TTFT: serve base - plain vLLM", arms["base"], arms["plain"], "median_ttft_ms",
        how="delta",
    )  # fmt: skip
    comparisons.append(ttft)
    headline.append(headline_row(f"{ttft['name']} ({c})", ttft, "ms", desc))
    return comparisons, headline


def _peer_block(peer: list[PeerRun], arms: dict[str, Arm]) -> dict[str, Any]:
    """`vllm bench serve`'s serve/plain ratio beside lorafleet bench's, repeat by repeat."""
    by_target: dict[str, list[float]] = {}
    for run in peer:
        by_target.setdefault(run.target, []).append(run.output_throughput)
    ratios = [s / p for s, p in zip(by_target["serve"], by_target["plain"], strict=True)]
    ours = compare("", arms["base"], arms["plain"], "output_throughput")["per_repeat"]
    from lorafleet.benchmarks.metrics import percentile

    value = percentile(ratios, 50.0)
    row = headline_row(
        "lorafleet serve / plain vLLM by `vllm bench serve` (peer client), output tok/s",
        {"value": value, "min": min(ratios), "max": max(ratios), "per_repeat": ratios},
        "x",
        peer[0].workload,
    )
    return {
        "runs": [run.as_dict() for run in peer],
        "serve_over_plain_per_repeat": ratios,
        "serve_over_plain_median": value,
        "lorafleet_bench_serve_over_plain_per_repeat": ours,
        "headline": row,
    }


def plots(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from lorafleet.benchmarks.plots import plot_arm_latency, plot_arm_throughput

    return [
        plot_arm_throughput(result, out_dir / "throughput.png"),
        plot_arm_latency(result, out_dir / "latency.png"),
    ]
