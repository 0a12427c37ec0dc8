"""The load generator: streams OpenAI requests at an endpoint and times every chunk.

    result = asyncio.run(run_load(LoadConfig(base_url=url, model="m", concurrency=8), specs))

Load shapes (the same knobs as `vllm bench serve`):
- closed loop: `concurrency=C`, `request_rate=inf`: C requests in flight, the next one starts
  when one ends;
- open loop: `request_rate=R` (req/s) with Poisson (`burstiness=1`) or gamma arrivals, optionally
  capped by `concurrency`.

Timing follows vLLM's request functions: TTFT is the time to the first chunk carrying a choice,
ITL every gap between such chunks, latency the time to the last one; token counts come from the
server's `usage` (`stream_options.include_usage`). The hot loop is plain httpx + orjson with a
bytes-level SSE splitter (the gateway's own, lorafleet/sse.py): no SDK objects per chunk. Every
run is bounded by its request count and by `time_limit_s`; what is still in flight at the limit is
cancelled and counted as failed.
"""

from __future__ import annotations

import asyncio
import math
import random
import resource
import ssl
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import orjson

from lorafleet.benchmarks.datasets import RequestSpec
from lorafleet.sse import SSESplitter, event_data

Endpoint = Literal["completions", "chat"]
_T = TypeVar("_T")
_PATHS: dict[str, str] = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


@dataclass(frozen=True)
class LoadConfig:
    base_url: str
    model: str
    endpoint: Endpoint = "completions"
    concurrency: int | None = None  # None: no cap (open loop only)
    request_rate: float = math.inf  # requests/s; inf sends everything at once
    burstiness: float = 1.0  # gamma shape; 1 = Poisson
    adapters: tuple[str, ...] = ()  # model names to spread requests over, else `model`
    adapter_assignment: Literal["round-robin", "random"] = "round-robin"
    ignore_eos: bool = True  # vLLM-only fields: ignore_eos + min_tokens fix the output length
    temperature: float | None = 0.0
    extra_body: dict[str, Any] = field(default_factory=dict)
    api_key: str | None = None
    seed: int = 0
    time_limit_s: float = 600.0
    request_timeout_s: float = 300.0
    progress: bool = True
    label: str = ""

    def __post_init__(self) -> None:
        if self.concurrency is None and math.isinf(self.request_rate):
            raise ValueError("a closed loop needs a concurrency; an open loop a request rate")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.request_rate <= 0 or self.burstiness <= 0:
            raise ValueError("request_rate and burstiness must be positive")

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + _PATHS[self.endpoint]


@dataclass
class RequestRecord:
    """One request's measurements; field names follow vLLM's `RequestFuncOutput`."""

    model: str = ""
    success: bool = False
    latency: float = 0.0  # seconds, request sent -> last token chunk
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_len: int = 0
    start_time: float = 0.0  # perf_counter when sent
    client_queue_time: float = 0.0  # waiting for a concurrency slot
    chunks: int = 0  # token-carrying SSE events seen
    usage_reported: bool = False
    generated_chars: int = 0
    error: str = ""


@dataclass
class LoadResult:
    config: LoadConfig
    records: list[RequestRecord]
    duration: float
    started_at: str  # ISO wall-clock time the run began
    generator_cpu_s: float  # this process's CPU seconds during the run (user + system)
    generator_max_rss_mb: float
    not_sent: int = 0  # requests never sent because the time limit came first


