"""`lorafleet bench soak` against the fake streaming server: every stream checked and counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorafleet.benchmarks.soak import soak
from lorafleet.cli import main
from tests.benchmarks.conftest import FakeServer


async def test_soak_counts_every_stream_and_finds_nothing_wrong(fake_server: FakeServer) -> None:
    report = await soak(fake_server.url, ["fake-model", "other"], 4, 1.0, report_every_s=0.3)
    assert report["streams"] >= 4
    assert report["outcomes"] == {"ok": report["streams"]}
    assert report["gateway_rss_mib"]["start"] is None  # the fake has no /metrics


def test_the_bench_soak_command_writes_its_report(
    fake_server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "soak.json"
    argv = ["bench", "soak", "--url", fake_server.url, "--models", "fake-model",
            "--concurrency", "2", "--minutes", "0.01", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert set(report["outcomes"]) == {"ok"}
    assert json.loads(capsys.readouterr().out) == report


def test_soak_targets_loopback_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "soak", "--url", "http://example.com:8000", "--minutes", "0.01"]) == 2
    assert "loopback addresses only" in capsys.readouterr().err
