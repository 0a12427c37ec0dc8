"""How many tokens one request may generate: a default when it names none, and a cap.

OpenAI lets a request without `max_tokens` run to the end of the context window. On a small
model that can mean minutes of a repeated phrase on a CPU, and a rate-limit reservation for the
whole window. So the gateway fills in a default (per base model) before anything else reads the
body: the context check, the rate-limit reservation and the engine all see the same number, and
the engine reports what was generated in `usage` as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lorafleet.server.errors import InvalidRequestError

# The embedded SmolLM2-135M answers a question in well under 100 tokens; 256 leaves room for a
# paragraph while keeping a runaway generation to seconds on a CPU.
DEFAULT_MAX_TOKENS = 256

_FIELDS = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True)
class TokenLimits:
    """One base model's limits: `default` when a request names no limit, `cap` above which a
    request is refused."""

    default: int = DEFAULT_MAX_TOKENS
    cap: int | None = None


def apply_max_tokens(body: dict[str, Any], default: int, cap: int | None) -> bool:
    """Refuse a limit above `cap` (400), or set `max_tokens` to `default` (never above `cap`)
    when the request names neither `max_tokens` nor `max_completion_tokens`. Returns True when
    the default was applied."""
    for name in _FIELDS:
        value = body.get(name)
        if cap is not None and value is not None and value > cap:
            raise InvalidRequestError(
                f"{name}={value} is above this model's limit of {cap} generated tokens; "
                f"ask for at most {cap}.",
                param=name,
                code="max_tokens_too_large",
            )
    if any(body.get(name) is not None for name in _FIELDS):
        return False
    body["max_tokens"] = default if cap is None else min(default, cap)
    return True
