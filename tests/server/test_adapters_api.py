"""Adapter admin API and per-request adapter selection, against the fake engine."""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lorafleet.adapters.base_models import model_info
from tests.adapter_factory import make_lora_dir
from tests.fake_vllm import MODEL, FakeVLLM

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


@pytest.fixture
def make_adapter(adapter_root: Path, base_model_dir: Path) -> Any:
    base = model_info(base_model_dir)

    def make(name: str, seed: int = 0, **kwargs: Any) -> Path:
        return make_lora_dir(adapter_root / name, base, seed=seed, layers=range(2), **kwargs)

    return make


def register(client: TestClient, name: str, source: Path | str, **extra: Any) -> Any:
    return client.post("/v1/adapters", json={"name": name, "source": str(source), **extra})


def chat(client: TestClient, model: str) -> Any:
    return client.post("/v1/chat/completions", json={"model": model, **CHAT})


def test_register_serve_and_list(client: TestClient, engine: FakeVLLM, make_adapter: Any) -> None:
    response = register(client, "support", make_adapter("support"))
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["name"] == "support"
    assert record["version"] == 1
    assert record["base_model"] == MODEL
    assert record["rank"] == 8
    assert record["target_modules"] == ["q_proj", "v_proj"]
    assert record["state"] == "registered"
    assert record["created_at"] > 0

    assert chat(client, "support").status_code == 200
    assert engine.requests[-1]["model"] == "support@1"
    assert [load["lora_name"] for load in engine.loads] == ["support@1"]
    # The stored copy, not the source directory, is what the engine loads.
    assert engine.loads[0]["lora_path"].endswith(record["sha256"])

    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models["support"]["parent"] == MODEL
    assert models[MODEL]["parent"] is None
    listed = client.get("/v1/adapters").json()["data"]
    assert [a["name"] for a in listed] == ["support"]
    detail = client.get("/v1/adapters/support").json()
    assert list(detail["engines"].values()) == ["ready"]  # one engine (its URL: the client's)


def test_first_requests_load_once(client: TestClient, engine: FakeVLLM, make_adapter: Any) -> None:
    register(client, "hot", make_adapter("hot"))
    engine.load_delay_s = 0.3
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(lambda _: chat(client, "hot").status_code, range(24)))
    assert statuses == [200] * 24
    assert len(engine.loads) == 1
    assert {r["model"] for r in engine.requests} == {"hot@1"}


def test_new_version_moves_the_alias(
    client: TestClient, engine: FakeVLLM, make_adapter: Any
) -> None:
    register(client, "a", make_adapter("a-v1", seed=1))
    chat(client, "a")
    second = register(client, "a", make_adapter("a-v2", seed=2)).json()
    assert second["version"] == 2
    chat(client, "a")
    assert engine.requests[-1]["model"] == "a@2"
    chat(client, "a@1")  # pinned: still servable
    assert engine.requests[-1]["model"] == "a@1"
    # Same content again: no new version.
    assert register(client, "a", make_adapter("a-v2b", seed=2)).json()["version"] == 2


def test_old_version_is_unloaded_once_drained(
    client: TestClient, engine: FakeVLLM, make_adapter: Any
) -> None:
    register(client, "a", make_adapter("a-v1", seed=1))
    chat(client, "a")
    register(client, "a", make_adapter("a-v2", seed=2))
    chat(client, "a")
    deadline = time.monotonic() + 5
    while "a@1" in engine.models and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "a@1" not in engine.models
    assert "a@2" in engine.models


def test_rollback(client: TestClient, engine: FakeVLLM, make_adapter: Any) -> None:
    register(client, "a", make_adapter("a-v1", seed=1))
    register(client, "a", make_adapter("a-v2", seed=2))
    response = client.post("/v1/adapters/a/rollback", json={})
    assert response.status_code == 200
    assert response.json()["current_version"] == 1
    chat(client, "a")
    assert engine.requests[-1]["model"] == "a@1"
    assert (
        client.post("/v1/adapters/a/rollback", json={"version": 2}).json()["current_version"] == 2
    )
    assert client.post("/v1/adapters/a/rollback", json={"version": 9}).status_code == 404
    assert client.post("/v1/adapters/nope/rollback", json={}).status_code == 404


