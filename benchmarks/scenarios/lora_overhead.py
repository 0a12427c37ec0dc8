"""`lora-overhead`: what serving LoRA adapters costs, measured side by side.

    lorafleet bench lora-overhead                  # through the gateway (adapter admin API)
    lorafleet bench lora-overhead --via engine     # straight to vLLM, adapters preloaded

Arms, each at the same concurrency and workload, interleaved over repeats:
base model on an engine without LoRA; base model on an engine with LoRA enabled; one adapter;
N adapters mixed round-robin (N from --adapter-counts). Adapters are small random PEFT LoRAs
(rank --rank on --targets) made in a temporary directory.

Roles: `lora-engine` (vLLM started with --enable-lora), `base-engine` (vLLM without LoRA),
`gateway` (lorafleet fronting lora-engine, with POST /v1/adapters). With --via gateway the
adapters are registered through the gateway's admin API; a gateway without it (404) is reported
as such. With --via engine they are loaded into the engine (--lora-modules at start, or
/v1/load_lora_adapter for a given engine). With --compare-upstream-ops, `upstream-lora-engine`
runs vLLM's own CPU LoRA ops (lorafleet's grouped ops switched off) for a before/after.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from lorafleet.benchmarks.lora_adapters import DEFAULT_TARGETS, make_adapters
from lorafleet.benchmarks.scenarios.base import (
    Arm,
    BenchContext,
    ScenarioError,
    Workload,
    compare,
    headline_row,
    positive_ints,
)

# lorafleet/vllm_plugins/cpu_lora_ops.py's switch (not imported: that module imports torch).
CPU_LORA_OPS_SWITCH = "LORAFLEET_CPU_LORA_OPS"

NAME = "lora-overhead"
HELP = "base vs one adapter vs N adapters mixed; base with LoRA enabled vs disabled"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--via",
        choices=["gateway", "engine"],
        default="gateway",
        help="send load through the gateway or straight to vLLM",
    )
    parser.add_argument(
        "--adapter-counts",
        default="1,4,8",
        help="N for the N-adapters arms (needs --max-loras >= N to avoid swapping)",
    )
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument(
        "--targets", default=",".join(DEFAULT_TARGETS), help="target modules, or all-linear"
    )
    parser.add_argument(
        "--max-loras", type=int, default=None, help="engine --max-loras (default: largest N)"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=64, help="requests per run")
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--skip-lora-off", action="store_true", help="no engine without LoRA")
    parser.add_argument(
        "--compare-upstream-ops",
        action="store_true",
        help="also run base and one adapter on an engine with vLLM's own CPU LoRA ops "
        "(LORAFLEET_CPU_LORA_OPS=0): before/after for lorafleet's grouped ops",
    )


def counts(args: argparse.Namespace) -> list[int]:
    return sorted(set(positive_ints(args.adapter_counts, "--adapter-counts")))


def register_via_gateway(
    gateway_url: str, adapters: list[tuple[str, Path]], base_model: str
) -> None:
    for name, path in adapters:
        payload = {"name": name, "source": str(path), "base_model": base_model}
        response = httpx.post(gateway_url + "/v1/adapters", json=payload, timeout=120.0)
        if response.status_code == 404 and "adapter" not in response.text.lower():
            raise ScenarioError(
                f"the gateway at {gateway_url} has no adapter admin API yet "
                "(POST /v1/adapters -> 404). "
                "Rerun with --via engine to measure vLLM's LoRA path directly."
            )
        if response.status_code not in (200, 201):
            raise ScenarioError(
                f"registering {name} at {gateway_url} failed: "
                f"{response.status_code} {response.text[:300]}"
            )


def load_into_engine(engine_url: str, adapters: list[tuple[str, Path]]) -> None:
    for name, path in adapters:
        response = httpx.post(
            engine_url + "/v1/load_lora_adapter",
            json={"lora_name": name, "lora_path": str(path)},
            timeout=120.0,
        )
        if response.status_code != 200 and "already" not in response.text:
            raise ScenarioError(
                f"loading {name} into {engine_url} failed: "
                f"{response.status_code} {response.text[:300]} "
                "(the engine needs --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
            )


def run(ctx: BenchContext, args: argparse.Namespace) -> dict[str, Any]:
    ns = counts(args)
    targets = tuple(args.targets.split(",")) if args.targets != "all-linear" else ("all-linear",)
    print(f"[bench] creating {ns[-1]} rank-{args.rank} adapters in {ctx.adapter_dir}")
    adapters = make_adapters(
        ctx.model_dir(), ctx.adapter_dir, ns[-1], args.rank, targets, ctx.options.seed, tag=ctx.tag
    )
    serve_url, off_url, upstream_url = _engines(ctx, args, ns, adapters)
    return _arms(ctx, args, ns, adapters, serve_url, off_url, upstream_url)


def _engines(
    ctx: BenchContext, args: argparse.Namespace, ns: list[int], adapters: list[tuple[str, Path]]
) -> tuple[str, str | None, str | None]:
    """URLs: the one that serves the LoRA arms, the LoRA-off engine (or None), and the engine
    on vLLM's own CPU LoRA ops (or None)."""
    preload = tuple((n, str(p)) for n, p in adapters) if args.via == "engine" else ()
    lora_options = replace(
        ctx.options.engine,
        enable_lora=True,
        max_loras=args.max_loras or ns[-1],
        max_lora_rank=args.rank,
        lora_modules=preload,
    )
    lora_url = ctx.given("lora-engine")
    given_lora = lora_url is not None
    if not lora_url:
        lora_url = ctx.start_engine(lora_options, name="lora-engine").url
    off_url = None if args.skip_lora_off else ctx.given("base-engine")
    if not args.skip_lora_off and not off_url:
        off_url = ctx.start_engine(name="base-engine").url
    upstream_url = ctx.given("upstream-lora-engine")
    if args.compare_upstream_ops and not upstream_url:
        upstream = replace(lora_options, extra_env=((CPU_LORA_OPS_SWITCH, "0"),))
        upstream_url = ctx.start_engine(upstream, name="upstream-lora-engine").url
    ctx.stack.wait_ready()
    if args.via == "engine":
        if given_lora:
            load_into_engine(lora_url, adapters)
        return lora_url, off_url, upstream_url
    serve_url = ctx.given("gateway")
    if not serve_url:
        serve_url = ctx.start_gateway([lora_url]).url
        if off_url:  # the LoRA-off arm goes through a gateway too, so only LoRA differs
            off_url = ctx.start_gateway([off_url], name="gateway-lora-off").url
    register_via_gateway(serve_url, adapters, ctx.options.served_model_name)
    if upstream_url:
        upstream_url = ctx.start_gateway([upstream_url], name="gateway-upstream-ops").url
        register_via_gateway(upstream_url, adapters, ctx.options.served_model_name)
    return serve_url, off_url, upstream_url


