"""Background loops that outlive a bad iteration.

The gateway's loops (registry watch, engine health, usage flush, discovery) run for the life of
the process; an exception escaping one iteration used to end its task silently, and with it,
say, every health check. `survive` runs one iteration and logs whatever it raised instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def survive(name: str, iteration: Callable[[], Awaitable[object]]) -> None:
    """Await one iteration of loop `name`; an exception is logged, not raised (cancellation,
    a `BaseException`, still ends the loop)."""
    try:
        await iteration()
    except Exception:
        log.exception("%s: this round failed; the loop goes on", name)