def arrival_offsets(count: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """Seconds from the start at which each request is due. Gamma-distributed gaps with mean
    1/rate (shape = burstiness; 1 is Poisson), rescaled so the last is due at count/rate, as
    vLLM does to keep runs with different seeds comparable."""
    if math.isinf(rate):
        return [0.0] * count
    rng = random.Random(seed)
    offsets: list[float] = []
    total = 0.0
    for _ in range(count):
        gap = (
            1.0 / rate
            if math.isinf(burstiness)
            else rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
        )
        total += gap
        offsets.append(total)
    if total > 0:
        scale = (count / rate) / total
        offsets = [offset * scale for offset in offsets]
    return offsets


def assign_models(config: LoadConfig, count: int) -> list[str]:
    if not config.adapters:
        return [config.model] * count
    if config.adapter_assignment == "round-robin":
        return [config.adapters[i % len(config.adapters)] for i in range(count)]
    rng = random.Random(config.seed + 1)
    return [rng.choice(config.adapters) for _ in range(count)]


def build_payload(config: LoadConfig, spec: RequestSpec, model: str) -> bytes:
    body: dict[str, Any] = {"model": model}
    if config.endpoint == "chat":
        body["messages"] = spec.chat_messages()
        body["max_completion_tokens"] = spec.output_len
    else:
        body["prompt"] = spec.prompt
        body["max_tokens"] = spec.output_len
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    if config.temperature is not None:
        body["temperature"] = config.temperature
    if config.ignore_eos:
        body["ignore_eos"] = True
        body["min_tokens"] = spec.output_len
    body.update(config.extra_body)
    return orjson.dumps(body)


async def send_one(
    client: httpx.AsyncClient,
    url: str,
    payload: bytes,
    headers: dict[str, str],
    record: RequestRecord,
) -> None:
    """Send one streamed request and fill `record`; never raises (errors land in the record)."""
    start = record.start_time = time.perf_counter()
    last = start
    try:
        async with client.stream("POST", url, content=payload, headers=headers) as response:
            if response.status_code != 200:
                body = await response.aread()
                record.error = f"HTTP {response.status_code}: {body[:300].decode(errors='replace')}"
                return
            splitter = SSESplitter()
            async for chunk in response.aiter_bytes():
                now = time.perf_counter()
                for data in map(event_data, splitter.feed(chunk)):
                    if data is None or data == b"[DONE]":
                        continue
                    event = orjson.loads(data)
                    if event.get("choices"):
                        if record.chunks:
                            record.itl.append(now - last)
                        else:
                            record.ttft = now - start
                        last = now
                        record.chunks += 1
                        record.generated_chars += _text_length(event["choices"][0])
                    elif event.get("error"):
                        record.error = f"stream error: {str(event['error'])[:300]}"
                    if usage := event.get("usage"):
                        record.output_tokens = int(usage.get("completion_tokens") or 0)
                        record.prompt_len = int(usage.get("prompt_tokens") or record.prompt_len)
                        record.usage_reported = True
    except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
        return
    record.latency = last - start
    if not record.chunks and not record.error:
        record.error = "no token chunk received"
    if not record.usage_reported:
        record.output_tokens = record.chunks  # servers without usage: one token per chunk
    record.success = not record.error


def _text_length(choice: dict[str, Any]) -> int:
    text = choice.get("text")
    if text is None:
        text = (choice.get("delta") or {}).get("content")
    return len(text) if isinstance(text, str) else 0


def _headers(config: LoadConfig) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if config.api_key:
        headers["authorization"] = f"Bearer {config.api_key}"
    return headers


def run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine on uvloop when installed (about a third less CPU per chunk), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: _T = uvloop.run(coro)
    return result


class ClientPool:
    """One single-connection httpx client per in-flight request, reused: O(1) checkout.

    httpx's shared pool rescans every connection each time a request starts or ends (quadratic
    in the concurrency); at c=64 that bookkeeping cost more CPU than parsing the stream."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None, timeout: httpx.Timeout) -> None:
        self._transport = transport
        self._timeout = timeout
        self._ssl = ssl.create_default_context()  # loading CA certs once, not per client (~0.1 s)
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []

    def acquire(self) -> httpx.AsyncClient:
        if self._idle:
            return self._idle.pop()
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        client = httpx.AsyncClient(
            transport=self._transport, limits=limits, timeout=self._timeout, verify=self._ssl
        )
        self._all.append(client)
        return client

    def release(self, client: httpx.AsyncClient) -> None:
        self._idle.append(client)

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self._all), return_exceptions=True)


async def run_load(
    config: LoadConfig,
    specs: Sequence[RequestSpec],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LoadResult:
    """Run one load pass over `specs` and return every request's record."""
    if not specs:
        raise ValueError("no requests to send")
    from tqdm import tqdm

    models = assign_models(config, len(specs))
    pairs = list(zip(specs, models, strict=True))
    payloads = [build_payload(config, spec, model) for spec, model in pairs]
    records = [
        RequestRecord(model=model, prompt_len=max(spec.prompt_len, 0)) for spec, model in pairs
    ]
    offsets = arrival_offsets(len(specs), config.request_rate, config.burstiness, config.seed)
    headers = _headers(config)
    slots = asyncio.Semaphore(config.concurrency or len(specs))
    clients = ClientPool(transport, httpx.Timeout(config.request_timeout_s, connect=10.0))
    bar = tqdm(
        total=len(specs), desc=config.label or "requests", disable=not config.progress, leave=False
    )

    async def one(record: RequestRecord, payload: bytes, due: float) -> None:
        async with slots:
            client = clients.acquire()
            try:
                await send_one(client, config.url, payload, headers, record)
            finally:
                clients.release(client)
        record.client_queue_time = record.start_time - due
        bar.update(1)

    cpu0, wall_start = time.process_time(), time.time()
    start = time.perf_counter()
    deadline = start + config.time_limit_s
    tasks: list[asyncio.Task[None]] = []
    try:
        for record, payload, offset in zip(records, payloads, offsets, strict=True):
            if start + offset > deadline:
                break
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(record, payload, time.perf_counter())))
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        duration = time.perf_counter() - start
        cpu_s = time.process_time() - cpu0
        bar.close()
        await clients.aclose()
    for record in records[len(tasks) :]:
        record.error = "not sent: time limit reached"
    for task, record in zip(tasks, records, strict=False):
        if task.cancelled():
            record.success, record.error = False, "cancelled: time limit reached"
    return LoadResult(
        config=config,
        records=records,
        duration=duration,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(wall_start)),
        generator_cpu_s=cpu_s,
        generator_max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        not_sent=len(specs) - len(tasks),
    )