def test_delete(client: TestClient, make_adapter: Any) -> None:
    register(client, "a", make_adapter("a-v1", seed=1))
    register(client, "a", make_adapter("a-v2", seed=2))
    assert client.delete("/v1/adapters/a@2").json()["current_version"] == 1
    assert chat(client, "a@2").status_code == 404
    assert client.delete("/v1/adapters/a").status_code == 200
    response = chat(client, "a")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert "a" not in [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert client.delete("/v1/adapters/a").status_code == 404
    assert client.delete("/v1/adapters/a@x").status_code == 400


def test_engine_restart_is_reconciled(
    client: TestClient, engine: FakeVLLM, make_adapter: Any
) -> None:
    register(client, "a", make_adapter("a"))
    chat(client, "a")
    engine.restart()
    deadline = time.monotonic() + 5
    while "a@1" not in engine.models and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "a@1" in engine.models  # reloaded by the reconcile loop, before any request
    assert len(engine.loads) == 2


def test_failed_load_is_an_error_never_the_base_model(
    client: TestClient, engine: FakeVLLM, make_adapter: Any
) -> None:
    register(client, "a", make_adapter("a"))
    engine.fail_loads = True
    response = chat(client, "a")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "adapter_load_failed"
    assert not engine.requests  # nothing was answered by the base model instead
    engine.fail_loads = False
    assert chat(client, "a").status_code == 200  # a failed load is retried on the next request


def _snapshot(client: TestClient) -> Any:
    return client.get("/v1/adapters").json()


def test_bad_adapters_change_nothing(
    client: TestClient, engine: FakeVLLM, make_adapter: Any, tmp_path: Path, adapter_root: Path
) -> None:
    register(client, "good", make_adapter("good"))
    before = _snapshot(client)

    outside = make_adapter("x")
    elsewhere = tmp_path / "elsewhere"
    os.rename(outside, elsewhere)
    (adapter_root / "escape").symlink_to(elsewhere)
    pickle = make_adapter("pickle")
    (pickle / "adapter_model.bin").write_bytes(b"\x80\x04")
    too_big = make_adapter("big", rank=32)
    saves = make_adapter("saves", config_overrides={"modules_to_save": ["lm_head"]})
    unknown = make_adapter("unknown", config_overrides={"target_modules": ["q_proj", "nope"]})
    other_base = make_adapter("other", base_model_name_or_path="meta-llama/Llama-3.1-8B")
    truncated = make_adapter("truncated")
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])  # a copy cut short: header intact, data not
    cases = [
        ("good", str(elsewhere), 403, "path_not_allowed"),
        ("good", str(adapter_root / "escape"), 403, "path_not_allowed"),
        ("good", "../../etc", 400, "invalid_source"),
        ("good", str(adapter_root / "missing"), 400, "source_not_found"),
        ("good", str(pickle), 400, "pickle_weights"),
        ("good", str(too_big), 400, "rank_too_large"),
        ("good", str(saves), 400, "modules_to_save"),
        ("good", str(unknown), 400, "unknown_target_module"),
        ("good", str(other_base), 400, "base_model_mismatch"),
        ("good", str(truncated), 400, "bad_weights"),
        ("good", "ftp://x/y", 400, "invalid_source"),
        ("../etc", str(make_adapter("n")), 400, "invalid_name"),
        (MODEL, str(make_adapter("m")), 400, "invalid_name"),
    ]
    for name, source, status, code in cases:
        response = register(client, name, source)
        assert response.status_code == status, (source, response.text)
        error = response.json()["error"]
        assert error["code"] == code, (source, error)
        assert set(error) == {"message", "type", "param", "code"}
    response = register(client, "good", make_adapter("good2", seed=3), base_model="llama-70b")
    assert response.json()["error"]["code"] == "base_model_mismatch"
    assert _snapshot(client) == before
    assert [load["lora_name"] for load in engine.loads] == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"rank_pattern": {"q_proj": "8"}},
        {"rank_pattern": ["q_proj"]},
        {"rank_pattern": {"(": 8}},
        {"target_modules": "(q_proj"},
        {"lora_alpha": "sixteen"},
        {"lora_alpha": float("nan")},
        {"r": "8"},
        {"manifest": "NaN"},
    ],
)
def test_mistyped_configs_get_400_and_change_nothing(
    client: TestClient, engine: FakeVLLM, make_adapter: Any, overrides: dict[str, Any]
) -> None:
    register(client, "good", make_adapter("good"))
    before = _snapshot(client)
    if "manifest" in overrides:
        path = make_adapter("bad", seed=1)
        (path / "lorafleet-manifest.json").write_text('{"schema_version": 1, "loss": NaN}')
    else:
        path = make_adapter("bad", seed=1, config_overrides=overrides)
    response = register(client, "good", path)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("bad_config", "bad_rank", "bad_manifest")
    assert _snapshot(client) == before
    assert engine.loads == []


