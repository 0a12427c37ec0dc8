"""Several base models behind one gateway: one pool each, adapters validated against and served
on their own base only, per-model readiness, on fake engines."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lorafleet.adapters.base_models import model_info
from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.adapter_factory import make_lora_dir
from tests.fake_vllm import MODEL, FakeVLLM, fleet_transport
from tests.server.conftest import SMOL_CONFIG, wait_ready, write_model_dir

TINY = "tiny-llama"
TINY_CONFIG = {**SMOL_CONFIG, "hidden_size": 128, "intermediate_size": 256,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
               "num_hidden_layers": 2}  # fmt: skip


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return write_model_dir(tmp_path / "tiny-model", TINY_CONFIG)


@pytest.fixture
def fleet() -> dict[str, FakeVLLM]:
    return {"smol-0": FakeVLLM(), "smol-1": FakeVLLM(), "tiny-0": FakeVLLM(base=TINY)}


@pytest.fixture
def client(
    settings: Settings, base_model_dir: Path, tiny_dir: Path, fleet: dict[str, FakeVLLM]
) -> Iterator[TestClient]:
    two = Settings(
        **settings.model_dump(exclude={"engine_urls", "served_model_name", "model", "models"}),
        models=[
            {"name": MODEL, "source": str(base_model_dir),
             "engine_urls": ["http://smol-0:8000", "http://smol-1:8000"]},
            {"name": TINY, "source": str(tiny_dir), "engine_urls": ["http://tiny-0:8000"],
             "max_lora_rank": 8},
        ],
    )  # fmt: skip
    with TestClient(create_app(two, transport=fleet_transport(fleet))) as test_client:
        wait_ready(test_client)
        time.sleep(0.2)  # every replica probed healthy
        yield test_client


def chat(client: TestClient, model: str) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    return client.post("/v1/chat/completions", json=body)


def test_each_model_reaches_only_its_own_replicas(
    client: TestClient, fleet: dict[str, FakeVLLM]
) -> None:
    for _ in range(6):
        assert chat(client, MODEL).status_code == 200
        assert chat(client, TINY).json()["model"] == TINY
    assert {r["model"] for r in fleet["tiny-0"].requests} == {TINY}
    smol = fleet["smol-0"].requests + fleet["smol-1"].requests
    assert len(smol) == 6 and {r["model"] for r in smol} == {MODEL}
    ready = client.get("/ready").json()
    assert ready["models"] == {MODEL: True, TINY: True}


def test_adapters_are_checked_against_and_served_on_their_own_base(
    client: TestClient, fleet: dict[str, FakeVLLM], adapter_root: Path, base_model_dir: Path,
    tiny_dir: Path,
) -> None:  # fmt: skip
    smol_adapter = make_lora_dir(adapter_root / "s", model_info(base_model_dir), layers=range(2))
    tiny_adapter = make_lora_dir(adapter_root / "t", model_info(tiny_dir), rank=8)
    add = client.post("/v1/adapters", json={"name": "smol-a", "source": str(smol_adapter)})
    assert add.status_code == 201, add.text
    assert add.json()["base_model"] == MODEL
    # Declared by name: trained on TINY's architecture.
    add = client.post(
        "/v1/adapters", json={"name": "tiny-a", "source": str(tiny_adapter), "base_model": TINY}
    )
    assert add.status_code == 201, add.text
    # An adapter of one base, declared for the other: its shapes do not fit.
    wrong = client.post(
        "/v1/adapters", json={"name": "wrong", "source": str(smol_adapter), "base_model": TINY}
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "base_model_mismatch"
    # TINY's engines take rank 8 at most: the limit is per base model.
    big = make_lora_dir(adapter_root / "big", model_info(tiny_dir), rank=16)
    too_big = client.post(
        "/v1/adapters", json={"name": "big", "source": str(big), "base_model": TINY}
    )
    assert too_big.status_code == 400, too_big.text

    assert chat(client, "smol-a").status_code == 200
    assert chat(client, "tiny-a").status_code == 200
    tiny_loads = {load["lora_name"] for load in fleet["tiny-0"].loads}
    smol_loads = {load["lora_name"] for e in ("smol-0", "smol-1") for load in fleet[e].loads}
    assert tiny_loads == {"tiny-a@1"}
    assert smol_loads == {"smol-a@1"}
    cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    assert cards["smol-a"]["parent"] == MODEL and cards["tiny-a"]["parent"] == TINY
    assert cards[MODEL]["parent"] is None and cards[TINY]["parent"] is None


def test_one_models_outage_leaves_the_other_serving(
    client: TestClient, fleet: dict[str, FakeVLLM]
) -> None:
    fleet["tiny-0"].refuse_connections = True
    assert chat(client, TINY).status_code == 503
    assert chat(client, MODEL).status_code == 200
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json()["models"] == {MODEL: True, TINY: False}
    assert not fleet["smol-0"].requests + fleet["smol-1"].requests or all(
        r["model"] == MODEL for r in fleet["smol-0"].requests + fleet["smol-1"].requests
    )


def test_base_guard_per_model(settings: Settings, base_model_dir: Path, tiny_dir: Path) -> None:
    """A CPU pool without lorafleet's engine plugin gets the guard; the other pool does not."""
    fleet = {"smol-0": FakeVLLM(), "tiny-0": FakeVLLM(base=TINY)}
    two = Settings(
        **settings.model_dump(exclude={"engine_urls", "served_model_name", "model", "models"}),
        models=[
            {"name": MODEL, "source": str(base_model_dir), "engine_urls": ["http://smol-0:8000"],
             "base_guard": "on"},
            {"name": TINY, "source": str(tiny_dir), "engine_urls": ["http://tiny-0:8000"]},
        ],
    )  # fmt: skip
    with TestClient(create_app(two, transport=fleet_transport(fleet))) as client:
        wait_ready(client)
        deadline = time.monotonic() + 5
        while f"{MODEL}@0" not in fleet["smol-0"].models and time.monotonic() < deadline:
            time.sleep(0.02)
        assert chat(client, MODEL).json()["model"] == MODEL
        assert chat(client, TINY).status_code == 200
    assert fleet["smol-0"].requests[-1]["model"] == f"{MODEL}@0"  # through the guard
    assert fleet["tiny-0"].requests[-1]["model"] == TINY
    assert not fleet["tiny-0"].loads
    guard_dir = Path(fleet["smol-0"].loads[0]["lora_path"])
    assert guard_dir.parent == two.store_dir / "_base-guard"  # in the (shared) store