def _arms(
    ctx: BenchContext,
    args: argparse.Namespace,
    ns: list[int],
    adapters: list[tuple[str, Path]],
    serve_url: str,
    off_url: str | None,
    upstream_url: str | None,
) -> dict[str, Any]:
    model = ctx.options.served_model_name
    workload = Workload(
        num_requests=args.requests,
        input_len=args.input_len,
        output_len=args.output_len,
        concurrency=args.concurrency,
    )
    names = [name for name, _ in adapters]
    arms: list[Arm] = []
    off = Arm("base, LoRA disabled", off_url, model, workload) if off_url else None
    if off:
        arms.append(off)
    base_on = Arm("base, LoRA enabled", serve_url, model, workload)
    arms.append(base_on)
    by_n = {
        n: Arm(
            f"{n} adapter{'s' if n > 1 else ''}" + (" mixed" if n > 1 else ""),
            serve_url,
            model,
            workload,
            adapters=tuple(names[:n]),
        )
        for n in ns
    }
    arms += list(by_n.values())
    upstream = (
        (
            Arm("base, LoRA enabled, vLLM CPU ops", upstream_url, model, workload),
            Arm("1 adapter, vLLM CPU ops", upstream_url, model, workload, adapters=(names[0],)),
        )
        if upstream_url
        else None
    )
    if upstream:
        arms += list(upstream)
    ctx.run_arms(arms)
    desc = workload.describe() + f", rank {args.rank} on {','.join(targets_label(args))}"
    comparisons, headline = [], []
    if 1 in by_n:
        one = compare(
            "one adapter / base (LoRA enabled)",
            by_n[1],
            base_on,
            "output_throughput",
            bar=">= 0.8",
            passes=lambda v: v >= 0.8,
        )
        comparisons.append(one)
        headline.append(
            headline_row(
                f"one adapter / base model, output tok/s (c={args.concurrency}, via {args.via})",
                one,
                "x",
                desc,
            )
        )
        for n in ns:
            if n == 1:
                continue
            bar = ">= 0.9" if n == 8 else None
            mixed = compare(
                f"{n} adapters mixed / one adapter",
                by_n[n],
                by_n[1],
                "output_throughput",
                bar=bar,
                passes=(lambda v: v >= 0.9) if bar else None,
            )
            comparisons.append(mixed)
            headline.append(
                headline_row(
                    f"{n} adapters mixed / one adapter, output tok/s "
                    f"(c={args.concurrency}, via {args.via})",
                    mixed,
                    "x",
                    desc,
                )
            )
        if off:
            comparisons.append(
                compare("one adapter / base (LoRA disabled)", by_n[1], off, "output_throughput")
            )
    if upstream and 1 in by_n:
        before = compare(
            "one adapter / base, vLLM's CPU LoRA ops",
            upstream[1],
            upstream[0],
            "output_throughput",
        )
        speedup = compare(
            "one adapter: lorafleet grouped ops / vLLM's CPU ops",
            by_n[1],
            upstream[1],
            "output_throughput",
        )
        comparisons += [before, speedup]
        headline.append(
            headline_row(
                f"one adapter / base model with vLLM's own CPU LoRA ops (before lorafleet's "
                f"grouped ops; c={args.concurrency})",
                before,
                "x",
                desc,
            )
        )
    if off:
        enabled = compare("base with LoRA enabled / disabled", base_on, off, "output_throughput")
        comparisons.append(enabled)
        headline.append(
            headline_row(
                f"base model with LoRA enabled / disabled, output tok/s (c={args.concurrency})",
                enabled,
                "x",
                workload.describe(),
            )
        )
    ctx.notes.append(
        f"Adapters: {len(adapters)} random PEFT LoRAs, rank {args.rank}, targets "
        f"{','.join(targets_label(args))}, engine --max-loras {args.max_loras or ns[-1]} "
        f"--max-lora-rank {args.rank}; load sent via {args.via}."
    )
    if ns[-1] > (args.max_loras or ns[-1]):
        ctx.notes.append(
            "More adapters than --max-loras: the engine swaps adapters in and out while serving."
        )
    return ctx.result(arms=arms, comparisons=comparisons, headline=headline)


def targets_label(args: argparse.Namespace) -> list[str]:
    return [str(t) for t in args.targets.split(",")]
