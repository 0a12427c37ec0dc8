"""A fake OpenAI streaming server with a set TTFT and inter-token gap, and no model.

    python -m lorafleet.benchmarks.fake_server --port 8320 --ttft-ms 50 --itl-ms 20

Uses: the load generator's tests (measured TTFT/ITL must match what is set), and gateway
overhead without engine noise (the gateway in front of this server adds only its own latency,
and at high concurrency its relay capacity shows). Each request streams `max_tokens` chunks of
one word each, then a usage chunk and `[DONE]`, like vLLM with `stream_options.include_usage`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def make_app(ttft_s: float, itl_s: float, model: str = "fake-model") -> Starlette:
    counter = itertools.count()
    created = int(time.time())

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": model,
                        "object": "model",
                        "created": created,
                        "owned_by": "fake",
                        "root": model,
                    }
                ],
            }
        )

    async def generate(request: Request) -> Response:
        body = orjson.loads(await request.body())
        chat = request.url.path.endswith("/chat/completions")
        tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        prompt = (
            body.get("prompt")
            if not chat
            else " ".join(str(m.get("content")) for m in body.get("messages", []))
        )
        prompt_tokens = len(prompt) if isinstance(prompt, list) else len(str(prompt or "").split())
        request_id = f"fake-{next(counter)}"
        if not body.get("stream"):
            await asyncio.sleep(ttft_s + itl_s * (tokens - 1))
            text = " tok" * tokens
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            choice |= (
                {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            )
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": tokens,
                "total_tokens": prompt_tokens + tokens,
            }
            return JSONResponse(
                {
                    "id": request_id,
                    "object": "chat.completion" if chat else "text_completion",
                    "created": created,
                    "model": body.get("model"),
                    "choices": [choice],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            _stream(
                request_id,
                str(body.get("model")),
                chat,
                tokens,
                prompt_tokens,
                include_usage,
                ttft_s,
                itl_s,
                created,
            ),
            media_type="text/event-stream",
        )

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/completions", generate, methods=["POST"]),
            Route("/v1/chat/completions", generate, methods=["POST"]),
        ]
    )


async def _stream(
    request_id: str,
    model: str,
    chat: bool,
    tokens: int,
    prompt_tokens: int,
    include_usage: bool,
    ttft_s: float,
    itl_s: float,
    created: int,
) -> AsyncIterator[bytes]:
    started = time.perf_counter()
    kind = "chat.completion.chunk" if chat else "text_completion"
    for index in range(tokens):
        # Sleep to an absolute schedule so event-loop jitter does not accumulate.
        due = started + ttft_s + index * itl_s
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        reason = "length" if index == tokens - 1 else None
        choice: dict[str, Any] = {"index": 0, "finish_reason": reason}
        choice |= {"delta": {"content": " tok"}} if chat else {"text": " tok"}
        yield (
            b"data: "
            + orjson.dumps(
                {
                    "id": request_id,
                    "object": kind,
                    "created": created,
                    "model": model,
                    "choices": [choice],
                }
            )
            + b"\n\n"
        )
    if include_usage:
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": tokens,
            "total_tokens": prompt_tokens + tokens,
        }
        yield (
            b"data: "
            + orjson.dumps(
                {
                    "id": request_id,
                    "object": kind,
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
            + b"\n\n"
        )
    yield b"data: [DONE]\n\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lorafleet.benchmarks.fake_server", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8320)
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args(argv)
    import uvicorn

    app = make_app(args.ttft_ms / 1000.0, args.itl_ms / 1000.0, args.model)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
