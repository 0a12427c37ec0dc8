"""A real OpenAI-compatible HTTP server on 127.0.0.1 (aiohttp, in its own thread) that labels
documents from a script: by default a schema-valid answer, or per document a queue of scripted
replies (429 with Retry-After, 5xx, an invalid answer, a hang)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}


@dataclass
class Reply:
    status: int = 200
    content: str | None = None  # 200: this answer instead of the document's label
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0


@dataclass
class Call:
    at: float
    document: str
    status: int
    body: dict[str, Any]
    answered: bool = False  # the reply was sent: for a 200, a paid answer


class FakeLabeller:
    def __init__(self, labels: dict[str, dict[str, Any]]) -> None:
        self.labels = labels  # document text -> its label
        self.script: dict[str, list[Reply]] = {}
        self.calls: list[Call] = []
        self.url = ""

    def calls_for(self, document: str, status: int | None = None) -> list[Call]:
        return [c for c in self.calls if c.document == document and status in (None, c.status)]

    def paid(self, document: str) -> int:
        return sum(c.answered for c in self.calls_for(document, 200))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        document = body["messages"][-1]["content"]
        queue = self.script.get(document) or []
        reply = queue.pop(0) if queue else Reply()
        call = Call(time.monotonic(), document, reply.status, body)
        self.calls.append(call)
        if reply.hang_s:
            await asyncio.sleep(reply.hang_s)
        call.answered = True
        if reply.status != 200:
            error = {"error": {"message": "scripted", "type": "x", "param": None, "code": None}}
            return web.json_response(error, status=reply.status, headers=reply.headers)
        content = reply.content or json.dumps(self.labels[document], ensure_ascii=False)
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": USAGE,
        })  # fmt: skip


@contextmanager
def serve(fake: FakeLabeller) -> Iterator[FakeLabeller]:
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)  # a scripted hang must not stall teardown
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        pending = asyncio.all_tasks(loop)  # handlers still in a scripted hang
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "the fake labeller did not start"
    try:
        yield fake
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
