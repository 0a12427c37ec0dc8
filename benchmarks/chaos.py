"""Breaking a fleet on purpose and watching it recover (the `fleet` scenario's failover run).

    victim = find_engine(read_processes(), gateway_pid, port=8101)    # from the outside
    run = asyncio.run(drive_failover(config, payloads, targets, plan, kill))

A local-mode gateway starts each vLLM engine as `python -m vllm.entrypoints.openai.api_server
... --port N` in a process group of its own (`server/engine/supervisor.py`), so the benchmark
finds the engine among the gateway's descendants by its command line and SIGKILLs that group,
engine core included, as `tests/integration/test_fleet.py` does (/proc here: psutil is only a
dev dependency). `drive_failover` runs a closed loop for a while, kills one engine on the way,
and polls the gateway's `lorafleet:engine_ready` gauge and every engine's own
`vllm:request_success_total` counter, all on one clock; `lorafleet.benchmarks.failover` turns
what it saw into figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lorafleet.benchmarks.failover import (
    FailoverRecord,
    Sample,
    Timeline,
    classify,
    parse_engine_ready,
    parse_success_total,
    timeline,
)
from lorafleet.benchmarks.loadgen import ClientPool, LoadConfig, RequestRecord, send_one

ENGINE_MODULE = "vllm.entrypoints.openai.api_server"


# --- finding and killing an engine ----------------------------------------------------------
@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    argv: tuple[str, ...]


def read_processes() -> list[ProcInfo]:
    """Every process this user can see (Linux /proc)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            raw = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        argv = tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)
        found.append(ProcInfo(int(name), ppid, argv))
    return found


def engine_port(argv: Sequence[str]) -> int | None:
    """The `--port` of a vLLM OpenAI server command line; None for any other command."""
    if ENGINE_MODULE not in argv or "--port" not in argv:
        return None
    index = argv.index("--port")
    value = argv[index + 1] if index + 1 < len(argv) else ""
    return int(value) if value.isdigit() else None


def descendants(processes: Iterable[ProcInfo], root: int) -> list[ProcInfo]:
    children: dict[int, list[ProcInfo]] = {}
    for process in processes:
        children.setdefault(process.ppid, []).append(process)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child.pid)
    return found


def find_engine(processes: Iterable[ProcInfo], root: int, port: int) -> int | None:
    """The pid of the engine on `port` among `root`'s descendants: the topmost process with
    that command line (vLLM's forked workers carry their parent's)."""
    tree = descendants(processes, root)
    matching = {p.pid: p for p in tree if engine_port(p.argv) == port}
    top = [p.pid for p in matching.values() if p.ppid not in matching]
    return min(top) if top else None


def engine_cores(pid: int) -> str | None:
    """The cores an engine's OpenMP threads are bound to (its VLLM_CPU_OMP_THREADS_BIND)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for item in raw.split(b"\0"):
        key, _, value = item.partition(b"=")
        if key == b"VLLM_CPU_OMP_THREADS_BIND":
            return value.decode()
    return None


class KillRefusedError(RuntimeError):
    """The engine was not found, or its process group is the benchmark's or the gateway's."""


def kill_engine(gateway_pid: int, port: int) -> dict[str, int]:
    """SIGKILL the process group of the gateway's engine on `port`; returns its pid and pgid."""
    pid = find_engine(read_processes(), gateway_pid, port)
    if pid is None:
        raise KillRefusedError(f"no {ENGINE_MODULE} on port {port} under gateway pid {gateway_pid}")
    pgid = os.getpgid(pid)
    if pgid in (os.getpgrp(), os.getpgid(gateway_pid)):
        raise KillRefusedError(f"engine pid {pid} shares a process group with the gateway or bench")
    os.killpg(pgid, signal.SIGKILL)
    return {"pid": pid, "pgid": pgid}


# --- the run ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FailoverPlan:
    """How long the load runs and when the engine dies (seconds from the start of the load).

    The load runs at least `min_duration_s`; when the restarted replica is not serving by then
    it goes on until it has served for `after_recovery_s`, but never past `max_duration_s`."""

    concurrency: int = 16
    kill_after_s: float = 20.0
    min_duration_s: float = 90.0
    after_recovery_s: float = 10.0
    max_duration_s: float = 300.0
    poll_interval_s: float = 0.25

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("--failover-concurrency must be at least 1")
        if not 0 < self.kill_after_s < self.min_duration_s <= self.max_duration_s:
            raise ValueError("need 0 < --kill-after-s < --failover-duration-s <= --failover-max-s")
        if self.poll_interval_s <= 0 or self.after_recovery_s < 0:
            raise ValueError("--poll-interval-s must be positive, --after-recovery-s >= 0")

    def should_stop(self, now: float, line: Timeline | None) -> bool:
        if now >= self.max_duration_s:
            return True
        if now < self.min_duration_s or line is None:
            return False
        return line.serving is not None and now >= line.serving + self.after_recovery_s


@dataclass(frozen=True)
class FailoverTargets:
    gateway: str
    engines: tuple[str, ...]
    victim: str


