"""`lorafleet label`: ask an OpenAI-compatible model to label documents with the task's schema.

Each document is one chat request with the court task's system prompt and
`response_format: json_schema` (structured output), at temperature 0, `concurrency` at a time.

Errors, and what happens to the document:
- `RetryableError` (HTTP 429 or 5xx, a connection error or timeout): retried with exponential
  backoff and jitter; a `Retry-After`/`retry-after-ms` header sets the wait instead. After
  `max_attempts` the document is `failed` (not cached: a later run asks again).
- any other HTTP error (400, 401, 404...): the request itself is wrong; `failed` at once.
- an answer that is not schema-valid JSON: `rejected` with the reason, and cached, since it
  was paid for.

The cache (`LabelCache`) holds every answer under the hash of the request with the document
replaced by its sha256 (so: document, prompt, schema, model and sampling settings); a rerun
after an interruption asks only for what is not there, and costs nothing for the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import jsonschema
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from lorafleet.adapters.training.court_task import SYSTEM_PROMPT, label_json_schema
from lorafleet.adapters.training.label_data import Document
from lorafleet.adapters.training.retry_after import retry_after

API_KEY_ENVS = ("LORAFLEET_API_KEY", "OPENAI_API_KEY")
_CACHE_VERSION = 1


class RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestFailedError(Exception):
    """The request cannot succeed as sent, or every attempt failed."""


@dataclass(frozen=True)
class LabelOptions:
    base_url: str
    model: str
    api_key: str | None = None
    concurrency: int = 4
    max_attempts: int = 6
    backoff_s: float = 1.0  # first retry wait, doubling (with jitter) up to max_wait_s
    max_wait_s: float = 120.0  # also the longest Retry-After honoured
    timeout_s: float = 300.0
    max_tokens: int = 512

    def request_body(self, doc: Document) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": doc.text},
            ],
            "temperature": 0,
            "max_tokens": self.max_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "court_label",
                    "schema": label_json_schema(),
                    "strict": True,
                },
            },
        }

    def cache_key(self, doc: Document) -> str:
        body = self.request_body(doc)
        body["messages"][-1]["content"] = doc.sha256
        body["cache_version"] = _CACHE_VERSION
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class LabelCache:
    """One JSON file per answer, written atomically (a killed run leaves no half entry)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            entry: dict[str, Any] = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)


@dataclass
class Outcome:
    """What became of one document: `label` set, or `reason` for a rejection or a failure."""

    doc: Document
    label: dict[str, Any] | None = None
    reason: str | None = None
    raw: str | None = None
    failed: bool = False
    cached: bool = False
    prompt_tokens: int = 0  # paid in this run; 0 for a cached answer
    completion_tokens: int = 0


class Progress(Protocol):
    def update(self, outcome: Outcome) -> None: ...


@dataclass
class Counters:
    requests: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)


def check_answer(content: str | None, finish_reason: str | None) -> tuple[dict[str, Any] | None,
                                                                         str | None]:  # fmt: skip
    """(label, None) for a schema-valid answer, else (None, the reason it is not one)."""
    if finish_reason == "length":
        return None, "truncated: the answer hit max_tokens (finish_reason=length)"
    if not content:
        return None, "empty answer"
    try:
        value = json.loads(content)
    except ValueError as exc:
        return None, f"not JSON: {exc}"
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(label_json_schema()).iter_errors(value)
    )
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "answer"
        return None, f"schema: {where}: {error.message}"
    return value, None


def _wait(options: LabelOptions) -> Any:
    backoff = wait_exponential_jitter(
        multiplier=options.backoff_s, max=options.max_wait_s, jitter=options.backoff_s
    )

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            return min(exc.retry_after, options.max_wait_s)
        return float(backoff(state))

    return wait


async def post_once(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    try:
        response = await client.post("chat/completions", json=body)
    except httpx.TransportError as exc:
        raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableError(f"HTTP {response.status_code}: {response.text[:200]}",
                        retry_after(response))  # fmt: skip
    if response.status_code >= 400:
        raise RequestFailedError(f"HTTP {response.status_code}: {response.text[:300]}")
    try:
        data: dict[str, Any] = response.json()
    except ValueError as exc:
        raise RetryableError(f"unreadable response body: {exc}") from exc
    return data


async def ask(
    client: httpx.AsyncClient, body: dict[str, Any], options: LabelOptions, counters: Counters
) -> dict[str, Any]:
    retrying = AsyncRetrying(
        stop=stop_after_attempt(options.max_attempts), wait=_wait(options),
        retry=retry_if_exception_type(RetryableError), reraise=True,
    )  # fmt: skip
    async for attempt in retrying:
        with attempt:
            counters.requests += 1
            if attempt.retry_state.attempt_number > 1:
                counters.retries += 1
            return await post_once(client, body)
    raise AssertionError("unreachable: tenacity re-raises the last error")


def cache_entry(data: dict[str, Any]) -> dict[str, Any]:
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    usage = data.get("usage") or {}
    return {
        "content": message.get("content"),
        "refusal": message.get("refusal"),
        "finish_reason": choice.get("finish_reason"),
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
        "model": data.get("model"),
    }


async def label_one(
    client: httpx.AsyncClient, doc: Document, options: LabelOptions, cache: LabelCache,
    counters: Counters,
) -> Outcome:  # fmt: skip
    key = options.cache_key(doc)
    entry = cache.get(key)
    outcome = Outcome(doc=doc, cached=entry is not None)
    if entry is None:
        try:
            entry = cache_entry(await ask(client, options.request_body(doc), options, counters))
        except (RetryableError, RequestFailedError) as exc:
            return Outcome(doc=doc, failed=True, reason=f"request failed: {exc}")
        cache.put(key, entry)
        outcome.prompt_tokens, outcome.completion_tokens = (
            entry["prompt_tokens"], entry["completion_tokens"]
        )  # fmt: skip
    outcome.raw = entry.get("content")
    if entry.get("refusal"):
        outcome.reason = f"refused: {entry['refusal']}"
    else:
        outcome.label, outcome.reason = check_answer(outcome.raw, entry.get("finish_reason"))
    return outcome


def resolve_api_key(explicit: str | None) -> str | None:
    return explicit or next((os.environ[e] for e in API_KEY_ENVS if os.environ.get(e)), None)


def make_client(options: LabelOptions) -> httpx.AsyncClient:
    url = options.base_url.rstrip("/")
    url = url if url.endswith("/v1") else url + "/v1"
    key = resolve_api_key(options.api_key)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        base_url=url + "/", headers=headers, timeout=options.timeout_s,
        limits=httpx.Limits(max_connections=options.concurrency),
    )  # fmt: skip


async def label_documents(
    docs: list[Document], options: LabelOptions, cache: LabelCache,
    progress: Progress | None = None, counters: Counters | None = None,
) -> list[Outcome]:  # fmt: skip
    """One outcome per document, in input order."""
    gate = asyncio.Semaphore(options.concurrency)
    counters = counters if counters is not None else Counters()

    async def one(doc: Document) -> Outcome:
        async with gate:
            outcome = await label_one(client, doc, options, cache, counters)
        if progress is not None:
            progress.update(outcome)
        return outcome

    async with make_client(options) as client:
        return list(await asyncio.gather(*(one(doc) for doc in docs)))