def test_metrics_carry_the_base_model(
    client: TestClient, adapter_root: Path, tiny_dir: Path
) -> None:
    tiny_adapter = make_lora_dir(adapter_root / "t", model_info(tiny_dir), rank=8)
    add = client.post(
        "/v1/adapters", json={"name": "tiny-a", "source": str(tiny_adapter), "base_model": TINY}
    )
    assert add.status_code == 201
    assert chat(client, "tiny-a").status_code == 200
    text = client.get("/metrics").text
    assert f'lorafleet:model_base_model{{base_model="{TINY}",model="tiny-a"}} 1.0' in text
    assert f'lorafleet:model_base_model{{base_model="{MODEL}",model="{MODEL}"}} 1.0' in text
    assert f'lorafleet:pool_requests_in_flight{{base_model="{TINY}"}} 0.0' in text
    assert f'lorafleet:engine_ready{{base_model="{TINY}",engine="http://tiny-0:8000"}} 1.0' in text


def test_max_tokens_default_per_model(
    settings: Settings, base_model_dir: Path, tiny_dir: Path
) -> None:
    """A request naming no max_tokens gets its base model's default, else the gateway's."""
    fleet = {"smol-0": FakeVLLM(), "tiny-0": FakeVLLM(base=TINY)}
    two = Settings(
        **settings.model_dump(
            exclude={"engine_urls", "served_model_name", "model", "models", "default_max_tokens"}
        ),
        default_max_tokens=200,
        models=[
            {"name": MODEL, "source": str(base_model_dir), "engine_urls": ["http://smol-0:8000"]},
            {"name": TINY, "source": str(tiny_dir), "engine_urls": ["http://tiny-0:8000"],
             "default_max_tokens": 3},
        ],
    )  # fmt: skip
    with TestClient(create_app(two, transport=fleet_transport(fleet))) as client:
        wait_ready(client)
        for model in (MODEL, TINY):
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert fleet["smol-0"].requests[-1]["max_tokens"] == 200
    assert fleet["tiny-0"].requests[-1]["max_tokens"] == 3
