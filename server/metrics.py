"""Gateway metrics in Prometheus format, named to sit beside vLLM's own `vllm:*` series.

One `GatewayMetrics` per app, with its own registry (no module globals), so tests and several
apps in one process never share counters. Label values are bounded: `status` is an HTTP status
code, and `model` (`adapter` on the adapter series) goes through `ModelLabels`: a served base
model id, one of at most `metrics_max_adapter_labels` adapter names, `_other-adapters` for every
further adapter, or `unknown` for names that resolve to nothing (never free text from a client).
A fleet with 10^4 adapters thus exports a few hundred series per histogram, not 10^4 x buckets;
per-adapter numbers for the long tail are in the persisted usage table (`GET /v1/usage`).
The `tenant` label of the per-tenant series is bounded the same way (`_other-tenants`).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

# Buckets in seconds; TTFT on a CPU engine ranges from ~20 ms to many seconds under load.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
UNKNOWN_MODEL = "unknown"
# Adapter names start with a letter or digit (adapters.registration.NAME_PATTERN), so this label
# can never be mistaken for a real adapter's.
OTHER_ADAPTERS = "_other-adapters"
OTHER_TENANTS = "_other-tenants"
_FIXED_LABELS = frozenset({UNKNOWN_MODEL, OTHER_ADAPTERS, OTHER_TENANTS})


class ModelLabels:
    """The `model` label value for a base model or adapter name, from a bounded set.

    Base models are always labelled by their id. Adapter names are admitted first come, first
    served until `max_adapters` of them have a label of their own; every later adapter is
    reported as `OTHER_ADAPTERS`. An admitted name keeps its label for the life of the process:
    a series never moves between labels, so counters stay monotonic and `rate()` stays right
    (a restart admits afresh). Mapping is idempotent: fixed labels map to themselves.
    """

    def __init__(
        self, max_adapters: int, bases: Iterable[str] = (), other: str = OTHER_ADAPTERS
    ) -> None:
        self.max_adapters = max_adapters
        self._bases = frozenset(bases)
        self._admitted: set[str] = set()
        self._other = other

    def __call__(self, model: str) -> str:
        if model in self._bases or model in self._admitted or model in _FIXED_LABELS:
            return model
        if len(self._admitted) < self.max_adapters:
            self._admitted.add(model)
            return model
        return self._other

    @property
    def admitted(self) -> frozenset[str]:
        """Adapter names that have a label of their own."""
        return frozenset(self._admitted)


class GatewayMetrics:
    def __init__(
        self,
        base_models: Iterable[str] = (),
        *,
        max_adapter_labels: int = 100,
        max_tenant_labels: int = 100,
    ) -> None:
        self.models = ModelLabels(max_adapter_labels, base_models)
        self.tenants = ModelLabels(max_tenant_labels, other=OTHER_TENANTS)
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu seconds
        self.requests = Counter(
            "lorafleet:requests",
            "Inference requests answered, by model and HTTP status.",
            ["model", "status"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "lorafleet:requests_in_flight",
            "Inference requests being served now.",
            ["model"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "lorafleet:time_to_first_token_seconds",
            "Time from request arrival at the gateway to the first streamed token.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.e2e_latency = Histogram(
            "lorafleet:e2e_request_latency_seconds",
            "Time from request arrival at the gateway to the end of its answer.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "lorafleet:prompt_tokens",
            "Prompt tokens processed, from the engine's usage report.",
            ["model"],
            registry=self.registry,
        )
        self.generation_tokens = Counter(
            "lorafleet:generation_tokens",
            "Completion tokens generated, from the engine's usage report.",
            ["model"],
            registry=self.registry,
        )
        self.routing = Counter(
            "lorafleet:routing_decisions",
            "Replica choices for adapter requests: warm (adapter already loaded there) or cold.",
            ["outcome"],
            registry=self.registry,
        )
        self.engine_ready = Gauge(
            "lorafleet:engine_ready",
            "1 when the engine replica answers its health check.",
            ["base_model", "engine"],
            registry=self.registry,
        )
        # Join it on `model` to see any per-model series by base model (group_left(base_model)).
        self.model_base = Gauge(
            "lorafleet:model_base_model",
            "1 for each `model` label value and the base model it runs on.",
            ["model", "base_model"],
            registry=self.registry,
        )
        self.pool_in_flight = Gauge(
            "lorafleet:pool_requests_in_flight",
            "Requests in flight on a base model's engine pool (adapters included).",
            ["base_model"],
            registry=self.registry,
        )

        self.tenant_tokens = Counter(
            "lorafleet:tenant_tokens",
            "Tokens per tenant (kind: prompt or completion), from the engine's usage report.",
            ["tenant", "kind"],
            registry=self.registry,
        )
        self.tenant_refusals = Counter(
            "lorafleet:tenant_refusals",
            "Requests refused with 429 before reaching an engine, per tenant and error code "
            "(rate_limit_exceeded, budget_exceeded, queue_full).",
            ["tenant", "code"],
            registry=self.registry,
        )

    def model_label(self, model: str) -> str:
        """The bounded `model` label for a base model or adapter name (see `ModelLabels`)."""
        return self.models(model)

    def record_usage(
        self, model: str, prompt_tokens: int, completion_tokens: int, tenant: str | None = None
    ) -> None:
        label = self.models(model)
        self.prompt_tokens.labels(label).inc(prompt_tokens)
        self.generation_tokens.labels(label).inc(completion_tokens)
        if tenant is not None:
            tenant_label = self.tenants(tenant)
            self.tenant_tokens.labels(tenant_label, "prompt").inc(prompt_tokens)
            self.tenant_tokens.labels(tenant_label, "completion").inc(completion_tokens)

    def refused(self, tenant: str, code: str | None) -> None:
        self.tenant_refusals.labels(self.tenants(tenant), code or "rate_limit_exceeded").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
