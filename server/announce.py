"""The one line a user looks for after start-up: where the gateway is and how to call it.

Logged once, when every base model has a ready engine (what `/ready` answers), so the example
works the moment it is printed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
from collections.abc import Mapping

from lorafleet.server.engine.pool import EnginePool
from lorafleet.server.settings import Settings

log = logging.getLogger(__name__)


def gateway_url(host: str, port: int) -> str:
    """The URL a client on this machine uses (a wildcard bind is reached via loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def ready_message(url: str, models: list[str], auth: bool = False) -> str:
    body = {
        "model": models[0],
        "max_tokens": 32,
        "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    header = ' -H "Authorization: Bearer $LORAFLEET_ADMIN_KEY"' if auth else ""
    curl = (
        f"curl {url}/v1/chat/completions -H 'content-type: application/json'{header} "
        f"-d {shlex.quote(json.dumps(body))}"
    )
    return f"lorafleet is ready on {url}, serving {', '.join(models)}; try: {curl}"


async def announce_ready(
    pools: Mapping[str, EnginePool], settings: Settings, poll_s: float = 0.2
) -> None:
    # Readiness is the pools' polled health state: there is no event to wait on.
    while not (pools and all(pool.ready for pool in pools.values())):  # noqa: ASYNC110
        await asyncio.sleep(poll_s)
    url = gateway_url(settings.host, settings.port)
    log.info("%s", ready_message(url, sorted(pools), auth=settings.admin_key is not None))
