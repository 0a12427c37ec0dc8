"""A bare request on the real engine stops at the gateway's default, not the context's end."""

from __future__ import annotations

import pytest

from lorafleet.server.token_limits import DEFAULT_MAX_TOKENS
from tests.integration.conftest import MODEL, Server

pytestmark = pytest.mark.integration


def test_a_request_without_max_tokens_is_bounded_by_the_default(gateway: Server) -> None:
    reply = gateway.openai(timeout=300).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a very long story about Paris."}],
        temperature=0,
    )
    assert reply.usage is not None
    assert 0 < reply.usage.completion_tokens <= DEFAULT_MAX_TOKENS
    if reply.usage.completion_tokens == DEFAULT_MAX_TOKENS:
        assert reply.choices[0].finish_reason == "length"
