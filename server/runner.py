"""Run the gateway process: logging, the local engines, uvicorn with a draining shutdown."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from lorafleet.server.app import create_app
from lorafleet.server.bounded_http import BoundedHttpToolsProtocol
from lorafleet.server.deps import Lifecycle
from lorafleet.server.engine.local import (
    EXIT_NOT_SERVABLE,
    ModelNotServableError,
    build_supervisor,
)
from lorafleet.server.logs import configure_logging
from lorafleet.server.settings import Settings

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn, plus: on SIGTERM/SIGINT the gateway is marked draining at once (/ready turns
    503, new requests are refused) while uvicorn lets in-flight streams finish within
    `drain_timeout_s`; the lifespan then stops the engines and the process exits 0."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the captured signal after shutting down, so the process dies "by
        # SIGTERM"; a drained gateway is a clean exit, 0.
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.lifecycle.draining:
            log.info(
                "draining: finishing in-flight requests (up to %ss)",
                self.config.timeout_graceful_shutdown,
            )
        self.lifecycle.draining = True
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    try:
        supervisor = build_supervisor(settings) if settings.local_mode else None
    except ModelNotServableError as exc:
        print(f"lorafleet serve: {exc}", file=sys.stderr)
        return EXIT_NOT_SERVABLE
    app = create_app(settings, supervisor=supervisor)
    log.info(
        "lorafleet gateway on http://%s:%d (%s mode, base models %s)",
        settings.host, settings.port, "local" if supervisor else "cluster",
        ", ".join(spec.name for spec in settings.served_models),
    )  # fmt: skip
    DrainingServer(uvicorn_config(app, settings), app.state.lifecycle).run()
    return 0


def uvicorn_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # httptools, with a bound on request heads: a 50 MB header or URL gets 431/414, not
        # memory (server/bounded_http.py; h11's own limit does not apply to httptools).
        http=BoundedHttpToolsProtocol,
        log_config=None,
        access_log=False,  # the gateway writes its own access line (server/logs.py)
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
    )
