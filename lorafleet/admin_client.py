"""The admin CLIs' one HTTP call: a running gateway's admin API, errors as one-line exits.

`lorafleet adapters ...` and `lorafleet keys ...` talk to the gateway (`--url`, else
`$LORAFLEET_URL`, else http://127.0.0.1:8000) with `$LORAFLEET_ADMIN_KEY` when it is set, so
neither needs the database or imports the server.
"""

from __future__ import annotations

import os
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def admin_request(
    prog: str, url: str | None, method: str, path: str, body: Any = None, timeout_s: float = 300
) -> Any:
    """The JSON answer of `method path`; an unreachable gateway or an error answer exits with
    `prog: <status>: <message> (<code>)`."""
    import httpx

    base = (url or os.environ.get("LORAFLEET_URL") or DEFAULT_URL).rstrip("/")
    headers = {}
    if key := os.environ.get("LORAFLEET_ADMIN_KEY"):
        headers["Authorization"] = f"Bearer {key}"
    try:
        response = httpx.request(method, base + path, json=body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise SystemExit(f"{prog}: cannot reach {base}: {exc}") from exc
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            message = f"{error['message']} ({error.get('code')})"
        except (ValueError, KeyError, TypeError):
            message = response.text
        raise SystemExit(f"{prog}: {response.status_code}: {message}")
    return response.json()