@dataclass
class FailoverRun:
    """What one failover run saw, every time in seconds from the start of the load."""

    records: list[FailoverRecord] = field(default_factory=list)
    raw: list[RequestRecord] = field(default_factory=list)  # for the usual run metrics
    samples: list[Sample] = field(default_factory=list)
    kill_at: float | None = None
    killed: dict[str, int] = field(default_factory=dict)
    end: float = 0.0
    unfinished: int = 0  # requests still running when the wait at the end ran out


async def drive_failover(
    config: LoadConfig,
    payloads: Sequence[tuple[bytes, int]],
    targets: FailoverTargets,
    plan: FailoverPlan,
    kill: Callable[[], dict[str, int]],
) -> FailoverRun:
    """Closed-loop load of (payload, expected output tokens) pairs, cycled, at
    `plan.concurrency`; `kill()` once at `plan.kill_after_s`; polls until the plan says stop."""
    run = FailoverRun()
    start = time.perf_counter()
    stop = asyncio.Event()
    pending = itertools.cycle(payloads)
    pool = ClientPool(None, httpx.Timeout(config.request_timeout_s, connect=10.0))
    headers = {"content-type": "application/json"}
    if config.api_key:
        headers["authorization"] = f"Bearer {config.api_key}"

    async def worker() -> None:
        while not stop.is_set():
            payload, expected = next(pending)
            record = RequestRecord(model=config.model)
            client = pool.acquire()
            try:
                began = time.perf_counter() - start
                await send_one(client, config.url, payload, headers, record)
            finally:
                pool.release(client)
            run.raw.append(record)
            run.records.append(
                FailoverRecord(
                    start=began,
                    end=time.perf_counter() - start,
                    outcome=classify(record, expected),
                    chunks=record.chunks,
                    output_tokens=record.output_tokens,
                    error=record.error,
                )
            )

    async with httpx.AsyncClient(timeout=2.0) as probe:
        poller = asyncio.create_task(_poll(probe, targets, plan, run, start, stop))
        workers = [asyncio.create_task(worker()) for _ in range(plan.concurrency)]
        try:
            await _control(targets, plan, run, start, kill)
        finally:
            stop.set()
            done, late = await asyncio.wait(workers, timeout=config.request_timeout_s)
            for task in late:
                task.cancel()
            run.unfinished = len(late)
            await asyncio.gather(*late, poller, return_exceptions=True)
            await pool.aclose()
            for task in done:
                task.result()  # a bug in the worker surfaces here, not as a silent gap
    run.end = time.perf_counter() - start
    return run


async def _control(
    targets: FailoverTargets,
    plan: FailoverPlan,
    run: FailoverRun,
    start: float,
    kill: Callable[[], dict[str, int]],
) -> None:
    seen: dict[str, float] = {}
    last_report = 0.0
    while True:
        now = time.perf_counter() - start
        if run.kill_at is None and now >= plan.kill_after_s:
            run.kill_at = time.perf_counter() - start
            run.killed = kill()
            _say(f"t={run.kill_at:.1f}s: SIGKILL {targets.victim} (pid {run.killed['pid']})")
        line = (
            timeline(run.samples, run.kill_at, targets.victim) if run.kill_at is not None else None
        )
        if line is not None:
            for event, moment in line.after_kill().items():
                if moment is not None and event not in seen:
                    seen[event] = moment
                    _say(f"t={line.kill + moment:.1f}s: {event.removesuffix('_s')} = {moment:.1f}s")
        if now - last_report >= 10.0:
            last_report = now
            ok = sum(r.outcome == "ok" for r in run.records)
            failed = len(run.records) - ok
            _say(f"t={now:.0f}s: {ok} ok, {failed} failed, c={plan.concurrency}")
        if plan.should_stop(now, line):
            return
        await asyncio.sleep(0.1)


async def _poll(
    client: httpx.AsyncClient,
    targets: FailoverTargets,
    plan: FailoverPlan,
    run: FailoverRun,
    start: float,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        began = time.perf_counter()
        ready, *served = await asyncio.gather(
            _get(client, targets.gateway + "/metrics"),
            *(_get(client, url + "/metrics") for url in targets.engines),
        )
        run.samples.append(
            Sample(
                t=began - start,
                ready=parse_engine_ready(ready) if ready is not None else {},
                served={
                    url: parse_success_total(text) if text is not None else None
                    for url, text in zip(targets.engines, served, strict=True)
                },
            )
        )
        delay = plan.poll_interval_s - (time.perf_counter() - began)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, delay))


async def _get(client: httpx.AsyncClient, url: str) -> str | None:
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def _say(message: str) -> None:
    print(f"[bench] failover {message}", file=sys.stderr)


def records_json(run: FailoverRun) -> dict[str, Any]:
    """The run's raw data, for runs/failover.json."""
    return {
        "kill_at_s": run.kill_at,
        "killed": run.killed,
        "end_s": run.end,
        "unfinished": run.unfinished,
        "requests": [
            {
                "start_s": r.start,
                "end_s": r.end,
                "outcome": r.outcome,
                "chunks": r.chunks,
                "output_tokens": r.output_tokens,
                "error": r.error or None,
            }
            for r in run.records
        ],
        "samples": [{"t_s": s.t, "ready": s.ready, "served": s.served} for s in run.samples],
    }
