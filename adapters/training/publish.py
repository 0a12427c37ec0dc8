"""Register a trained adapter on a running gateway: `POST {URL}/v1/adapters`.

The gateway validates the directory, stores it and moves the name's alias to the new version,
so the adapter is served without a restart. It only accepts directories under its allowed
roots (`LORAFLEET_ADAPTER_ROOTS`): train into one of them, or copy the result there first.

A gateway that is restarting, overloaded or rate limiting (connection errors, timeouts, 5xx,
429) is retried with exponential backoff, honouring `Retry-After`, for a bounded number of
attempts (`RetryPolicy`); a refusal (4xx) is final. Retrying is safe: registering the same
content again returns the current version instead of adding one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tenacity import RetryCallState, RetryError, Retrying, retry_if_exception_type
from tenacity.stop import stop_after_attempt
from tenacity.wait import wait_exponential

from lorafleet.adapters.training.retry_after import retry_after

ADMIN_KEY_ENV = "LORAFLEET_ADMIN_KEY"
log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """The gateway refused the adapter or could not be reached; the message says which."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class _TransientError(PublishError):
    """Worth another attempt: the gateway was unreachable, failing (5xx) or rate limiting (429)."""

    def __init__(
        self, message: str, status_code: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, status_code)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying: `attempts` in all, waits doubling from `initial_wait_s` up to
    `max_wait_s`; a `Retry-After` from the gateway replaces the computed wait (capped the same)."""

    attempts: int = 5
    initial_wait_s: float = 1.0
    max_wait_s: float = 30.0


def publish_adapter(
    url: str,
    *,
    name: str,
    source: Path,
    base_model: str,
    admin_key: str | None = None,
    client: httpx.Client | None = None,
    timeout_s: float = 300.0,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Register `source` as a new version of `name`; return the gateway's record."""
    key = admin_key if admin_key is not None else os.environ.get(ADMIN_KEY_ENV)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"name": name, "source": str(source.resolve()), "base_model": base_model}
    endpoint = url.rstrip("/") + "/v1/adapters"
    policy = retry or RetryPolicy()
    http = client or httpx.Client(timeout=timeout_s)
    try:
        for attempt in _retrying(policy, sleep):
            with attempt:
                response = _post(http, endpoint, body, headers)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        assert isinstance(last, _TransientError)
        raise PublishError(
            f"{last} (gave up after {policy.attempts} attempts)", last.status_code
        ) from last
    finally:
        if client is None:
            http.close()
    return _record(response)


def _retrying(policy: RetryPolicy, sleep: Callable[[float], None]) -> Retrying:
    backoff = wait_exponential(multiplier=policy.initial_wait_s, max=policy.max_wait_s)

    def wait(state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, _TransientError) and failure.retry_after_s is not None:
            return min(failure.retry_after_s, policy.max_wait_s)
        return float(backoff(state))

    def announce(state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "publish attempt %d of %d failed (%s); retrying in %.1f s",
            state.attempt_number, policy.attempts, failure, delay,
        )  # fmt: skip

    return Retrying(
        retry=retry_if_exception_type(_TransientError),
        stop=stop_after_attempt(policy.attempts),
        wait=wait,
        sleep=sleep,
        before_sleep=announce,
    )


def _post(
    http: httpx.Client, endpoint: str, body: dict[str, str], headers: dict[str, str]
) -> httpx.Response:
    try:
        response = http.post(endpoint, json=body, headers=headers)
    except httpx.UnsupportedProtocol as exc:  # a mistyped URL: no retry will fix it
        raise PublishError(f"cannot reach the gateway at {endpoint}: {exc}") from exc
    except httpx.TransportError as exc:
        raise _TransientError(f"cannot reach the gateway at {endpoint}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise PublishError(f"cannot reach the gateway at {endpoint}: {exc}") from exc
    status = response.status_code
    if status == 429 or status >= 500:
        raise _TransientError(
            f"gateway could not take the adapter ({status}): {_error_message(response)}",
            status,
            retry_after(response),
        )
    if status not in (200, 201):
        raise PublishError(
            f"gateway refused the adapter ({status}): {_error_message(response)}", status
        )
    return response


def _record(response: httpx.Response) -> dict[str, Any]:
    try:
        record = response.json()
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise PublishError(f"gateway answered {response.status_code} without a JSON record")
    return record


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return str(error.get("message") or error) or response.text[:500]
    except (ValueError, AttributeError):
        return response.text[:500]
