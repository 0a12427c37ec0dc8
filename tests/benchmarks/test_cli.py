"""`lorafleet bench`: scenarios by name, common options, defaults per scenario, readme."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lorafleet.benchmarks.cli import add_parser
from lorafleet.benchmarks.scenarios import SCENARIO_NAMES
from lorafleet.benchmarks.scenarios.options import options_from_args
from tests.benchmarks.conftest import FakeServer


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lorafleet")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def test_every_scenario_is_registered() -> None:
    assert set(SCENARIO_NAMES) == {
        "gateway-overhead",
        "vllm-vs-transformers",
        "lora-overhead",
        "adapter-cold-start",
        "sweep",
        "cost",
        "fleet",
        "product",
        "lora-profile",
    }
    for name in SCENARIO_NAMES:
        args = parse(name)
        assert args.bench_scenario == name and callable(args.func)


@pytest.mark.parametrize("name", [*SCENARIO_NAMES, "load", "readme"])
def test_help_renders(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(name, "--help")
    assert "usage:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parse("--help")


def test_defaults_per_scenario() -> None:
    assert parse("gateway-overhead").repeats == 3
    assert parse("sweep").repeats == 1
    assert parse("sweep", "--repeats", "2").repeats == 2
    assert (parse("load").repeats, parse("load").warmup) == (1, 0)


def test_options_from_args() -> None:
    args = parse(
        "sweep",
        "--target",
        "server=http://127.0.0.1:9",
        "--goodput",
        "ttft:500",
        "tpot:50",
        "--percentiles",
        "50,99.9",
        "--out",
        "/tmp/x",
    )
    options = options_from_args("sweep", args)
    assert options.targets == {"server": "http://127.0.0.1:9"}
    assert options.goodput == {"ttft": 500.0, "tpot": 50.0}
    assert options.percentiles == (50.0, 99.9) and options.out_dir == Path("/tmp/x")
    assert options.engine.served_model_name == "smollm2-135m-instruct"


@pytest.mark.parametrize(
    "bad",
    [["--target", "nourl"], ["--target", "x=ftp://h"], ["--repeats", "0"], ["--goodput", "foo:1"]],
)
def test_bad_options(bad: list[str]) -> None:
    with pytest.raises(ValueError, match=r"target|repeats|SLO"):
        options_from_args("sweep", parse("sweep", *bad))


def test_load_command_end_to_end(
    fake_server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "load"
    args = parse(
        "load",
        "--target",
        f"server={fake_server.url}",
        "--model",
        "fake-model",
        "-c",
        "2",
        "--num-prompts",
        "4",
        "--output-len",
        "3",
        "--out",
        str(out),
    )
    assert args.func(args) == 0
    assert {p.name for p in out.iterdir()} >= {
        "result.json",
        "summary.md",
        "throughput.png",
        "latency.png",
        "runs",
    }


def test_scenario_errors_are_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse("load", "--out", str(tmp_path))
    assert args.func(args) == 1
    assert "needs --target server=URL" in capsys.readouterr().err


def test_readme_command(tmp_path: Path) -> None:
    args = parse("readme", str(tmp_path))
    assert args.func(args) == 0 and (tmp_path / "README.md").is_file()
    assert (
        parse("readme", str(tmp_path / "missing")).func(parse("readme", str(tmp_path / "missing")))
        == 2
    )
