"""The gateway runs without the engine and trainer stack (requirements/gateway.lock).

A child interpreter refuses to import torch, transformers, vLLM, PEFT, TRL, datasets and
accelerate, then runs `lorafleet serve --help` and a cluster-mode gateway (engine URL, fake
engine, the default base model with an empty cache) through registration, an adapter request
and a streamed base request. The child needs no pytest: it runs the same in a venv built from
requirements/gateway.lock (docs/design/lean-gateway.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE_STACK = ("torch", "transformers", "vllm", "peft", "trl", "datasets", "accelerate")

CHILD = r"""
import importlib.abc, json, sys
from pathlib import Path

BLOCKED = set(sys.argv[1].split(","))


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not part of the gateway install")
        return None


sys.meta_path.insert(0, Refuse())
tmp = Path(sys.argv[2])

from lorafleet.cli import main

try:
    main(["serve", "--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code

import time

from fastapi.testclient import TestClient

from lorafleet.adapters.base_models import fetch_model_config, model_info
from lorafleet.server.app import create_app
from lorafleet.server.settings import Settings
from tests.adapter_factory import make_lora_dir
from tests.fake_vllm import MODEL, FakeVLLM

# The default base model, never built here: validation needs its config.json alone.
roots = tmp / "adapters"
base = model_info(fetch_model_config(None, tmp / "cache"))
adapter = make_lora_dir(roots / "court", base, layers=range(2))
settings = Settings(
    engine_urls=["http://engine-0:8000"], served_model_name=MODEL, cache_dir=tmp / "cache",
    adapter_roots=[roots], health_interval_s=0.05,
)
engine = FakeVLLM()
with TestClient(create_app(settings, transport=engine.transport())) as client:
    deadline = time.monotonic() + 30
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "gateway never became ready"
        time.sleep(0.01)
    added = client.post("/v1/adapters", json={"name": "court", "source": str(adapter)})
    assert added.status_code in (200, 201), added.text
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    answer = client.post("/v1/chat/completions", json={"model": "court", **chat})
    assert answer.status_code == 200, answer.text
    streamed = client.post("/v1/chat/completions", json={"model": MODEL, "stream": True, **chat})
    assert streamed.text.rstrip().endswith("data: [DONE]"), streamed.text
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)))
"""


def test_gateway_runs_without_the_engine_and_trainer_stack(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, ",".join(ENGINE_STACK), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "--engine [NAME=]URL" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"
