"""The fleet as the chart deploys it, run as processes (tests/deploy/cluster_sim.py).

helm/lorafleet/ci/cpu-two-models-values.yaml rendered by Helm's own engine: two gateway replicas
on PostgreSQL + Redis, two base models (the default model, two engine replicas; the default
model merged with a trained adapter, one replica), real vLLM CPU engines. One scenario, in
phases, each asserting what a cluster user relies on:

1. an adapter registered through gateway A is served through gateway B, on every replica of
   its base model; each base model's adapters run on their own base only;
2. SIGTERM to an engine pod with streams in flight: they finish (vLLM --shutdown-timeout), new
   requests go to the other replica, the Deployment's replacement joins;
3. a gateway pod deleted under load: no request fails;
4. an engine container crashes and restarts: its adapters come back without a request.

The figures (failures per phase, time to serve on B, ...) are printed, and written as JSON to
$LORAFLEET_SIM_REPORT when set.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai import OpenAI

from lorafleet.adapters.base_models import fetch_model, model_info
from tests.adapter_factory import make_lora_dir
from tests.deploy.cluster_sim import REPO, ClusterSim, Pod, image_env
from tests.deploy.test_helm_chart import CHART, NAMESPACE, RELEASE, render
from tests.merged_model import COURT_MESSAGES, merged_model_dir
from tests.postgres import temporary_database

pytestmark = pytest.mark.integration

BASE, MERGED = "smollm2-135m-instruct", "smollm2-court-merged"
FULLNAME = f"{RELEASE}-lorafleet"
GATEWAY = f"{FULLNAME}-gateway"
ENGINES = {BASE: f"{FULLNAME}-engine-smollm2", MERGED: f"{FULLNAME}-engine-merged"}
PROMPT = COURT_MESSAGES
REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except Exception:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSim]:
    if not _redis_up():
        pytest.skip(f"no Redis at {REDIS_URL} (.ci/run starts one)")
    merged = merged_model_dir()
    base = fetch_model(None, progress=False)
    values = yaml.safe_load((CHART / "ci" / "cpu-two-models-values.yaml").read_text())
    workdir = tmp_path_factory.mktemp("cluster")
    with temporary_database("lorafleet_sim") as database_url:
        values["database"] = {"url": database_url}
        values["redis"] = {"url": REDIS_URL}
        values["gateway"]["extraSettings"]["REDIS_KEY_PREFIX"] = f"sim-{uuid.uuid4().hex[:8]}"
        sim = ClusterSim(
            render(values),
            workdir,
            images={"lorafleet/gateway": image_env(REPO / "Dockerfile")},
            namespace=NAMESPACE,
        )
        # The pools' model caches hold the weights (on a cluster: downloaded or copied there).
        (sim.claim_dir(f"{ENGINES[BASE]}-models") / "smollm2").symlink_to(base)
        (sim.claim_dir(f"{ENGINES[MERGED]}-models") / "merged").symlink_to(merged)
        sim.start()
        try:
            sim.wait_ready(timeout_s=900)
            yield sim
        finally:
            sim.stop()


class Client:
    """The official SDK against one URL with the admin key (the chart always turns auth on)."""

    def __init__(self, url: str, key: str, retries: int = 2) -> None:
        self.url, self.key = url, key
        self.sdk = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=retries, timeout=120)

    def chat(self, model: str, max_tokens: int = 12, **extra: Any) -> str:
        reply = self.sdk.chat.completions.create(
            model=model, messages=PROMPT, max_tokens=max_tokens, temperature=0, **extra
        )
        return reply.choices[0].message.content or ""

    def register(self, name: str, source: Path, base_model: str) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/adapters",
            json={"name": name, "source": str(source), "base_model": base_model},
            headers={"authorization": f"Bearer {self.key}"},
            timeout=60,
        )


def admin_key(sim: ClusterSim) -> str:
    return sim._secret(f"{FULLNAME}-auth", "admin-key")


def engine_models(pod: Pod) -> set[str]:
    try:
        cards = httpx.get(f"{pod.url()}/v1/models", timeout=5).json()["data"]
    except (httpx.HTTPError, ValueError, KeyError):
        return set()
    return {card["id"] for card in cards}


def engine_metric(pod: Pod, name: str) -> float:
    """A vLLM metric of one engine pod, summed over its label sets."""
    text = httpx.get(f"{pod.url()}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def running_requests(pod: Pod) -> float:
    return engine_metric(pod, "vllm:num_requests_running")


def requests_served(pod: Pod) -> float:
    return engine_metric(pod, "vllm:request_success_total")


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


class Load:
    """Background requests, each worker pausing between them (steady traffic that leaves the
    cores to a replacement pod starting up); counts what the client finally sees fail."""

    def __init__(self, call: Callable[[], object], concurrency: int, pause_s: float = 0.5) -> None:
        self.call, self.ok, self.pause_s = call, 0, pause_s
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(concurrency)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.call()
                self.ok += 1
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.pause_s)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return {"requests": self.ok + len(self.failures), "failed": len(self.failures)}


def test_the_chart_runs_as_one_fleet(cluster: ClusterSim, tmp_path: Path) -> None:
    sim, key = cluster, admin_key(cluster)
    figures: dict[str, Any] = {}
    gateway_a, gateway_b = sim.deployment_pods(GATEWAY)
    a, b = Client(gateway_a.url(), key), Client(gateway_b.url(), key)
    service = Client(sim.service_url(GATEWAY), key)

    # --- 1. one registry, one store, two base models ----------------------------------------
    models = {card.id: card for card in b.sdk.models.list().data}
    assert {BASE, MERGED} <= set(models)
    base_answer, merged_answer = b.chat(BASE), b.chat(MERGED)
    assert base_answer != merged_answer, "the two base models are different checkpoints"

    store = sim.claim_dir(f"{FULLNAME}-adapters")  # the chart's adapter volume, /adapters
    info = model_info(fetch_model(None, progress=False))
    support = make_lora_dir(store / "staging" / "support", info, rank=8, seed=1, scale=0.2)
    court = make_lora_dir(store / "staging" / "court", info, rank=8, seed=2, scale=0.2)
    registered = a.register("support", support, BASE)
    assert registered.status_code == 201, registered.text
    figures["served_on_b_after_register_on_a_s"] = round(
        wait_for(lambda: _answers(b, "support"), 60, "gateway B to serve the adapter from A"), 2
    )
    assert b.register("court", court, MERGED).status_code == 201
    figures["served_on_a_after_register_on_b_s"] = round(
        wait_for(lambda: _answers(a, "court"), 60, "gateway A to serve the adapter from B"), 2
    )
    assert a.chat("court") != merged_answer
    assert b.chat("support") != base_answer

    # Enough concurrent requests that bounded-load affinity spills onto the second replica.
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: b.chat("support", max_tokens=32, extra_body={"ignore_eos": True}),
                      range(16)))  # fmt: skip
    smol_engines = sim.deployment_pods(ENGINES[BASE])
    (merged_engine,) = sim.deployment_pods(ENGINES[MERGED])
    assert len(smol_engines) == 2
    for pod in smol_engines:
        assert "support@1" in engine_models(pod), f"{pod.name} lacks the adapter"
        assert "court@1" not in engine_models(pod)  # never on another base's engines
    assert "court@1" in engine_models(merged_engine)
    assert "support@1" not in engine_models(merged_engine)
    cards = {card.id: card.model_dump() for card in a.sdk.models.list().data}
    assert cards["support"]["parent"] == BASE and cards["court"]["parent"] == MERGED

    # --- 2. an engine pod deleted with streams in flight ------------------------------------
    streams: list[dict[str, Any]] = []
    started = threading.Barrier(5)

    def stream() -> None:
        chunks, finish = 0, None
        try:
            response = service.sdk.chat.completions.create(
                model=BASE, messages=PROMPT, max_tokens=128, temperature=0, stream=True,
                extra_body={"ignore_eos": True},
            )  # fmt: skip
            for chunk in response:
                if chunks == 0:
                    started.wait(timeout=120)
                chunks += 1
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
            streams.append({"chunks": chunks, "finish": finish, "error": None})
        except Exception as exc:
            streams.append({"chunks": chunks, "finish": finish, "error": repr(exc)})

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait(timeout=120)
    victim = max(smol_engines, key=running_requests)
    in_flight_on_victim = running_requests(victim)
    load = Load(lambda: service.chat(BASE, max_tokens=8), concurrency=2)
    replacement = sim.delete_pod(victim)
    for thread in threads:
        thread.join(timeout=300)
    wait_for(lambda: victim.stopped.is_set(), 180, "the deleted engine to exit")
    drain = load.stop()
    figures["engine_drain"] = {
        "streams": len(streams),
        "streams_in_flight_on_deleted_engine": in_flight_on_victim,
        "streams_failed": sum(1 for s in streams if s["error"] or s["finish"] != "length"),
        "new_requests": drain["requests"],
        "new_requests_failed": drain["failed"],
        "failures": load.failures[:5],
        "stream_errors": [s["error"] for s in streams if s["error"]],
    }
    print("engine drain:", json.dumps(figures["engine_drain"], indent=2))
    assert in_flight_on_victim >= 1, "the deleted engine had no stream to drain"
    assert len(streams) == 4 and figures["engine_drain"]["streams_failed"] == 0, streams
    assert drain["failed"] == 0, load.failures[:5]
    # The Deployment's replacement pod starts meanwhile; it is checked at the end.

    # --- 3. a gateway pod deleted under load ------------------------------------------------
    load = Load(lambda: service.chat("support", max_tokens=8), concurrency=4)
    time.sleep(3)
    new_gateway = sim.delete_pod(gateway_a)
    wait_for(lambda: new_gateway.ready, 120, "the replacement gateway pod")
    wait_for(lambda: gateway_a.stopped.is_set(), 120, "the deleted gateway to exit")
    time.sleep(5)
    restart = load.stop()
    figures["gateway_restart"] = {**restart, "failures": load.failures[:5]}
    assert restart["failed"] == 0, load.failures[:5]
    assert gateway_a.process is not None and gateway_a.process.returncode == 0

    # --- 4. an engine container crashes: its adapters come back -----------------------------
    restarts = merged_engine.restarts
    sim.kill_container(merged_engine)
    crashed = time.monotonic()
    wait_for(lambda: merged_engine.restarts == restarts + 1 and merged_engine.ready, 600, "restart")
    figures["engine_restart_ready_s"] = round(time.monotonic() - crashed, 1)
    figures["adapters_back_after_ready_s"] = round(
        wait_for(lambda: "court@1" in engine_models(merged_engine), 60, "court@1 reloaded"), 1
    )
    assert Client(new_gateway.url(), key).chat("court") != merged_answer

    # --- 5. the replacement engine pod of phase 2 joined its pool -----------------------------
    wait_for(lambda: replacement.ready, 600, "the replacement engine pod")
    served_before = requests_served(replacement)

    def replacement_serves() -> bool:  # once discovered and health-checked by the gateways
        service.chat(BASE, max_tokens=4)
        return requests_served(replacement) > served_before

    wait_for(replacement_serves, 60, "traffic on the replacement engine pod")

    print("\ncluster-sim figures:", json.dumps(figures, indent=2))
    if report := os.environ.get("LORAFLEET_SIM_REPORT"):
        Path(report).write_text(json.dumps(figures, indent=2) + "\n")


def _answers(client: Client, model: str) -> bool:
    try:
        client.chat(model, max_tokens=4)
    except Exception:
        return False
    return True
