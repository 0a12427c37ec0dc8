"""Register a trained adapter on a running gateway: `POST {URL}/v1/adapters`.

The gateway validates the directory, stores it and moves the name's alias to the new version,
so the adapter is served without a restart. It only accepts directories under its allowed
roots (`LORAFLEET_ADAPTER_ROOTS`): train into one of them, or copy the result there first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

ADMIN_KEY_ENV = "LORAFLEET_ADMIN_KEY"


class PublishError(RuntimeError):
    """The gateway refused the adapter or could not be reached; the message says which."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def publish_adapter(
    url: str,
    *,
    name: str,
    source: Path,
    base_model: str,
    admin_key: str | None = None,
    client: httpx.Client | None = None,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Register `source` as a new version of `name`; return the gateway's record."""
    key = admin_key if admin_key is not None else os.environ.get(ADMIN_KEY_ENV)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"name": name, "source": str(source.resolve()), "base_model": base_model}
    endpoint = url.rstrip("/") + "/v1/adapters"
    http = client or httpx.Client(timeout=timeout_s)
    try:
        response = http.post(endpoint, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise PublishError(f"cannot reach the gateway at {endpoint}: {exc}") from exc
    finally:
        if client is None:
            http.close()
    if response.status_code not in (200, 201):
        raise PublishError(
            f"gateway refused the adapter ({response.status_code}): {_error_message(response)}",
            response.status_code,
        )
    record = response.json()
    if not isinstance(record, dict):
        raise PublishError(f"gateway answered {response.status_code} without a JSON record")
    return record


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return str(error.get("message") or error) or response.text[:500]
    except (ValueError, AttributeError):
        return response.text[:500]
