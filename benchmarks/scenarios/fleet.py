"""`fleet`: what a second engine replica buys, and what losing one costs.

    lorafleet bench fleet                                  # 1 vs 2 replicas, then a failover
    lorafleet bench fleet --concurrencies 32 --failover-duration-s 60
    lorafleet bench fleet --skip-throughput                # the failover alone

Starts `lorafleet serve --replicas 1` and `lorafleet serve --replicas 2` in local mode: each
gateway supervises its own vLLM engines (ports from LORAFLEET_ENGINE_PORT_BASE, a registry and
adapter store of its own) and binds them to cores with `split_cores`, so on a 2-core machine the
single replica gets both cores and each of the two gets one; the cores each engine was bound to
are read back from its environment and recorded (--engine-threads-bind does not apply here).

Throughput: the same closed-loop workload on both gateways at each of --concurrencies, the arms
alternating over repeats; the headline is the 2-replica / 1-replica output tok/s ratio.

Failover: the 1-replica gateway is stopped; on the 2-replica gateway, --failover-concurrency
requests run in a closed loop; after --kill-after-s one engine's process group gets SIGKILL.
Every request's start, end and outcome is recorded, and the gateway's `lorafleet:engine_ready`
gauge and each engine's `vllm:request_success_total` are polled, giving the time from the kill
to the replica being ejected, to the supervisor's restarted engine answering, to the gateway
marking it healthy and to it serving requests again; failures are split into streams already
running on the killed replica (expected to end with an error event) and requests not yet
streaming (expected: none fail, the gateway retries them on the other replica).

Roles: none; the scenario must own the gateways it measures (it kills one of their engines).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from lorafleet.benchmarks import failover
from lorafleet.benchmarks.chaos import (
    FailoverPlan,
    FailoverRun,
    FailoverTargets,
    KillRefusedError,
    drive_failover,
    engine_cores,
    find_engine,
    kill_engine,
    read_processes,
    records_json,
)
from lorafleet.benchmarks.loadgen import build_payload, run_async
from lorafleet.benchmarks.metrics import compute_metrics
from lorafleet.benchmarks.processes import (
    ManagedProcess,
    ProcessSpec,
    ProcessStartError,
    find_free_port,
)
from lorafleet.benchmarks.scenarios.base import (
    Arm,
    BenchContext,
    ScenarioError,
    Workload,
    compare,
    headline_row,
    positive_ints,
)
from lorafleet.benchmarks.scenarios.fleet_report import (
    failover_headline,
    failover_section,
    plot_failover,
)

NAME = "fleet"
HELP = "1 vs 2 engine replicas behind one gateway: throughput, and failover when one dies"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrencies", default="32,64", help="comma list (throughput arms)")
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument(
        "--requests-per-slot", type=int, default=2, help="requests per throughput run = this * c"
    )
    parser.add_argument("--failover-concurrency", type=int, default=16)
    parser.add_argument("--kill-after-s", type=float, default=20.0)
    parser.add_argument(
        "--failover-duration-s",
        type=float,
        default=90.0,
        help="failover load runs at least this long (longer until the restarted replica serves)",
    )
    parser.add_argument(
        "--after-recovery-s",
        type=float,
        default=10.0,
        help="keep the load on this long after the restarted replica serves again",
    )
    parser.add_argument("--failover-max-s", type=float, default=300.0, help="hard stop")
    parser.add_argument("--poll-interval-s", type=float, default=0.25)
    parser.add_argument(
        "--victim", type=int, choices=[0, 1], default=0, help="which engine replica to kill"
    )
    parser.add_argument(
        "--health-interval-s",
        type=float,
        default=None,
        help="gateway LORAFLEET_HEALTH_INTERVAL_S (default: the product's)",
    )
    parser.add_argument(
        "--no-lora",
        dest="lora",
        action="store_false",
        help="engines without LoRA (default: as `lorafleet serve`, LoRA enabled)",
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-failover", action="store_true")


def concurrencies(args: argparse.Namespace) -> list[int]:
    return positive_ints(args.concurrencies, "--concurrencies")


def failover_plan(args: argparse.Namespace) -> FailoverPlan:
    try:
        return FailoverPlan(
            concurrency=args.failover_concurrency,
            kill_after_s=args.kill_after_s,
            min_duration_s=args.failover_duration_s,
            after_recovery_s=args.after_recovery_s,
            max_duration_s=args.failover_max_s,
            poll_interval_s=args.poll_interval_s,
        )
    except ValueError as exc:
        raise ScenarioError(str(exc)) from exc


def checked(args: argparse.Namespace) -> tuple[list[int], FailoverPlan]:
    """Every option checked before anything starts: (concurrency levels, failover plan)."""
    if args.skip_throughput and args.skip_failover:
        raise ScenarioError("--skip-throughput and --skip-failover leave nothing to run")
    return concurrencies(args), failover_plan(args)


def workload_for(args: argparse.Namespace, concurrency: int) -> Workload:
    return Workload(
        num_requests=args.requests_per_slot * concurrency,
        input_len=args.input_len,
        output_len=args.output_len,
        concurrency=concurrency,
    )


# --- the fleets -----------------------------------------------------------------------------
@dataclass
class Fleet:
    """One `lorafleet serve --replicas N` gateway and the engine URLs it supervises."""

    replicas: int
    process: ManagedProcess
    engine_urls: list[str]

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def name(self) -> str:
        return f"{self.replicas} replica{'s' if self.replicas > 1 else ''}"


def consecutive_ports(ctx: BenchContext, count: int, attempts: int = 50) -> int:
    """The first of `count` consecutive free ports (engine ports are port_base + index)."""
    for _ in range(attempts):
        first = ctx.port()
        try:
            for offset in range(1, count):
                find_free_port(first + offset, first + offset, taken=ctx.ports)
        except ProcessStartError:
            continue
        return first
    raise ScenarioError(f"no {count} consecutive free ports found")


def gateway_env(
    ctx: BenchContext, args: argparse.Namespace, name: str, base: int
) -> dict[str, str]:
    engine = ctx.options.engine
    env = {
        "LORAFLEET_ENGINE_PORT_BASE": str(base),
        "LORAFLEET_ENGINE_KV_CACHE_GIB": f"{engine.kv_cache_gib:g}",
        "LORAFLEET_ENGINE_DTYPE": engine.dtype,
        "LORAFLEET_ENGINE_MAX_MODEL_LEN": str(engine.max_model_len),
        "LORAFLEET_DATABASE_URL": f"sqlite:///{ctx.workdir / f'{name}-registry.db'}",
        "LORAFLEET_ADAPTER_STORE": str(ctx.workdir / f"{name}-adapter-store"),
        "LORAFLEET_LOG_LEVEL": "info",
    }
    if engine.extra_args:
        env["LORAFLEET_ENGINE_EXTRA_ARGS"] = " ".join(engine.extra_args)
    if args.health_interval_s:
        env["LORAFLEET_HEALTH_INTERVAL_S"] = f"{args.health_interval_s:g}"
    if not args.lora:
        env["LORAFLEET_ENGINE_ENABLE_LORA"] = "false"
    return env


def start_fleet(ctx: BenchContext, args: argparse.Namespace, replicas: int) -> Fleet:
    """`lorafleet serve --replicas N` in local mode (not waited for)."""
    name = f"gateway-{replicas}-replica{'s' if replicas > 1 else ''}"
    base = consecutive_ports(ctx, replicas)
    port = ctx.port()
    argv = [sys.executable, "-m", "lorafleet.cli", "serve", "--port", str(port)]
    argv += ["--replicas", str(replicas), "--served-model-name", ctx.options.served_model_name]
    if ctx.options.model_dir:
        argv += ["--model", str(ctx.options.model_dir)]
    spec = ProcessSpec(
        name=name,
        argv=argv,
        port=port,
        ready_path="/ready",
        env=gateway_env(ctx, args, name, base),
        ready_timeout_s=900.0,
    )
    process = ctx.stack.start(spec)
    ctx.started(name, process)
    urls = [f"http://127.0.0.1:{base + index}" for index in range(replicas)]
    return Fleet(replicas, process, urls)


def wait_all_replicas(fleet: Fleet, timeout_s: float = 900.0) -> None:
    """`/ready` is 200 once one replica is up; wait until the gateway sees every one healthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        fleet.process.poll_ready()  # raises if the gateway died
        try:
            text = httpx.get(fleet.url + "/metrics", timeout=5.0).text
        except httpx.HTTPError:
            text = ""
        ready = failover.parse_engine_ready(text)
        if all(ready.get(url) for url in fleet.engine_urls):
            print(f"[bench] {fleet.name}: every replica healthy", file=sys.stderr)
            return
        if time.monotonic() > deadline:
            raise ScenarioError(
                f"{fleet.name}: replicas not all healthy after {timeout_s:.0f}s ({ready}):\n"
                f"{fleet.process.log_tail()}"
            )
        time.sleep(1.0)


