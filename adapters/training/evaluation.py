"""`lorafleet eval`: run an extraction dataset through any OpenAI-compatible endpoint.

Each example's prompt (every message before the gold assistant answer) is sent with the
official `openai` SDK, temperature 0, `concurrency` requests at a time; the answer is scored
against the gold JSON by `metrics.score`. The same code measures the gateway (base model or an
adapter by name), a bare vLLM, or a hosted API.

A failed request is recorded (counted in `errors`, scored as no answer), never dropped: a
report always covers every example.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorafleet.adapters.training.data import DatasetError, load_jsonl
from lorafleet.adapters.training.metrics import latency_summary, score

API_KEY_ENVS = ("LORAFLEET_API_KEY", "OPENAI_API_KEY")


@dataclass(frozen=True)
class EvalItem:
    messages: list[dict[str, str]]
    gold: dict[str, Any]


@dataclass
class Answer:
    text: str | None = None
    latency_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass(frozen=True)
class EvalOptions:
    target: str
    model: str
    concurrency: int = 4
    max_tokens: int = 256
    timeout_s: float = 900.0  # a loaded CPU engine answering 32 requests at once is slow
    api_key: str | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    # e.g. {"type": "json_schema", "json_schema": {...}}: vLLM constrains decoding to it
    response_format: dict[str, Any] | None = None


def load_items(path: Path, limit: int | None = None) -> list[EvalItem]:
    """Examples whose answer (the completion) is a JSON object: the gold label."""
    dataset = load_jsonl(path)
    items = []
    for number, row in enumerate(dataset.rows[:limit] if limit else dataset.rows, start=1):
        prompt, completion = row["prompt"], row["completion"]
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        answer = completion[-1]["content"] if isinstance(completion, list) else completion
        try:
            gold = json.loads(answer)
        except ValueError as exc:
            raise DatasetError(
                f"{path.name}: example {number}: answer is not JSON ({exc})"
            ) from exc
        if not isinstance(gold, dict):
            raise DatasetError(f"{path.name}: example {number}: answer is not a JSON object")
        items.append(EvalItem(messages=messages, gold=gold))
    return items


def base_url(target: str) -> str:
    url = target.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def make_client(options: EvalOptions) -> Any:
    from openai import AsyncOpenAI

    key = options.api_key or next((os.environ[e] for e in API_KEY_ENVS if os.environ.get(e)), None)
    return AsyncOpenAI(
        base_url=base_url(options.target),
        api_key=key or "not-needed",
        timeout=options.timeout_s,
        max_retries=0,  # a retry would hide a failure and skew the latency; it is recorded
    )


async def ask_all(client: Any, items: list[EvalItem], options: EvalOptions) -> list[Answer]:
    gate = asyncio.Semaphore(options.concurrency)

    async def one(item: EvalItem) -> Answer:
        async with gate:
            return await ask(client, item, options)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def ask(client: Any, item: EvalItem, options: EvalOptions) -> Answer:
    import openai

    started = time.perf_counter()
    try:
        response = await client.chat.completions.create(
            model=options.model,
            messages=item.messages,
            temperature=0,
            max_tokens=options.max_tokens,
            extra_body=options.extra_body or None,
            **({"response_format": options.response_format} if options.response_format else {}),
        )
    except openai.OpenAIError as exc:  # the request failed: recorded, scored as no answer
        return Answer(error=f"{type(exc).__name__}: {exc}")
    usage = response.usage
    return Answer(
        text=response.choices[0].message.content if response.choices else None,
        latency_s=time.perf_counter() - started,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
    )


def build_report(
    items: list[EvalItem], answers: list[Answer], options: EvalOptions, wall: float
) -> dict[str, Any]:
    report = score([i.gold for i in items], [a.text for a in answers])
    ok = [a for a in answers if a.error is None]
    errors = [a.error for a in answers if a.error is not None]
    report.update(
        {
            "target": options.target,
            "model": options.model,
            "concurrency": options.concurrency,
            "errors": len(errors),
            "error_samples": errors[:3],
            "latency_s": latency_summary([a.latency_s for a in ok if a.latency_s is not None]),
            "tokens": {
                "prompt_mean": _mean([a.prompt_tokens for a in ok]),
                "completion_mean": _mean([a.completion_tokens for a in ok]),
                "completion_total": sum(a.completion_tokens for a in ok),
            },
            "wall_s": round(wall, 2),
        }
    )
    return report


def _mean(values: list[int]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


async def evaluate_async(
    items: list[EvalItem], options: EvalOptions, client: Any | None = None
) -> tuple[dict[str, Any], list[Answer]]:
    own = client is None
    client = client or make_client(options)
    started = time.perf_counter()
    try:
        answers = await ask_all(client, items, options)
    finally:
        if own:
            await client.close()
    return build_report(items, answers, options, time.perf_counter() - started), answers


def evaluate(items: list[EvalItem], options: EvalOptions) -> tuple[dict[str, Any], list[Answer]]:
    return asyncio.run(evaluate_async(items, options))


def render_markdown(reports: list[dict[str, Any]]) -> str:
    """One column per report (model), one row per metric."""
    header = "| metric | " + " | ".join(f"`{r['model']}`" for r in reports) + " |"
    lines = [header, "|---|" + "---:|" * len(reports)]

    def row(label: str, values: list[Any]) -> None:
        lines.append(f"| {label} | " + " | ".join(_cell(v) for v in values) + " |")

    row("examples", [r["examples"] for r in reports])
    row("JSON validity", [r["json_valid_rate"] for r in reports])
    names = sorted({name for r in reports for name in r["fields"]})
    if "claim_amount" in names:  # the headline metric first
        names.remove("claim_amount")
        names.insert(0, "claim_amount")
    for name in names:
        row(f"{name} F1", [r["fields"].get(name, {}).get("f1") for r in reports])
    row("initiator accuracy", [r.get("initiator_accuracy") for r in reports])
    row("all fields exact", [r["exact_match_rate"] for r in reports])
    row("latency p50 (s)", [r["latency_s"]["p50"] for r in reports])
    row("latency p95 (s)", [r["latency_s"]["p95"] for r in reports])
    row("completion tokens (mean)", [r["tokens"]["completion_mean"] for r in reports])
    row("request errors", [r["errors"] for r in reports])
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
