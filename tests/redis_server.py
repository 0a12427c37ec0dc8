"""The machine's Redis (127.0.0.1:6379, no auth), for the shared rate-limit tests.

Tests that need it carry `requires_redis`: they are skipped, saying why, only when nothing
answers on that port (`.ci/run` starts Redis when it is absent). Each test works under its own
key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def _answers() -> bool:
    try:
        with redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=1) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


requires_redis = pytest.mark.skipif(
    not _answers(), reason=f"no Redis answers at {REDIS_HOST}:{REDIS_PORT} (.ci/run starts one)"
)


@contextmanager
def key_prefix() -> Iterator[str]:
    """A prefix no other test uses; every key under it is deleted afterwards."""
    prefix = f"lorafleet-test-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        with redis.Redis(host=REDIS_HOST, port=REDIS_PORT) as client:
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            if keys:
                client.delete(*keys)


def closed_port() -> int:
    """A loopback port nothing listens on (bound once by us, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