def describe_engines(fleet: Fleet) -> list[dict[str, Any]]:
    """Each engine's URL, pid and the cores its threads were bound to (read from /proc)."""
    processes = read_processes()
    rows = []
    for url in fleet.engine_urls:
        port = int(url.rsplit(":", 1)[1])
        pid = find_engine(processes, fleet.process.pid or -1, port)
        rows.append({"url": url, "pid": pid, "cores": engine_cores(pid) if pid else None})
    return rows


# --- the scenario ---------------------------------------------------------------------------
def run(ctx: BenchContext, args: argparse.Namespace) -> dict[str, Any]:
    levels, plan = checked(args)
    if ctx.options.targets:
        raise ScenarioError("`fleet` starts the gateways it measures; it takes no --target")
    fleets = [] if args.skip_throughput else [start_fleet(ctx, args, 1)]
    fleets.append(start_fleet(ctx, args, 2))
    ctx.stack.wait_ready([fleet.process for fleet in fleets])
    for fleet in fleets:
        wait_all_replicas(fleet)
    engines = {fleet.name: describe_engines(fleet) for fleet in fleets}
    _note_setup(ctx, args, engines)
    arms: list[Arm] = []
    comparisons: list[dict[str, Any]] = []
    headline: list[dict[str, Any]] = []
    if not args.skip_throughput:
        arms, comparisons, headline = _throughput(ctx, args, fleets[0], fleets[1], levels)
        ctx.stack.stop(fleets[0].process)  # the failover has the machine to itself
    extra: dict[str, Any] = {"fleets": engines}
    if not args.skip_failover:
        summary, rows = _failover(ctx, args, fleets[-1], plan)
        extra["failover"] = summary
        extra["extra_sections"] = [{"title": "Failover", "lines": failover_section(summary)}]
        headline += rows
    return ctx.result(arms=arms, comparisons=comparisons, headline=headline, extra=extra)


