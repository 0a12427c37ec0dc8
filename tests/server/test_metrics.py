"""Bounded `model` labels: many adapters, a fixed number of series, totals that still add up."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from lorafleet.adapters.base_models import model_info
from lorafleet.adapters.registry import REGISTERED, AdapterVersion
from lorafleet.server.app import create_app
from lorafleet.server.lora import AdapterMetrics, LoadState, Placement
from lorafleet.server.metrics import (
    OTHER_ADAPTERS,
    OTHER_TENANTS,
    UNKNOWN_MODEL,
    GatewayMetrics,
    ModelLabels,
)
from lorafleet.server.settings import Settings
from tests.adapter_factory import make_lora_dir
from tests.fake_vllm import MODEL, FakeVLLM
from tests.server.conftest import wait_ready

ENGINE = "http://engine-0:8000"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one metric family (`name` as exported, e.g. `lorafleet:requests_total`)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def label_values(text: str, label: str) -> set[str]:
    return {
        sample.labels[label]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if label in sample.labels
    }


def test_labels_admit_bases_always_and_a_bounded_number_of_adapters() -> None:
    labels = ModelLabels(2, bases=["base-a", "base-b"])
    assert [labels(name) for name in ("x", "base-a", "y", "z", "x", "base-b", "w")] == [
        "x", "base-a", "y", OTHER_ADAPTERS, "x", "base-b", OTHER_ADAPTERS,
    ]  # fmt: skip
    assert labels.admitted == {"x", "y"}
    # Idempotent: a label maps to itself, and the fixed labels take no adapter slot.
    assert labels(OTHER_ADAPTERS) == OTHER_ADAPTERS
    assert ModelLabels(0)(UNKNOWN_MODEL) == UNKNOWN_MODEL
    assert ModelLabels(0)("x") == OTHER_ADAPTERS


def _feed(metrics: GatewayMetrics, adapter_metrics: AdapterMetrics, names: list[str]) -> None:
    """Everything the serving and adapter code label by model, once per name."""
    for name in names:
        label = metrics.model_label(name)
        metrics.requests.labels(label, "200").inc()
        metrics.in_flight.labels(label).inc()
        metrics.in_flight.labels(label).dec()
        metrics.ttft.labels(label).observe(0.05)
        metrics.e2e_latency.labels(label).observe(0.5)
        metrics.record_usage(name, 7, 5)
        adapter_metrics.loaded(name, ENGINE, 0.1)
        version = AdapterVersion(
            name=name, version=1, source="s", path="p", sha256="0" * 64, base_model=MODEL,
            rank=8, alpha=16.0, target_modules=("q_proj",), size_bytes=1, state=REGISTERED,
            created_at=0.0,
        )  # fmt: skip
        adapter_metrics.gone(Placement(version, LoadState.READY), ENGINE, "evicted")


def test_two_thousand_adapters_render_a_bounded_metrics_page() -> None:
    limit = 100
    names = [f"tenant-{i:04d}-adapter" for i in range(2000)]
    metrics = GatewayMetrics([MODEL], max_adapter_labels=limit)
    adapter_metrics = AdapterMetrics(metrics)
    _feed(metrics, adapter_metrics, [MODEL, *names[: limit + 1]])
    at_limit = metrics.render()
    _feed(metrics, adapter_metrics, names[limit + 1 :])
    page = metrics.render().decode()

    models = label_values(page, "model")
    assert models == {MODEL, *names[:limit], OTHER_ADAPTERS}
    assert label_values(page, "adapter") == {MODEL, *names[:limit], OTHER_ADAPTERS}
    # 1,899 more adapters changed numbers only: the same series, about the same bytes.
    assert page.count("\n") == at_limit.decode().count("\n")
    assert len(page) < len(at_limit) * 1.02
    assert len(page) < 1_000_000  # unbounded, this page would be ~20x larger
    requests = samples(page, "lorafleet:requests_total")
    assert sum(requests.values()) == 2001
    assert requests[(("model", OTHER_ADAPTERS), ("status", "200"))] == 2000 - limit
    ready = samples(page, "lorafleet:adapter_ready")
    assert set(ready.values()) == {0.0}  # every load was matched by its unload


@pytest.fixture
def few_labels(settings: Settings, engine: FakeVLLM) -> Iterator[TestClient]:
    limited = settings.model_copy(update={"metrics_max_adapter_labels": 2})
    with TestClient(create_app(limited, transport=engine.transport())) as client:
        wait_ready(client)
        yield client


def test_gateway_reports_many_adapters_under_few_labels(
    few_labels: TestClient, adapter_root: Path, base_model_dir: Path
) -> None:
    client = few_labels
    base = model_info(base_model_dir)
    names = [f"adapter-{i}" for i in range(6)]
    for i, name in enumerate(names):
        source = make_lora_dir(adapter_root / name, base, seed=i, layers=range(1))
        created = client.post("/v1/adapters", json={"name": name, "source": str(source)})
        assert created.status_code == 201, created.text

    sent: Counter[str] = Counter()
    tokens: defaultdict[str, int] = defaultdict(int)
    for round_ in range(2):
        for model in [MODEL, *names]:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2 + round_,
                "stream": bool(round_),
            }
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            sent[model] += 1
            tokens[model] += 2 + round_
    assert client.post(
        "/v1/chat/completions", json={"model": "nope", "messages": []}
    ).status_code in (400, 404)

    page = client.get("/metrics").text
    admitted = set(names[:2])
    assert label_values(page, "model") <= {MODEL, *admitted, OTHER_ADAPTERS, UNKNOWN_MODEL}
    assert label_values(page, "adapter") == {*admitted, OTHER_ADAPTERS}
    requests = samples(page, "lorafleet:requests_total")
    ok = {dict(k)["model"]: v for k, v in requests.items() if dict(k)["status"] == "200"}
    assert ok == {MODEL: 2, names[0]: 2, names[1]: 2, OTHER_ADAPTERS: 8}
    assert sum(ok.values()) == sum(sent.values())
    generated = samples(page, "lorafleet:generation_tokens_total")
    assert sum(generated.values()) == sum(tokens.values())
    assert generated[(("model", OTHER_ADAPTERS),)] == sum(tokens[n] for n in names[2:])
    ttft = samples(page, "lorafleet:time_to_first_token_seconds_count")
    assert ttft[(("model", OTHER_ADAPTERS),)] == 4  # the streamed round only
    ready = samples(page, "lorafleet:adapter_ready")
    assert ready[(("adapter", OTHER_ADAPTERS), ("engine", ENGINE))] == 4
    assert sum(ready.values()) == len(names)
    loads = samples(page, "lorafleet:adapter_loads_total")
    assert sum(loads.values()) == len(names)

    # The long tail keeps its own numbers in the usage table.
    usage = client.get("/v1/usage?group_by=model").json()["data"]
    by_model = {row["model"]: row for row in usage}
    for name in names:
        assert by_model[name]["requests"] == 2
        assert by_model[name]["completion_tokens"] == tokens[name]


def test_tenant_labels_are_bounded_too() -> None:
    metrics = GatewayMetrics(max_tenant_labels=2)
    for tenant in ("a", "b", "c", "d"):
        metrics.record_usage("m", 1, 2, tenant)
        metrics.refused(tenant, "budget_exceeded")
    text = metrics.render().decode()
    tokens = samples(text, "lorafleet:tenant_tokens_total")
    assert {dict(labels)["tenant"] for labels in tokens} == {"a", "b", OTHER_TENANTS}
    assert tokens[(("kind", "completion"), ("tenant", OTHER_TENANTS))] == 4
    refusals = samples(text, "lorafleet:tenant_refusals_total")
    assert refusals[(("code", "budget_exceeded"), ("tenant", OTHER_TENANTS))] == 2
