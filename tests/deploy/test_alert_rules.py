"""The chart's PrometheusRule, checked by Prometheus's own `promtool`.

The rules are rendered from the chart (namespace "ml"), written out as a rules file, and run
through `promtool check rules` (syntax, templates) and `promtool test rules` with the cases in
alert_rules.test.yaml (each alert fires when it should, stays quiet when it should). promtool
comes from Debian's `prometheus` package, which .ci/run installs where it is missing.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_helm_chart import DEFAULT_VALUES, NAMESPACE, of_kind, render

HERE = Path(__file__).parent
UNIT_TESTS = HERE / "alert_rules.test.yaml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus; .ci/run does)"
)
ALERTS = {
    "LorafleetEngineNotReady", "LorafleetNoEngineReady", "LorafleetQueueGrowing",
    "LorafleetErrorRatioHigh", "LorafleetTTFTHigh", "LorafleetAdapterLoadFailures",
    "LorafleetRateLimitedSpike", "LorafleetRateLimitFailOpen",
}  # fmt: skip


def rule_spec(**settings: Any) -> dict[str, Any]:
    values = copy.deepcopy(DEFAULT_VALUES)
    values["monitoring"] = {"prometheusRule": {"enabled": True, **settings}}
    (rule,) = of_kind(render(values), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    spec: dict[str, Any] = rule["spec"]
    return spec


def alerts(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in spec["groups"] for rule in group["rules"]}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_are_off_by_default() -> None:
    assert not of_kind(render(DEFAULT_VALUES), "PrometheusRule")


def test_rules_cover_the_promised_alerts_in_the_release_namespace() -> None:
    rules = alerts(rule_spec())
    assert set(rules) == ALERTS
    for name, rule in rules.items():
        assert f'namespace="{NAMESPACE}"' in rule["expr"], name
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["runbook_url"] == f"docs/operations.md#{name.lower()}"
    runbook = (HERE.parents[1] / "docs" / "operations.md").read_text()
    for name in ALERTS:  # each alert has its section (the anchor) in the runbook
        assert f"### {name}\n" in runbook, name


def test_thresholds_come_from_values() -> None:
    rules = alerts(
        rule_spec(errorRatio=0.01, ttftP95Seconds=2.5, waitingRequests=3, rateLimitedRatio=0.5)
    )
    assert rules["LorafleetErrorRatioHigh"]["expr"].rstrip().endswith("> 0.01")
    assert rules["LorafleetTTFTHigh"]["expr"].rstrip().endswith("> 2.5")
    assert ") > 3\n" in rules["LorafleetQueueGrowing"]["expr"]
    assert rules["LorafleetRateLimitedSpike"]["expr"].rstrip().endswith("> 0.5")


@needs_promtool
def test_promtool_check_rules(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_spec()))
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_fire_and_stay_quiet(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_spec()))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    result = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert tested == ALERTS  # every alert has a case in which it fires


@needs_promtool
def test_promtool_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests are really checked: one changed expectation fails them."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_spec()))
    broken = UNIT_TESTS.read_text().replace("p95 of slow is 19.5s", "p95 of slow is 9s")
    (tmp_path / UNIT_TESTS.name).write_text(broken)
    result = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0 and "LorafleetTTFTHigh" in result.stdout + result.stderr
