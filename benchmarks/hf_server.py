"""A naive OpenAI-compatible server on Hugging Face `generate()`: the baseline vLLM is measured
against ("transformers behind a web server", as people first deploy a model).

    python -m lorafleet.benchmarks.hf_server --model DIR --port 8310                # one at a time
    python -m lorafleet.benchmarks.hf_server --model DIR --port 8311 --batch-size 32  # batches

One generation thread runs `model.generate()` on one request at a time, or, with
`--batch-size N`, on static batches: it takes up to N waiting requests (waiting at most
`--batch-wait-ms` for the batch to fill), left-pads them, and runs the batch until its longest
request is done; requests arriving meanwhile wait for the next batch. Tokens stream to each client
as they are produced (a per-step hook inside `generate`), so TTFT/ITL are measured the same way as
for vLLM. `ignore_eos` and `min_tokens` are honoured by masking EOS; greedy decoding unless a
request sets `temperature` > 0 (the first request of a batch decides for the batch).

Endpoints: POST /v1/completions, POST /v1/chat/completions (streaming or not,
`stream_options.include_usage`), GET /v1/models, GET /health.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Job:
    prompt_ids: list[int]
    max_tokens: int
    min_tokens: int
    ignore_eos: bool
    temperature: float
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    cancelled: bool = False

    def emit(self, kind: str, value: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class BatchGenerator:
    """Owns the model; one daemon thread turns queued jobs into token events."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int, batch_wait_s: float) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        )
        threading.Thread(target=self._run, name="hf-generate", daemon=True).start()

    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def _next_batch(self) -> list[Job]:
        batch = [self.jobs.get()]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self.jobs.get(timeout=max(remaining, 0.0))
                    if remaining > 0
                    else self.jobs.get_nowait()
                )
            except queue.Empty:
                break
        return [job for job in batch if not job.cancelled]

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                continue
            try:
                self._generate(batch)
            except Exception as exc:  # report to every waiting client, keep serving
                for job in batch:
                    job.emit("error", f"{type(exc).__name__}: {exc}")

    def _generate(self, batch: list[Job]) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        width = max(len(job.prompt_ids) for job in batch)
        ids = [[self.pad_id] * (width - len(job.prompt_ids)) + job.prompt_ids for job in batch]
        mask = [[0] * (width - len(job.prompt_ids)) + [1] * len(job.prompt_ids) for job in batch]
        hook = _StepHook(batch, width, self.eos_ids)
        sample = batch[0].temperature > 0
        with torch.inference_mode():
            self.model.generate(
                input_ids=torch.tensor(ids),
                attention_mask=torch.tensor(mask),
                max_new_tokens=max(job.max_tokens for job in batch),
                do_sample=sample,
                temperature=batch[0].temperature if sample else None,
                top_p=None,
                top_k=None,
                pad_token_id=self.pad_id,
                logits_processor=LogitsProcessorList([_EosMask(batch, width, self.eos_ids)]),
                stopping_criteria=StoppingCriteriaList([hook]),
            )
        hook.finish_all()


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [token for token in ids if token is not None]
    return ids or [tokenizer.eos_token_id]


class _EosMask:
    """Forbids EOS for requests with `ignore_eos`, or before their `min_tokens`."""

    def __init__(self, batch: list[Job], width: int, eos_ids: list[int]) -> None:
        self.batch, self.width, self.eos_ids = batch, width, eos_ids

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        produced = input_ids.shape[1] - self.width
        for row, job in enumerate(self.batch):
            if job.ignore_eos or produced < job.min_tokens:
                scores[row, self.eos_ids] = -float("inf")
        return scores


class _StepHook:
    """Called by `generate` after every step: streams each row's newest token, and tells
    `generate` which rows are done (length reached, EOS, or client gone)."""

    def __init__(self, batch: list[Job], width: int, eos_ids: list[int]) -> None:
        self.batch, self.width, self.eos_ids = batch, width, set(eos_ids)
        self.done = [False] * len(batch)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        produced = input_ids.shape[1] - self.width
        newest = input_ids[:, -1].tolist()
        for row, job in enumerate(self.batch):
            if self.done[row]:
                continue
            if job.cancelled:
                self.done[row] = True
            elif newest[row] in self.eos_ids and not job.ignore_eos:
                self._finish(row, "stop")
            elif produced >= job.max_tokens:  # the last token carries the finish reason
                self.done[row] = True
                job.emit("token", (newest[row], "length"))
            else:
                job.emit("token", (newest[row], None))
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    def _finish(self, row: int, reason: str) -> None:
        self.done[row] = True
        self.batch[row].emit("done", reason)

    def finish_all(self) -> None:
        for row in range(len(self.batch)):
            if not self.done[row]:
                self._finish(row, "length")