def _note_setup(ctx: BenchContext, args: argparse.Namespace, engines: dict[str, Any]) -> None:
    cores = "; ".join(
        f"{name}: " + ", ".join(f"{e['url']} on cores {e['cores']}" for e in rows)
        for name, rows in engines.items()
    )
    ctx.notes.append(
        f"`lorafleet serve --replicas N`, local mode, binds each engine to its slice of the "
        f"machine's cores (split_cores): {cores}. Both gateways were up during the throughput "
        "arms (the idle fleet's engines idle); the 1-replica gateway was stopped before the "
        "failover run."
    )
    lora = "enabled (the product default)" if args.lora else "off"
    interval = f"{args.health_interval_s:g} s" if args.health_interval_s else "the default (5 s)"
    ctx.notes.append(
        f"Engines: KV cache {ctx.options.engine.kv_cache_gib:g} GiB each, dtype "
        f"{ctx.options.engine.dtype}, LoRA {lora}; gateway health interval {interval}."
    )


def _throughput(
    ctx: BenchContext, args: argparse.Namespace, one: Fleet, two: Fleet, levels: list[int]
) -> tuple[list[Arm], list[dict[str, Any]], list[dict[str, Any]]]:
    model = ctx.options.served_model_name
    arms: list[Arm] = []
    comparisons, headline = [], []
    for c in levels:
        workload = workload_for(args, c)
        single = Arm(f"1 replica c={c}", one.url, model, workload, metered={"fleet": one.process})
        double = Arm(f"2 replicas c={c}", two.url, model, workload, metered={"fleet": two.process})
        ctx.run_arms([single, double])
        arms += [single, double]
        ratio = compare(
            f"2 replicas / 1 replica output tok/s, c={c}", double, single, "output_throughput"
        )
        comparisons.append(ratio)
        headline.append(
            headline_row(
                f"2 replicas / 1 replica output tok/s (c={c})",
                ratio,
                "x",
                f"{workload.describe()}, lorafleet serve --replicas 1 vs 2 (local mode)",
            )
        )
    return arms, comparisons, headline


