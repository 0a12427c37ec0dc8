"""The load generator: what it sends, what it measures, how it fails."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Callable
from itertools import pairwise

import httpx
import orjson
import pytest

from lorafleet.benchmarks.datasets import RequestSpec, random_dataset
from lorafleet.benchmarks.loadgen import (
    LoadConfig,
    arrival_offsets,
    assign_models,
    build_payload,
    run_async,
    run_load,
)
from lorafleet.benchmarks.metrics import compute_metrics, percentile
from tests.benchmarks.conftest import FakeServer

SPECS = [RequestSpec(prompt="a b c", output_len=3, prompt_len=3)]


def sse(*events: dict[str, object] | str) -> list[bytes]:
    return [
        b"data: " + (e.encode() if isinstance(e, str) else orjson.dumps(e)) + b"\n\n"
        for e in events
    ]


def token(text: str = " x") -> dict[str, object]:
    return {"choices": [{"index": 0, "text": text, "finish_reason": None}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3}}


def transport(
    chunks: list[bytes],
    status: int = 200,
    seen: list[dict[str, object]] | None = None,
    gap_s: float = 0.0,
) -> httpx.MockTransport:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            if gap_s:
                await asyncio.sleep(gap_s)
            yield chunk

    async def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(orjson.loads(request.content))
        return httpx.Response(status, content=body(), headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handler)


def run(config: LoadConfig, specs: list[RequestSpec], mock: httpx.MockTransport) -> list[object]:
    return asyncio.run(run_load(config, specs, transport=mock)).records  # type: ignore[return-value]


def config(**kwargs: object) -> LoadConfig:
    return LoadConfig(
        **{
            "base_url": "http://fake",
            "model": "base",
            "concurrency": 2,
            "progress": False,
            **kwargs,
        }
    )  # type: ignore[arg-type]


def test_measures_configured_ttft_and_itl(fake_server: FakeServer) -> None:
    specs = random_dataset(12, input_len=8, output_len=10, seed=0)
    load = LoadConfig(base_url=fake_server.url, model="fake-model", concurrency=4, progress=False)
    result = run_async(run_load(load, specs))
    records = result.records
    assert all(r.success for r in records), [r.error for r in records]
    assert all(r.chunks == 10 and r.output_tokens == 10 and r.usage_reported for r in records)
    assert all(r.prompt_len == 8 for r in records)  # the fake counts words; the server's count wins
    ttft = percentile([r.ttft for r in records], 50)
    itl = percentile([gap for r in records for gap in r.itl], 50)
    assert fake_server.ttft_s - 0.002 <= ttft <= fake_server.ttft_s + 0.04
    assert itl == pytest.approx(fake_server.itl_s, abs=0.008)
    metrics = compute_metrics(records, result.duration)
    # TPOT = (E2EL - TTFT) / (tokens - 1) equals the configured gap
    assert metrics["median_tpot_ms"] == pytest.approx(fake_server.itl_s * 1000, abs=6)
    assert result.generator_cpu_s > 0 and result.not_sent == 0


def test_chat_endpoint_against_fake(fake_server: FakeServer) -> None:
    load = LoadConfig(
        base_url=fake_server.url, model="fake-model", endpoint="chat", concurrency=2, progress=False
    )
    records = run_async(
        run_load(load, random_dataset(2, input_len=4, output_len=3, seed=0))
    ).records
    assert all(
        r.success and r.output_tokens == 3 and r.generated_chars == len(" tok") * 3 for r in records
    )


def test_payload_fields_and_adapter_round_robin() -> None:
    seen: list[dict[str, object]] = []
    specs = [RequestSpec(prompt=f"p{i}", output_len=5) for i in range(4)]
    run(config(adapters=("a1", "a2")), specs, transport(sse(token(), USAGE, "[DONE]"), seen=seen))
    assert sorted(str(body["model"]) for body in seen) == ["a1", "a1", "a2", "a2"]
    body = seen[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 5 and body["min_tokens"] == 5 and body["ignore_eos"] is True
    assert body["temperature"] == 0.0


def test_hosted_api_payload_has_no_vllm_fields() -> None:
    spec = RequestSpec(prompt="hi", output_len=5)
    body = orjson.loads(
        build_payload(config(endpoint="chat", ignore_eos=False, temperature=None), spec, "gpt")
    )
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["max_completion_tokens"] == 5
    assert not {"ignore_eos", "min_tokens", "temperature", "max_tokens"} & set(body)


def test_random_assignment_is_seeded() -> None:
    load = config(adapters=("a", "b", "c"), adapter_assignment="random", seed=4)
    first = assign_models(load, 50)
    assert first == assign_models(load, 50) and set(first) == {"a", "b", "c"}
    assert assign_models(config(), 2) == ["base", "base"]


def test_usage_sets_token_counts_and_split_chunks_parse() -> None:
    raw = b"".join(sse(token(" a"), token(" b"), token(" c"), USAGE, "[DONE]"))
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]  # events cut mid-JSON
    (record,) = run(config(), SPECS, transport(pieces))
    assert record.success and record.chunks == 3 and record.output_tokens == 3  # type: ignore[attr-defined]
    assert record.prompt_len == 3 and len(record.itl) == 2  # type: ignore[attr-defined]


def test_without_usage_counts_chunks() -> None:
    (record,) = run(config(), SPECS, transport(sse(token(), token(), "[DONE]")))
    assert record.success and record.output_tokens == 2 and not record.usage_reported  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("chunks", "status", "match"),
    [
        ([b'{"error": {"message": "nope"}}'], 404, "HTTP 404: .*nope"),
        (
            sse(token(), {"error": {"message": "engine died"}}, "[DONE]"),
            200,
            "stream error: .*engine died",
        ),
        (sse(USAGE, "[DONE]"), 200, "no token chunk"),
        ([b"data: {not json\n\n"], 200, "JSONDecodeError"),
    ],
)
def test_failures_are_recorded_not_raised(chunks: list[bytes], status: int, match: str) -> None:
    (record,) = run(config(), SPECS, transport(chunks, status=status))
    assert not record.success  # type: ignore[attr-defined]
    assert re.search(match, record.error)  # type: ignore[attr-defined]


def test_connection_refused_is_a_failed_request() -> None:
    load = LoadConfig(base_url="http://127.0.0.1:9", model="m", concurrency=1, progress=False)
    records = run_async(run_load(load, SPECS)).records
    assert not records[0].success and "ConnectError" in records[0].error


def test_time_limit_cancels_in_flight_and_unsent() -> None:
    slow = transport(sse(token(), token(), "[DONE]"), gap_s=1.0)
    specs = SPECS * 3
    result = asyncio.run(run_load(config(concurrency=1, time_limit_s=0.3), specs, transport=slow))
    assert [r.success for r in result.records] == [False, False, False]
    assert "time limit" in result.records[0].error and result.duration < 1.0


def test_open_loop_limits_unsent_requests_by_time() -> None:
    result = asyncio.run(
        run_load(
            config(concurrency=None, request_rate=2.0, time_limit_s=0.6),
            SPECS * 10,
            transport=transport(sse(token(), USAGE, "[DONE]")),
        )
    )
    assert result.not_sent >= 7
    assert sum(r.success for r in result.records) == 10 - result.not_sent


def test_arrival_offsets() -> None:
    assert arrival_offsets(3, math.inf, 1.0, 0) == [0.0, 0.0, 0.0]
    poisson = arrival_offsets(100, 10.0, 1.0, seed=3)
    assert poisson == arrival_offsets(100, 10.0, 1.0, seed=3)
    assert poisson[-1] == pytest.approx(10.0)  # rescaled to count / rate, as vLLM does
    assert all(b >= a for a, b in pairwise(poisson))
    assert arrival_offsets(4, 2.0, math.inf, 0) == pytest.approx([0.5, 1.0, 1.5, 2.0])
    bursty = arrival_offsets(200, 10.0, 0.2, seed=1)
    gaps = [b - a for a, b in pairwise(bursty)]
    regular = arrival_offsets(200, 10.0, 5.0, seed=1)
    regular_gaps = [b - a for a, b in pairwise(regular)]
    assert max(gaps) > max(regular_gaps)  # lower shape: burstier


@pytest.mark.parametrize(
    "make",
    [
        lambda: LoadConfig(base_url="x", model="m"),
        lambda: LoadConfig(base_url="x", model="m", concurrency=0),
        lambda: LoadConfig(base_url="x", model="m", request_rate=-1, concurrency=1),
    ],
)
def test_config_validation(make: Callable[[], LoadConfig]) -> None:
    with pytest.raises(ValueError, match=r"concurrency|rate"):
        make()
