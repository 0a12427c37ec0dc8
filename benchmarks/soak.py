"""`lorafleet bench soak`: many concurrent streams against a gateway for a while; report anything
wrong.

    lorafleet bench soak --url http://127.0.0.1:8000 --concurrency 64 --minutes 10 \
        --models smollm2-135m-instruct,support

Loopback targets only; every loop is bounded by the duration and stops by itself. Each stream
is checked: one response id throughout, the `model` asked for (an adapter may answer as
`name@version`), a finish reason, a usage chunk, and `[DONE]` at the end. Prompts cycle over a
small set at temperature 0, so every (model, prompt) pair is asked many times: answers that
differ from the first answer to the same pair are counted as `divergent` (a request answered by
the wrong adapter shows up there; so can float noise between batch shapes, hence reported, not
failed). Reports lost (errors), truncated and mixed-up responses, and the gateway's resident
memory over time (from its own /metrics). Exit status 1 when anything was lost, truncated or
mixed. The JSON report goes to stdout, and to `--out FILE` when given.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


PROMPTS = 8


async def one_stream(
    client: httpx.AsyncClient, url: str, model: str, n: int, answers: dict[tuple[str, int], str]
) -> str:
    start = n % PROMPTS
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Count from {start} to {start + 5}."}],
        "max_tokens": 24,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    ids: set[str | None] = set()
    models: set[str | None] = set()
    finish: str | None = None
    usage: dict[str, Any] | None = None
    done = False
    text: list[str] = []
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return f"lost:http-{response.status_code}"
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return "lost:error-event"
                ids.add(chunk.get("id"))
                models.add(chunk.get("model"))
                for choice in chunk.get("choices", []):
                    finish = choice.get("finish_reason") or finish
                    text.append(choice.get("delta", {}).get("content") or "")
                usage = chunk.get("usage") or usage
    except httpx.HTTPError as exc:
        return f"lost:{type(exc).__name__}"
    if len(ids) != 1 or any(m != model and not str(m).startswith(model + "@") for m in models):
        return "mixed"
    if not done or finish is None or usage is None:
        return "truncated"
    first = answers.setdefault((model, start), "".join(text))
    return "ok" if first == "".join(text) else "divergent"


async def rss(client: httpx.AsyncClient, url: str) -> float | None:
    try:
        text = (await client.get(f"{url}/metrics")).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1]) / 2**20
    return None


async def soak(
    url: str, models: list[str], concurrency: int, seconds: float, report_every_s: float = 30.0
) -> dict[str, Any]:
    """Run the soak; its report (outcome counts, duration, the gateway's RSS over time)."""
    outcomes: Counter[str] = Counter()
    counter = itertools.count()
    limits = httpx.Limits(max_connections=concurrency + 4)
    answers: dict[tuple[str, int], str] = {}
    memory: list[tuple[float, float | None]] = []
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        start_rss = await rss(client, url)
        memory.append((0.0, start_rss))
        deadline = time.monotonic() + seconds  # streams run this long, after the first reading

        async def worker() -> None:
            while time.monotonic() < deadline:
                n = next(counter)
                model = models[n % len(models)]
                outcomes[await one_stream(client, url, model, n // len(models), answers)] += 1

        async def progress() -> None:
            while time.monotonic() < deadline:
                await asyncio.sleep(report_every_s)
                now = await rss(client, url)
                memory.append((round(time.monotonic() - started), now))
                print(f"  {sum(outcomes.values())} streams: {dict(outcomes)}, gateway RSS "
                      f"{now or 0:.0f} MiB", file=sys.stderr)  # fmt: skip

        reporter = asyncio.create_task(progress())
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        reporter.cancel()
        end_rss = await rss(client, url)
    memory.append((round(time.monotonic() - started), end_rss))
    return {
        "streams": sum(outcomes.values()), "outcomes": dict(outcomes),
        "seconds": round(time.monotonic() - started),
        "gateway_rss_mib": {"start": start_rss, "end": end_rss, "samples": memory},
    }  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--models", default="smollm2-135m-instruct")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")


def main(args: argparse.Namespace) -> int:
    if urlparse(args.url).hostname not in LOOPBACK:
        print("lorafleet bench soak: soak targets loopback addresses only", file=sys.stderr)
        return 2
    report = asyncio.run(
        soak(args.url.rstrip("/"), args.models.split(","), args.concurrency, args.minutes * 60)
    )
    text = json.dumps(report)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if set(report["outcomes"]) <= {"ok", "divergent"} else 1