def _failover(
    ctx: BenchContext, args: argparse.Namespace, fleet: Fleet, plan: FailoverPlan
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    model = ctx.options.served_model_name
    workload = Workload(
        num_requests=1024,  # prompts cycled through; the run is bounded by time
        input_len=args.input_len,
        output_len=args.output_len,
        concurrency=plan.concurrency,
    )
    arm = Arm(f"failover c={plan.concurrency}", fleet.url, model, workload)
    ctx.warm_up(arm)
    seed = ctx.options.seed + 777
    config = ctx.load_config(arm, seed, arm.name)
    specs = ctx.requests(workload, seed)
    payloads = [(build_payload(config, spec, model), spec.output_len) for spec in specs]
    victim = fleet.engine_urls[args.victim]
    targets = FailoverTargets(fleet.url, tuple(fleet.engine_urls), victim)
    port, gateway_pid = int(victim.rsplit(":", 1)[1]), fleet.process.pid or -1
    print(
        f"[bench] failover: c={plan.concurrency} on {fleet.url} for >= {plan.min_duration_s:g}s, "
        f"SIGKILL of {victim} at {plan.kill_after_s:g}s",
        file=sys.stderr,
    )
    try:
        outcome = run_async(
            drive_failover(config, payloads, targets, plan, lambda: kill_engine(gateway_pid, port))
        )
    except KillRefusedError as exc:
        raise ScenarioError(f"failover: {exc}") from exc
    if outcome.kill_at is None:
        raise ScenarioError("failover: the run ended before the kill")
    summary = failover.summarize(
        outcome.records, outcome.samples, outcome.kill_at, victim, outcome.end
    )
    summary |= {
        "gateway": fleet.url,
        "victim": victim,
        "engines": list(fleet.engine_urls),
        "killed": outcome.killed,
        "concurrency": plan.concurrency,
        "plan": _plan_json(plan),
        "duration_s": outcome.end,
        "unfinished": outcome.unfinished,
        "served_per_s": {
            url: failover.served_per_second(outcome.samples, url, outcome.end)
            for url in fleet.engine_urls
        },
        "metrics": compute_metrics(outcome.raw, outcome.end, percentiles=ctx.options.percentiles),
        "workload": workload.describe().replace("1024 req, ", ""),
    }
    _save_run(ctx, outcome, summary)
    return summary, failover_headline(summary)


def _plan_json(plan: FailoverPlan) -> dict[str, Any]:
    return {key: getattr(plan, key) for key in plan.__dataclass_fields__}


def _save_run(ctx: BenchContext, outcome: FailoverRun, summary: dict[str, Any]) -> None:
    path = ctx.out_dir / "runs" / "failover.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"victim": summary["victim"], "gateway": summary["gateway"], **records_json(outcome)}
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


# --- plots ----------------------------------------------------------------------------------
def plots(result: dict[str, Any], out_dir: Path) -> list[Path]:
    from lorafleet.benchmarks.plots import plot_arm_latency, plot_arm_throughput

    paths = []
    if result.get("arms"):
        paths.append(plot_arm_throughput(result, out_dir / "throughput.png"))
        paths.append(plot_arm_latency(result, out_dir / "latency.png"))
    if result.get("failover"):
        paths.append(plot_failover(result, out_dir / "failover.png"))
    return paths
