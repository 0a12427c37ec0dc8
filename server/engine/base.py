"""The one seam between the gateway and an inference engine.

Everything the gateway needs from an engine is on `EngineClient`; routing, retries and tests plug
in here. `VLLMHttpEngine` (vllm_http.py) is the only code that knows vLLM's URLs. Unit tests run
that same client against a fake vLLM, through an `httpx.MockTransport` and, with the aiohttp
client production runs, over a real socket (http.py says why both clients exist).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Endpoint(StrEnum):
    """Inference endpoints an engine serves, by OpenAI path."""

    CHAT = "/v1/chat/completions"
    COMPLETIONS = "/v1/completions"


@dataclass(frozen=True)
class EngineResult:
    """A non-streamed answer: the engine's JSON bytes, passed through as they are, and their
    parsed form (the gateway reads usage from it)."""

    raw: bytes
    body: dict[str, Any]


class EngineStream(ABC):
    """An open streamed answer. Iterating yields whole SSE events (`data: ...\\n\\n`), one per
    engine event: never coalesced, never split. `aclose()` aborts the upstream request."""

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def aclose(self) -> None: ...


class EngineClient(ABC):
    """One engine replica. Errors are raised as `lorafleet.server.errors.LorafleetError`s."""

    url: str

    @abstractmethod
    async def generate(
        self, endpoint: Endpoint, body: dict[str, Any], request_id: str
    ) -> EngineResult: ...

    @abstractmethod
    async def open_stream(
        self, endpoint: Endpoint, body: dict[str, Any], request_id: str
    ) -> EngineStream:
        """Send a streamed request; returns once the engine accepted it (status 200), so that
        an engine-side refusal still becomes an ordinary HTTP error for the client."""

    @abstractmethod
    async def count_tokens(self, endpoint: Endpoint, body: dict[str, Any]) -> int:
        """Prompt tokens the request would use (chat template applied), for the context check."""

    @abstractmethod
    async def list_models(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    async def load_adapter(self, name: str, path: str) -> None: ...

    @abstractmethod
    async def unload_adapter(self, name: str) -> None: ...

    @abstractmethod
    async def health(self) -> bool:
        """True when the engine answers its health check; never raises."""

    @abstractmethod
    async def aclose(self) -> None: ...
