"""The `fleet` scenario without engines: arguments, the failover plan, finding the engine to
kill, the failover driver against the in-process fake server, the summary and the plot."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest

from lorafleet.benchmarks.chaos import (
    FailoverPlan,
    FailoverTargets,
    KillRefusedError,
    ProcInfo,
    drive_failover,
    engine_port,
    find_engine,
    kill_engine,
    read_processes,
)
from lorafleet.benchmarks.cli import add_parser
from lorafleet.benchmarks.datasets import RequestSpec
from lorafleet.benchmarks.failover import Timeline, summarize
from lorafleet.benchmarks.loadgen import LoadConfig, build_payload, run_async
from lorafleet.benchmarks.scenarios import fleet, fleet_report
from lorafleet.benchmarks.scenarios.base import ScenarioError
from tests.benchmarks.conftest import FakeServer


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lorafleet")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", "fleet", *argv])


def test_defaults() -> None:
    args = parse()
    assert fleet.concurrencies(args) == [32, 64]
    assert fleet.failover_plan(args) == FailoverPlan(
        concurrency=16, kill_after_s=20.0, min_duration_s=90.0, max_duration_s=300.0
    )
    assert (args.victim, args.lora, args.health_interval_s) == (0, True, None)
    workload = fleet.workload_for(args, 32)
    assert (workload.num_requests, workload.concurrency, workload.output_len) == (64, 32, 32)


def test_options() -> None:
    args = parse(
        "--concurrencies", "8,16", "--failover-concurrency", "4", "--kill-after-s", "5",
        "--failover-duration-s", "30", "--failover-max-s", "60", "--victim", "1", "--no-lora",
    )  # fmt: skip
    assert fleet.concurrencies(args) == [8, 16]
    plan = fleet.failover_plan(args)
    assert (plan.concurrency, plan.kill_after_s, plan.min_duration_s) == (4, 5.0, 30.0)
    assert (args.victim, args.lora) == (1, False)


@pytest.mark.parametrize(
    "bad",
    [
        ["--concurrencies", "0,8"],
        ["--concurrencies", "x"],
        ["--kill-after-s", "100"],  # after the minimum duration
        ["--failover-duration-s", "400"],  # past the hard stop
        ["--failover-concurrency", "0"],
        ["--poll-interval-s", "0"],
        ["--skip-throughput", "--skip-failover"],
    ],
)
def test_bad_options(bad: list[str]) -> None:
    args = parse(*bad)
    with pytest.raises(ScenarioError):
        fleet.checked(args)


def test_plan_stops_after_recovery_or_at_the_hard_stop() -> None:
    plan = FailoverPlan(kill_after_s=20, min_duration_s=90, after_recovery_s=10, max_duration_s=300)
    back = Timeline(kill=20.0, serving=85.0)
    assert not plan.should_stop(50.0, None)
    assert not plan.should_stop(89.0, back)  # before the minimum
    assert not plan.should_stop(94.0, back)  # serving again, but not for 10 s yet
    assert plan.should_stop(95.0, back)
    assert plan.should_stop(90.0, Timeline(kill=20.0, serving=40.0))
    assert not plan.should_stop(200.0, Timeline(kill=20.0))  # not recovered: keep watching
    assert plan.should_stop(300.0, Timeline(kill=20.0))


ENGINE = ("/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "m", "--port")


def test_engine_port() -> None:
    assert engine_port([*ENGINE, "8101"]) == 8101
    assert engine_port([*ENGINE]) is None
    assert engine_port(["python", "-m", "lorafleet.cli", "serve", "--port", "8000"]) is None


def test_find_engine_among_the_gateways_descendants() -> None:
    processes = [
        ProcInfo(10, 1, ("python", "-m", "lorafleet.cli", "serve")),  # the gateway
        ProcInfo(20, 10, (*ENGINE, "8101")),  # engine-0
        ProcInfo(21, 20, (*ENGINE, "8101")),  # its forked engine core: same command line
        ProcInfo(30, 10, (*ENGINE, "8102")),  # engine-1
        ProcInfo(40, 1, (*ENGINE, "8101")),  # someone else's engine on the same port
    ]
    assert find_engine(processes, root=10, port=8101) == 20
    assert find_engine(processes, root=10, port=8102) == 30
    assert find_engine(processes, root=10, port=8103) is None
    assert find_engine(processes, root=99, port=8101) is None


def test_read_processes_sees_this_one() -> None:
    me = next(p for p in read_processes() if p.pid == os.getpid())
    assert me.ppid == os.getppid() and me.argv


def test_kill_engine_refuses_without_an_engine() -> None:
    with pytest.raises(KillRefusedError, match="no vllm"):
        kill_engine(os.getpid(), port=1)


def test_drive_failover_against_a_fake_server(fake_server: FakeServer) -> None:
    """The whole driver on a fast fake: load, one kill call, polls, records on one clock."""
    config = LoadConfig(base_url=fake_server.url, model="fake-model", concurrency=4)
    specs = [RequestSpec(prompt=f"p {i}", output_len=3, prompt_len=2) for i in range(8)]
    payloads = [(build_payload(config, spec, "fake-model"), 3) for spec in specs]
    targets = FailoverTargets(fake_server.url, (fake_server.url,), fake_server.url)
    plan = FailoverPlan(
        concurrency=4, kill_after_s=0.3, min_duration_s=0.8, max_duration_s=1.0,
        poll_interval_s=0.1,
    )  # fmt: skip
    kills: list[float] = []

    def kill() -> dict[str, int]:
        kills.append(1.0)
        return {"pid": 0, "pgid": 0}

    run = run_async(drive_failover(config, payloads, targets, plan, kill))
    assert len(kills) == 1 and run.kill_at is not None and 0.3 <= run.kill_at < 0.6
    assert run.records and all(r.outcome == "ok" for r in run.records)
    assert all(0 <= r.start < r.end <= run.end for r in run.records)
    assert 0.9 <= run.end < 3.0 and run.unfinished == 0
    assert len(run.samples) >= 5  # the fake has no /metrics: nothing parsed, nothing fails
    assert all(s.served == {fake_server.url: None} for s in run.samples)


def outage_summary() -> dict[str, Any]:
    from tests.benchmarks.test_failover import RECORDS, VICTIM, samples_for_outage

    summary = summarize(RECORDS, samples_for_outage(), kill=10.0, victim=VICTIM, end=50.0)
    return summary | {
        "gateway": "http://127.0.0.1:8000",
        "victim": VICTIM,
        "engines": [VICTIM, "http://127.0.0.1:8102"],
        "killed": {"pid": 123, "pgid": 123},
        "concurrency": 16,
        "plan": {"poll_interval_s": 0.25},
        "duration_s": 50.0,
        "workload": "random in=64 out=32 tok, c=16, completions",
        "served_per_s": {
            VICTIM: [2.0, None, 3.0] + [1.0] * 47,
            "http://127.0.0.1:8102": [4.0] * 50,
        },
    }


def test_failover_headline_and_section() -> None:
    summary = outage_summary()
    rows = {row["measure"]: row for row in fleet_report.failover_headline(summary)}
    streams = rows["failover (c=16): streams on the killed replica that failed"]
    assert (streams["value"], streams["meets_bar"]) == (3, False)  # one was truncated
    assert rows["failover (c=16): requests not yet streaming that failed"]["value"] == 2
    assert rows["failover: kill -> restarted replica serving requests"]["value"] == 33.0
    assert rows["failover: kill -> replica ejected by the gateway"]["value"] == 0.5
    text = "\n".join(fleet_report.failover_section(summary))
    assert "| gateway marks it healthy (engine_ready 1) | 42.00 | +32.00 |" in text
    assert "| in flight at the kill | 1 | 2 | 1 |" in text
    summary["timeline"] |= {"serving": None, "time_to_serving_s": None}
    rows = {row["measure"] for row in fleet_report.failover_headline(summary)}
    assert "failover: kill -> restarted replica serving requests" not in rows
    assert "| restarted engine finished a request | not seen | - |" in "\n".join(
        fleet_report.failover_section(summary)
    )


def test_failover_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = {"failover": outage_summary(), "machine": {"cpu_model": "x"}, "date": "2026-11-28"}
    paths = fleet.plots(result, tmp_path)
    assert [p.name for p in paths] == ["failover.png"]
    assert paths[0].stat().st_size > 10_000
