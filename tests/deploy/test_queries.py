"""Every metric and label the alert rules and the Grafana dashboard query really exists.

The queries are parsed with a PromQL parser (promql-parser); the gateway's metrics are what an
in-process gateway in front of the fake engine exports on /metrics after traffic that touches
every series (a streamed request, an adapter that loads and one that fails, an error, a
tenant's request refused for its budget, Redis away); vLLM's
are the `vllm:*` names and label names declared in the installed vLLM's metrics module.
Labels the Prometheus Operator adds to every scraped series (namespace, pod, ...) count too.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from lorafleet.adapters.base_models import model_info
from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.adapter_factory import make_lora_dir
from tests.deploy.test_helm_chart import CHART, DEFAULT_VALUES, of_kind, render
from tests.fake_vllm import MODEL, FakeVLLM
from tests.server.conftest import SMOL_CONFIG, wait_ready

promql = pytest.importorskip(
    "promql_parser", reason="promql-parser (dev extra, requirements/cpu.lock) is not installed"
)

# Added by the ServiceMonitor's scrape to every series (target labels).
TARGET_LABELS = frozenset(
    {"namespace", "pod", "service", "job", "instance", "container", "endpoint"}
)
# vLLM < 0.10 called the KV cache gauge this; the dashboard falls back to it with `or`.
LEGACY_VLLM = frozenset({"vllm:gpu_cache_usage_perc"})
ADMIN_KEY = "admin-key-0123456789abcdef"
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": "ml"}
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


# --- what exists --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, frozenset[str]]:
    """Sample name -> label names, scraped from a gateway that served some traffic."""
    tmp = tmp_path_factory.mktemp("gateway")
    base = tmp / "base-model"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(SMOL_CONFIG))
    (base / "model.safetensors").write_bytes(b"")
    roots = tmp / "adapters"
    settings = Settings(
        engine_urls=["http://engine-0:8000"], served_model_name=MODEL, model=str(base),
        cache_dir=tmp / "cache", adapter_roots=[roots], health_interval_s=0.05,
        retry_max_wait_s=0.01, redis_url="redis://127.0.0.1:1/0",  # the fail-open counter
        admin_key=SecretStr(ADMIN_KEY), key_secret=SecretStr("s" * 40),
    )  # fmt: skip
    engine = FakeVLLM()
    info = model_info(base)
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with TestClient(create_app(settings, transport=engine.transport())) as client:
        client.headers["authorization"] = f"Bearer {ADMIN_KEY}"
        wait_ready(client)
        key = client.post("/v1/keys", json={"tenant": "acme", "budget_tokens": 1}).json()["key"]
        refused = client.post(
            "/v1/chat/completions", json={"model": MODEL, **chat},
            headers={"authorization": f"Bearer {key}"},
        )  # fmt: skip
        assert refused.status_code == 429
        for name in ("good", "bad"):
            path = make_lora_dir(roots / name, info, layers=range(1), seed=len(name))
            assert client.post("/v1/adapters", json={"name": name, "source": str(path)})
        client.post("/v1/chat/completions", json={"model": MODEL, "stream": True, **chat})
        client.post("/v1/chat/completions", json={"model": "good", **chat})
        engine.fail_loads = True
        client.post("/v1/chat/completions", json={"model": "bad", **chat})
        text = client.get("/metrics").text
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in series.items()}


@cache
def vllm_metrics() -> dict[str, frozenset[str]]:
    """vLLM's metric names -> label names, read from its metrics module's source."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    source = Path(next(iter(spec.submodule_search_locations))) / "v1" / "metrics" / "loggers.py"
    tree = ast.parse(source.read_text())
    base: frozenset[str] = frozenset()
    for node in ast.walk(tree):  # labelnames = ["model_name", "engine"]
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "labelnames" for t in node.targets
        ):
            base = frozenset(ast.literal_eval(node.value))
    found: dict[str, frozenset[str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        name = keywords.get("name")
        if not (isinstance(name, ast.Constant) and str(name.value).startswith("vllm:")):
            continue
        extra: set[str] = set()
        labels = keywords.get("labelnames")
        if isinstance(labels, ast.BinOp) and isinstance(labels.right, ast.List):
            extra = {str(ast.literal_eval(e)) for e in labels.right.elts}
        found[str(name.value)] = base | extra
    return found


def known(name: str, gateway: dict[str, frozenset[str]]) -> frozenset[str] | None:
    """The label names of a queried metric name, or None when no such metric exists."""
    if name.startswith("lorafleet:"):
        return gateway.get(name)
    engine = vllm_metrics()
    if name in engine:
        return engine[name]
    for suffix in SUFFIXES:
        stem = name.removesuffix(suffix)
        if stem != name and stem in engine:
            return engine[stem] | ({"le"} if suffix == "_bucket" else set())
    return None


# --- what is queried ----------------------------------------------------------------------------


def rule_queries() -> list[str]:
    values = copy.deepcopy(DEFAULT_VALUES)
    values["monitoring"] = {"prometheusRule": {"enabled": True}}
    (rule,) = of_kind(render(values), "PrometheusRule")
    return [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_queries() -> list[str]:
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query" and isinstance(query, str):
            # label_values(<selector>, <label>) is Grafana's, not PromQL: check it as
            # `count by (<label>) (<selector>)`, which asks the same of the metric.
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert match, query
            exprs.append(f"count by ({match[2]}) ({match[1]})")
    out = []
    for expr in exprs:
        for name, value in GRAFANA_VARS.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        out.append(expr)
    return out


QUERIES = [("rule", q) for q in rule_queries()] + [("dashboard", q) for q in dashboard_queries()]


def selectors(node: Any) -> Iterator[Any]:
    found: list[Any] = []

    def visit(expr: Any) -> None:
        if isinstance(expr, promql.VectorSelector):
            found.append(expr)

    promql.walk(node, pre_visit=visit)
    return iter(found)


def used_labels(node: Any) -> Iterator[tuple[frozenset[str], Any]]:
    """(labels the query relies on, the subtree whose series must carry them)."""
    pairs: list[tuple[frozenset[str], Any]] = []

    def visit(expr: Any) -> None:
        if isinstance(expr, promql.VectorSelector):
            names = {m.name for m in expr.matchers.matchers} - {"__name__"}
            pairs.append((frozenset(names), expr))
        elif isinstance(expr, promql.AggregateExpr) and expr.modifier is not None:
            pairs.append((frozenset(expr.modifier.labels), expr.expr))
        elif isinstance(expr, promql.BinaryExpr) and expr.modifier and expr.modifier.matching:
            labels = frozenset(expr.modifier.matching.labels)
            pairs.extend([(labels, expr.lhs), (labels, expr.rhs)])

    promql.walk(node, pre_visit=visit)
    return iter(pairs)


# --- the checks ---------------------------------------------------------------------------------


def problems(query: str, gateway: dict[str, frozenset[str]]) -> list[str]:
    """What in `query` names a metric or label that does not exist (empty: all is real)."""
    tree = promql.parse(query)
    names = [s.name for s in selectors(tree)]
    if not names or not all(names):
        return ["a selector without a metric name"]
    found = []
    for name in names:
        if name not in LEGACY_VLLM and known(name, gateway) is None:
            found.append(f"no metric {name}")
    for labels, subtree in used_labels(tree):
        for selector in selectors(subtree):
            exported = known(selector.name, gateway)
            if selector.name in LEGACY_VLLM or exported is None:
                continue
            missing = labels - exported - TARGET_LABELS
            if missing:
                found.append(f"{selector.name} has no label {sorted(missing)}")
    return found


@pytest.mark.parametrize(("where", "query"), QUERIES)
def test_queried_metrics_and_labels_exist(
    where: str, query: str, gateway_series: dict[str, frozenset[str]]
) -> None:
    if "vllm:" in query and not vllm_metrics():
        pytest.skip("vLLM is not installed: its metric names cannot be checked")
    assert problems(query, gateway_series) == [], f"{where} query: {query}"


def test_the_check_knows_real_names_from_made_up_ones(
    gateway_series: dict[str, frozenset[str]],
) -> None:
    """The check is not vacuous: real series are found with their labels, typos are not."""
    assert {"model", "status"} <= (known("lorafleet:requests_total", gateway_series) or set())
    assert {"adapter", "outcome"} <= (
        known("lorafleet:adapter_loads_total", gateway_series) or set()
    )
    assert "lorafleet:rate_limit_fail_open_total" in gateway_series
    assert {"tenant", "code"} <= gateway_series["lorafleet:tenant_refusals_total"]
    assert known("lorafleet:request_total", gateway_series) is None
    wrong = 'sum by (modle) (rate(lorafleet:requests_total{statuz="500"}[5m]))'
    assert sorted(problems(wrong, gateway_series)) == [
        "lorafleet:requests_total has no label ['modle']",
        "lorafleet:requests_total has no label ['statuz']",
    ]
    assert problems("rate(lorafleet:request_total[5m])", gateway_series) == [
        "no metric lorafleet:request_total"
    ]
    if vllm_metrics():
        assert known("vllm:num_requests_waiting", gateway_series) == {"model_name", "engine"}
        assert "le" in (known("vllm:time_to_first_token_seconds_bucket", gateway_series) or set())
        assert known("vllm:num_requests_waitin", gateway_series) is None
