"""schemathesis fuzzes every route of the gateway from its own OpenAPI schema: no 5xx, ever.

The gateway runs on a real loopback socket in front of the fake engine; the request caps live in
the pydantic models, so the schema tells the fuzzer where the edges are.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.fake_vllm import FakeVLLM
from tests.fault_engine import serve_in_thread

EXAMPLES_PER_OPERATION = 25


def test_no_route_answers_5xx(settings: Settings, engine: FakeVLLM) -> None:
    with serve_in_thread(create_app(settings, transport=engine.transport())) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 10
        calls = 0
        for operation in operations:

            @given(case=operation.as_strategy())
            @hypothesis_settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def fuzz(case: Any) -> None:
                nonlocal calls
                calls += 1
                response = case.call(base_url=url, timeout=30)
                where = f"{case.method} {case.formatted_path}: {response.text[:300]}"
                assert response.status_code < 500, where
                if response.status_code >= 400 and "json" in response.headers.get(
                    "content-type", ""
                ):
                    error = response.json().get("error", {})
                    assert set(error) == {"message", "type", "param", "code"}, where

            fuzz()
        assert calls >= len(operations) * 5