class Detokenizer:
    """Incremental text from token ids; holds back an incomplete UTF-8 sequence."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = 0

    def add(self, token: int) -> str:
        self.ids.append(token)
        text: str = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        delta, self.sent = text[self.sent :], len(text)
        return delta


class OpenAIFrontend:
    def __init__(self, generator: BatchGenerator, model_name: str, tokenizer: Any) -> None:
        self.generator = generator
        self.model_name = model_name
        self.tokenizer = tokenizer
        self.created = int(time.time())
        self.counter = itertools.count()

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/health", self.health),
                Route("/v1/models", self.models),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
            ]
        )

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def models(self, request: Request) -> Response:
        card = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "hf"}
        return JSONResponse({"object": "list", "data": [card]})

    async def completions(self, request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        prompt = body.get("prompt")
        if isinstance(prompt, list) and all(isinstance(token, int) for token in prompt):
            ids = list(prompt)
        elif isinstance(prompt, str):
            ids = self.tokenizer(prompt)["input_ids"]
        else:
            return _error(400, "prompt must be a string or a list of token ids")
        return await self._serve(body, ids, chat=False)

    async def chat(self, request: Request) -> Response:
        body = await _json(request)
        if isinstance(body, Response):
            return body
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "messages must be a non-empty list")
        encoded = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True
        )
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return await self._serve(body, list(ids), chat=True)

    async def _serve(self, body: dict[str, Any], ids: list[int], *, chat: bool) -> Response:
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        job = Job(
            prompt_ids=ids,
            max_tokens=int(max_tokens),
            min_tokens=int(body.get("min_tokens") or 0),
            ignore_eos=bool(body.get("ignore_eos")),
            temperature=float(body.get("temperature") or 0.0),
            loop=asyncio.get_running_loop(),
        )
        self.generator.submit(job)
        request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._stream(job, request_id, chat, usage), media_type="text/event-stream"
            )
        return await self._whole(job, request_id, chat)

    async def _events(self, job: Job) -> AsyncIterator[tuple[str, str | None]]:
        """(text delta, finish reason) per token until one carries a finish reason; the job is
        cancelled if the client leaves first."""
        text = Detokenizer(self.tokenizer)
        try:
            while True:
                kind, value = await job.events.get()
                if kind == "token":
                    token, reason = value
                    yield text.add(token), reason
                    if reason:
                        return
                elif kind == "done":
                    yield "", str(value)
                    return
                else:
                    raise RuntimeError(str(value))
        finally:
            job.cancelled = True

    async def _stream(
        self, job: Job, request_id: str, chat: bool, usage: bool
    ) -> AsyncIterator[bytes]:
        produced = 0
        try:
            async for delta, reason in self._events(job):
                yield self._chunk(request_id, chat, delta, reason, first=produced == 0)
                produced += 1 if (reason is None or reason == "length") else 0
        except RuntimeError as exc:
            error = {"error": {"message": str(exc), "type": "server_error"}}
            yield b"data: " + orjson.dumps(error) + b"\n\n"
        if usage:
            payload = {
                "id": request_id,
                "object": _object(chat, True),
                "created": self.created,
                "model": self.model_name,
                "choices": [],
                "usage": _usage(len(job.prompt_ids), produced),
            }
            yield b"data: " + orjson.dumps(payload) + b"\n\n"
        yield b"data: [DONE]\n\n"

    def _chunk(
        self, request_id: str, chat: bool, delta: str, reason: str | None, first: bool
    ) -> bytes:
        if chat:
            message: dict[str, Any] = {"content": delta}
            if first:
                message["role"] = "assistant"
            choice: dict[str, Any] = {"index": 0, "delta": message, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": delta, "logprobs": None, "finish_reason": reason}
        payload = {
            "id": request_id,
            "object": _object(chat, True),
            "created": self.created,
            "model": self.model_name,
            "choices": [choice],
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    async def _whole(self, job: Job, request_id: str, chat: bool) -> Response:
        parts: list[str] = []
        reason: str | None = None
        produced = 0
        try:
            async for delta, finish in self._events(job):
                parts.append(delta)
                reason = finish
                produced += 1 if (finish is None or finish == "length") else 0
        except RuntimeError as exc:
            return _error(500, str(exc))
        text = "".join(parts)
        choice: dict[str, Any] = {"index": 0, "finish_reason": reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice |= {"text": text, "logprobs": None}
        payload = {
            "id": request_id,
            "object": _object(chat, False),
            "created": self.created,
            "model": self.model_name,
            "choices": [choice],
            "usage": _usage(len(job.prompt_ids), produced),
        }
        return JSONResponse(payload)


def _object(chat: bool, stream: bool) -> str:
    if chat:
        return "chat.completion.chunk" if stream else "chat.completion"
    return "text_completion"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


async def _json(request: Request) -> dict[str, Any] | Response:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return _error(400, "body is not JSON")
    return body if isinstance(body, dict) else _error(400, "body must be a JSON object")


def _error(status: int, message: str) -> Response:
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
        status_code=status,
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lorafleet.benchmarks.hf_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="Hugging Face model directory")
    parser.add_argument(
        "--served-model-name", default=None, help="id clients send (default: dir name)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8310)
    parser.add_argument(
        "--batch-size", type=int, default=1, help="static batch size (1: one request at a time)"
    )
    parser.add_argument(
        "--batch-wait-ms", type=float, default=500.0, help="how long a batch waits to fill"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: all cores)"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    import torch
    import uvicorn
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    # from_pretrained returns the model in eval mode (no dropout)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype))
    generator = BatchGenerator(
        model,
        tokenizer,
        max(1, args.batch_size),
        args.batch_wait_ms / 1000.0 if args.batch_size > 1 else 0.0,
    )
    frontend = OpenAIFrontend(generator, args.served_model_name or args.model.name, tokenizer)
    uvicorn.run(
        frontend.app(), host=args.host, port=args.port, log_level="warning", access_log=False
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
