"""Which `EngineClient` speaks to a model's engines: one factory for every place that makes one
(the app's pools and the Kubernetes discovery loop)."""

from __future__ import annotations

from lorafleet.server.engine.base import EngineClient
from lorafleet.server.engine.http import HttpClient
from lorafleet.server.engine.llamacpp_http import LlamaCppHttpEngine
from lorafleet.server.engine.vllm_http import VLLMHttpEngine
from lorafleet.server.settings import EngineKind


def engine_client(
    kind: EngineKind, url: str, client: HttpClient, *, lora: bool = True
) -> EngineClient:
    """`lora`: whether the engine was started with LoRA (False: adapters get a 400)."""
    if kind == "llama.cpp":
        return LlamaCppHttpEngine(url, client)  # never serves per-request adapters
    return VLLMHttpEngine(url, client, lora=lora)
