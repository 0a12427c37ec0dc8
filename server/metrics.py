"""Gateway metrics in Prometheus format, named to sit beside vLLM's own `vllm:*` series.

One `GatewayMetrics` per app, with its own registry (no module globals), so tests and several
apps in one process never share counters. Label values are bounded: `model` is a served base
model or registered adapter name (never free text from a client: unknown names are counted
as `model="unknown"`), `status` is an HTTP status code.
"""

from __future__ import annotations

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


class GatewayMetrics:
    def __init__(self) -> None:
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

    def record_usage(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.generation_tokens.labels(model).inc(completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