def test_explicit_base_model_wins(client: TestClient, make_adapter: Any) -> None:
    path = make_adapter("renamed", base_model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert register(client, "r", path).status_code == 400
    response = register(client, "r", path, base_model=MODEL)
    assert response.status_code == 201
    assert response.json()["base_model"] == MODEL


def test_stored_copy_is_immutable(client: TestClient, engine: FakeVLLM, make_adapter: Any) -> None:
    path = make_adapter("mutable")
    record = register(client, "m", path).json()
    (path / "adapter_config.json").write_text(json.dumps({"r": 999}))
    chat(client, "m")
    stored = Path(engine.loads[0]["lora_path"])
    assert json.loads((stored / "adapter_config.json").read_text())["r"] == record["rank"]


def test_adapters_declared_in_the_config_are_registered_at_start(
    settings: Any, engine: FakeVLLM, make_adapter: Any
) -> None:
    from lorafleet.server.app import create_app
    from lorafleet.server.settings import AdapterDeclaration
    from tests.server.conftest import wait_ready

    path = make_adapter("declared")
    declared = settings.model_copy(
        update={"adapters": [AdapterDeclaration(name="declared", source=str(path))]}
    )
    for _ in range(2):  # a restart registers nothing new: same content, same version
        with TestClient(create_app(declared, transport=engine.transport())) as client:
            wait_ready(client)
            assert chat(client, "declared").status_code == 200
            assert client.get("/v1/adapters/declared").json()["current_version"] == 1


def test_base_guard_routes_base_requests_through_a_zero_adapter(
    settings: Any, engine: FakeVLLM, make_adapter: Any
) -> None:
    from safetensors.numpy import load_file

    from lorafleet.server.app import create_app
    from tests.server.conftest import wait_ready

    guarded = settings.model_copy(update={"base_guard": "on"})
    with TestClient(create_app(guarded, transport=engine.transport())) as client:
        wait_ready(client)
        reply = client.post("/v1/chat/completions", json={"model": MODEL, **CHAT})
        assert reply.status_code == 200
        assert engine.requests[-1]["model"] == f"{MODEL}@0"
        assert reply.json()["model"] == MODEL  # the client never sees the guard's name
        stream = client.post("/v1/chat/completions", json={"model": MODEL, "stream": True, **CHAT})
        assert f'"model":"{MODEL}@0"' not in stream.text
        assert f'"model":"{MODEL}"' in stream.text
        guard = Path(engine.loads[0]["lora_path"])
        assert all(
            not t.any() for t in load_file(str(guard / "adapter_model.safetensors")).values()
        )
        assert MODEL + "@0" not in [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert chat(client, f"{MODEL}@0").status_code == 404
