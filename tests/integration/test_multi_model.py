"""`lorafleet serve --model smollm2-135m-instruct --model merged=<dir>`: two base models in local
mode, each with its own engine and adapters, through the official OpenAI SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lorafleet.adapters.base_models import fetch_model, model_info
from tests.adapter_factory import make_lora_dir
from tests.integration.conftest import Server, start_server, wait_ready
from tests.merged_model import COURT_MESSAGES, merged_model_dir

pytestmark = pytest.mark.integration

BASE, MERGED = "smollm2-135m-instruct", "merged"
MESSAGES = COURT_MESSAGES


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    merged = merged_model_dir()
    state = tmp_path_factory.mktemp("two-models")
    roots = state / "adapter-sources"
    roots.mkdir()
    env = {
        "LORAFLEET_ENGINE_KV_CACHE_GIB": "1",
        "LORAFLEET_DATABASE_URL": f"sqlite:///{state / 'registry.db'}",
        "LORAFLEET_ADAPTER_STORE": str(state / "store"),
        "LORAFLEET_ADAPTER_ROOTS": str(roots),
    }
    server = start_server(["--model", BASE, "--model", f"{MERGED}={merged}"], state / "log", env)
    try:
        wait_ready(server)
        yield server, roots
    finally:
        server.stop()
    assert server.process.returncode == 0, server.log_tail()


def chat(server: Server, model: str) -> str:
    reply = server.openai().chat.completions.create(
        model=model,
        messages=MESSAGES,
        max_tokens=16,
        temperature=0,  # type: ignore[arg-type]
    )
    assert reply.model.partition("@")[0] == model  # an adapter answers as name@version
    return reply.choices[0].message.content or ""


def test_both_base_models_and_their_adapters_are_served(two_models: tuple[Server, Path]) -> None:
    server, roots = two_models
    ready = httpx.get(f"{server.url}/ready").json()
    assert ready["models"] == {BASE: True, MERGED: True}
    base_answer, merged_answer = chat(server, BASE), chat(server, MERGED)
    assert base_answer != merged_answer  # two different checkpoints, each on its own engine

    info = model_info(fetch_model(None, progress=False))
    for name, base in (("for-base", BASE), ("for-merged", MERGED)):
        source = make_lora_dir(roots / name, info, rank=8, seed=3, scale=0.2)
        response = httpx.post(
            f"{server.url}/v1/adapters",
            json={"name": name, "source": str(source), "base_model": base},
            timeout=60,
        )
        assert response.status_code == 201, response.text
    assert chat(server, "for-base") != base_answer
    assert chat(server, "for-merged") != merged_answer
    cards = {card.id: card.model_dump() for card in server.openai().models.list().data}
    assert cards["for-base"]["parent"] == BASE
    assert cards["for-merged"]["parent"] == MERGED
    assert cards[MERGED]["parent"] is None
