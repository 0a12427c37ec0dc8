"""A deterministic labeller for the demo and CI: an OpenAI-compatible endpoint that answers
each synthetic document with its ground-truth label.

`lorafleet label` talks to it exactly as to a hosted model (HTTP, `response_format`
json_schema, cache, review sample), so the demo runs the real labelling path without a model
large enough to label court decisions. It knows only the documents it was given; any other
document gets HTTP 404, which `lorafleet label` records as a failed request, never as a label.

    with oracle_server({text: label_json, ...}) as url:
        lorafleet label --base-url url --model ORACLE_MODEL ...
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aiohttp import web

ORACLE_MODEL = "synthetic-ground-truth"


def completion(content: str, prompt: str) -> dict[str, Any]:
    """A chat completion carrying `content`; token counts are rough (4 characters a token)."""
    usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(content) // 4}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {
        "id": "chatcmpl-oracle",
        "object": "chat.completion",
        "model": ORACLE_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def make_app(labels: Mapping[str, str]) -> web.Application:
    """`labels`: document text (stripped) -> its label as a JSON string."""

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        document = str(body["messages"][-1]["content"]).strip()
        label = labels.get(document)
        if label is None:
            error = {"message": "unknown document", "type": "not_found_error", "code": None}
            return web.json_response({"error": error}, status=404)
        prompt = "".join(str(m.get("content", "")) for m in body["messages"])
        return web.json_response(completion(label, prompt))

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": ORACLE_MODEL}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


@contextmanager
def oracle_server(labels: Mapping[str, str]) -> Iterator[str]:
    """The oracle on 127.0.0.1 (a free port) in its own thread; yields its `/v1` base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(labels))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def labels_from_records(records: list[dict[str, Any]]) -> dict[str, str]:
    """Document text -> gold label, from the synthetic chat records (user turn, assistant JSON)."""
    return {r["messages"][1]["content"].strip(): r["messages"][-1]["content"] for r in records}
