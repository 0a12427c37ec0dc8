"""The Helm chart, rendered by Helm's own engine (helm-python-sdk) and checked offline.

Every example values file under helm/lorafleet/ci/ is rendered, linted with `helm lint --strict`,
and every rendered object is validated with kubernetes-validate's strict schemas. The two custom
resources kubernetes-validate cannot know (ServiceMonitor, ScaledObject) are checked field by
field instead. The remaining tests pin the chart's operational promises: GPUs requested and
limited alike, a startupProbe budget of at least ten minutes, a grace period covering the drain,
engines reachable only from the gateway, secrets referenced rather than inlined.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from lorafleet.adapters.training.llama_server import LlamaServerOptions, llama_server_command
from lorafleet.server.engine.recipe import EngineRecipe
from lorafleet.server.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "lorafleet"
CI_VALUES = sorted(path.name for path in (CHART / "ci").glob("*.yaml"))
GPU_VALUES = [name for name in CI_VALUES if name.startswith("gpu-")]
RELEASE, NAMESPACE = "lf", "ml"
# The oldest version Chart.yaml admits and a current one; kubernetes-validate ships both offline.
KUBE_VERSIONS = ("1.28.0", "1.33.0")
# Custom resources: no schema in kubernetes-validate, asserted field by field below (the
# PrometheusRule by promtool, in test_alert_rules.py).
CRD_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "ScaledObject": "keda.sh/v1alpha1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
# The gateway's settings contract: every variable the chart sets must be a field of the one
# settings class (server/settings.py), or the YAML file pointer.
GATEWAY_SETTINGS = {f"LORAFLEET_{name.upper()}" for name in Settings.model_fields} | {
    "LORAFLEET_CONFIG"
}
SECRET_SETTINGS = {
    "LORAFLEET_DATABASE_URL",
    "LORAFLEET_ADMIN_KEY",
    "LORAFLEET_KEY_SECRET",
    "LORAFLEET_REDIS_URL",
}
# Minimal values for the chart defaults: a registry database is the one required input.
DEFAULT_VALUES: dict[str, Any] = {"database": {"existingSecret": "lorafleet-db"}}

Manifest = dict[str, Any]


# --- rendering --------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """Rejects duplicate mapping keys, which the API server's YAML decoder refuses too."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = {key for key in keys if keys.count(key) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate keys {sorted(duplicates)}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def load_values(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "ci" / name).read_text())
    return values


def render(values: dict[str, Any]) -> list[Manifest]:
    """Validate values against values.schema.json, render, and parse every object."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        files = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests = []
    for path, text in sorted(files.items()):
        if path.endswith(".txt"):
            continue
        manifests += [doc for doc in yaml.load_all(text, Loader=_UniqueKeyLoader) if doc]
    return manifests


@cache
def _render_file(name: str) -> str:
    values = DEFAULT_VALUES if name == "defaults" else load_values(name)
    return json.dumps(render(values))


def rendered(name: str) -> list[Manifest]:
    """Rendered objects of a values file (cached; each caller gets its own copy)."""
    manifests: list[Manifest] = json.loads(_render_file(name))
    return manifests


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def gateway(manifests: list[Manifest]) -> Manifest:
    return named(manifests, "Deployment", f"{RELEASE}-lorafleet-gateway")


def engines(manifests: list[Manifest]) -> list[Manifest]:
    return [
        m
        for m in of_kind(manifests, "Deployment")
        if m["metadata"]["labels"].get("app.kubernetes.io/component") == "engine"
    ]


def vllm_engines(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in engines(manifests) if container(m)["name"] == "vllm"]


def container(deployment: Manifest) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def gateway_settings(manifests: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = named(manifests, "ConfigMap", f"{RELEASE}-lorafleet-gateway")["data"]
    return data


def flag(args: list[str], name: str) -> str | None:
    """Value of `--name=value` in a container's args (None when absent)."""
    values = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"--{name}=")]
    assert len(values) <= 1, f"--{name} given twice"
    return values[0] if values else None


def mount_path(deployment: Manifest, volume: str) -> str:
    mounts = [m for m in container(deployment)["volumeMounts"] if m["name"] == volume]
    assert len(mounts) == 1
    path: str = mounts[0]["mountPath"]
    return path


def volume(deployment: Manifest, name: str) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["volumes"]
    matches = [v for v in volumes if v["name"] == name]
    assert len(matches) == 1
    return matches[0]


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def pool_config(values: dict[str, Any], pool: dict[str, Any]) -> dict[str, Any]:
    """A pool as the chart sees it: the chart's engineDefaults under the file's (Helm merges
    values deeply), then the entry's keys laid over them one level deep (lorafleet.engineConfig)."""
    chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text())["engineDefaults"]
    defaults = _deep_merge(chart_defaults, values.get("engineDefaults", {}))
    merged = copy.deepcopy(defaults)
    for key, value in pool.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def llama_cpp_command(config: dict[str, Any]) -> list[str]:
    """adapters/training/llama_server.py's llama-server command for a chart llama.cpp pool."""
    llama = config["llamaCpp"]
    options = LlamaServerOptions(
        context=config["maxModelLen"], parallel=llama["parallel"], metrics=True,
        gpu_layers=999 if config["gpus"] else None,
    )  # fmt: skip
    binary, gguf = Path("/app/llama-server"), Path(config["model"])
    command = llama_server_command(
        binary, gguf, config["servedModelName"], 8000, options, host="0.0.0.0"
    )
    return command + list(config["extraArgs"])


def recipe_for(config: dict[str, Any], otlp_endpoint: str = "") -> EngineRecipe:
    """lorafleet's one engine recipe (server/engine/recipe.py) for a chart pool's settings."""
    return EngineRecipe(
        model=config["model"],
        served_model_name=config["servedModelName"],
        dtype=config["dtype"],
        max_model_len=config["maxModelLen"],
        enable_lora=True,
        max_loras=config["maxLoras"],
        max_lora_rank=config["maxLoraRank"],
        max_cpu_loras=config["maxCpuLoras"] or None,
        tensor_parallel_size=config["tensorParallelSize"],
        pipeline_parallel_size=config["pipelineParallelSize"],
        distributed_executor_backend=config["distributedExecutorBackend"] or None,
        gpu_memory_utilization=config["gpuMemoryUtilization"] if config["gpus"] else None,
        shutdown_timeout_s=config["shutdownTimeoutSeconds"],
        otlp_traces_endpoint=f"{otlp_endpoint.rstrip('/')}/v1/traces" if otlp_endpoint else None,
        port=8000,
        extra_args=tuple(config["extraArgs"]),
    )


def gateway_reads(manifests: list[Manifest], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The gateway's Settings from what the chart gives its pod: ConfigMap + plain env values
    (Secret references are given a placeholder), read by the one settings class."""
    for key in list(os.environ):
        if key.startswith("LORAFLEET_"):
            monkeypatch.delenv(key)
    env = dict(gateway_settings(manifests))
    for item in container(gateway(manifests))["env"]:
        env[item["name"]] = item.get("value", "x" * 40)
    env["LORAFLEET_DATABASE_URL"] = "sqlite:////tmp/registry.db"
    if "LORAFLEET_REDIS_URL" in env:
        env["LORAFLEET_REDIS_URL"] = "redis://redis:6379/0"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pod_labels(deployment: Manifest) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


# --- the schema and lint ----------------------------------------------------------------------


def _schema_generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gen_values_schema", REPO / "deploy" / "gen_values_schema.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_values_schema_is_generated_from_values_yaml() -> None:
    generator = _schema_generator()
    expected = generator.render(generator.generate(CHART / "values.yaml"))
    committed = (CHART / "values.schema.json").read_text()
    assert committed == expected, (
        "values.schema.json is stale: run python deploy/gen_values_schema.py"
    )


def test_schema_generator_reads_types_comments_and_annotations(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "# Replicas of the thing.\n"
        "# @schema {minimum: 1}\n"
        "replicas: 2\n"
        "# @schema {additionalProperties: true}\n"
        "resources:\n"
        "  requests: {cpu: 1}\n"
        "labels: {}\n"
        "image:\n"
        "  tag: v1\n"
        "defaults:\n"
        "  gpus: 1\n"
        "# @schema {items: {required: [name]}, itemPropertiesFrom: defaults}\n"
        "pools:\n"
        "  - name: a\n"
    )
    schema = _schema_generator().generate(values)
    props = schema["properties"]
    assert props["replicas"] == {
        "type": "integer",
        "description": "Replicas of the thing.",
        "minimum": 1,
    }
    assert props["resources"] == {"type": "object", "additionalProperties": True}
    assert props["labels"] == {"type": "object"}
    assert props["image"]["additionalProperties"] is False
    items = props["pools"]["items"]
    assert items["required"] == ["name"]
    assert set(items["properties"]) == {"name", "gpus"}
    assert items["additionalProperties"] is False
    assert "itemPropertiesFrom" not in props["pools"]


def test_schema_rejects_a_misspelt_key() -> None:
    values = copy.deepcopy(DEFAULT_VALUES)
    values["gateway"] = {"replica": 3}
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match="replica"):
        chart.validate_schema(values)


def test_schema_rejects_an_engine_without_a_model() -> None:
    values = copy.deepcopy(DEFAULT_VALUES)
    values["engines"] = [{"name": "llama", "servedModelName": "llama"}]
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match="model"):
        chart.validate_schema(values)


@pytest.mark.parametrize("name", CI_VALUES)
def test_helm_lint_strict(name: str) -> None:
    report = helm.lint(CHART, load_values(name), strict=True, kube_version="v1.31.0")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert problems == []


# --- every object is a valid Kubernetes object ------------------------------------------------


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", [*CI_VALUES, "defaults"])
def test_rendered_objects_validate_strictly(name: str, kube_version: str) -> None:
    manifests = rendered(name)
    assert manifests
    for manifest in manifests:
        if manifest["kind"] in CRD_KINDS:
            assert manifest["apiVersion"] == CRD_KINDS[manifest["kind"]]
            continue
        where = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(
                f"{name}: {where} invalid for Kubernetes {kube_version}: {path}: {exc.message}"
            )
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{name}: {where}: {exc.message}")


@pytest.mark.parametrize("name", [*CI_VALUES, "defaults"])
def test_objects_are_labelled_and_namespaced_by_helm(name: str) -> None:
    for manifest in rendered(name):
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert "namespace" not in manifest["metadata"]  # helm install -n decides
        assert len(manifest["metadata"]["name"]) <= 63


# --- engines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*CI_VALUES, "defaults"])
def test_engine_pools_run_lorafleets_engine_recipe(name: str) -> None:
    """One recipe for starting vLLM: every pool's command, args and environment are exactly
    what server/engine/recipe.py makes of the same settings."""
    values = DEFAULT_VALUES if name == "defaults" else load_values(name)
    pools = (
        values["engines"]
        if "engines" in values
        else yaml.safe_load((CHART / "values.yaml").read_text())["engines"]
    )
    deployments = {d["metadata"]["labels"]["lorafleet.io/pool"]: d for d in engines(rendered(name))}
    assert set(deployments) == {pool["name"] for pool in pools}
    otlp = values.get("monitoring", {}).get("otlpEndpoint", "")
    for pool in pools:
        config = pool_config(values, pool)
        if config["kind"] == "llama.cpp":  # the command the tests start llama-server with
            server = container(deployments[pool["name"]])
            assert server["command"] + server["args"] == llama_cpp_command(config)
            continue
        recipe = recipe_for(config, otlp)
        vllm = container(deployments[pool["name"]])
        assert vllm["command"] + vllm["args"] == recipe.command("python3")
        env = {e["name"]: e.get("value") for e in vllm["env"]}
        assert recipe.environment().items() <= env.items()


@pytest.mark.parametrize("name", [*CI_VALUES, "defaults"])
def test_engines_drain_within_their_grace_period(name: str) -> None:
    """A rollout or node drain lets vLLM finish its streams: --shutdown-timeout is set, and the
    pod's grace period covers the preStop pause, the drain and a margin."""
    for deployment in vllm_engines(rendered(name)):
        vllm = container(deployment)
        drain = int(flag(vllm["args"], "shutdown-timeout") or 0)
        assert drain >= 30
        pause = int(vllm["lifecycle"]["preStop"]["exec"]["command"][1])
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= pause + drain + 10


@pytest.mark.parametrize("name", [*CI_VALUES, "defaults"])
def test_rollouts_wait_for_the_startup_budget(name: str) -> None:
    """vLLM may take the whole startupProbe budget to download and load weights, and the gateway
    is not ready before its engines: neither rollout may be declared failed sooner."""
    manifests = rendered(name)
    budgets = []
    for deployment in engines(manifests):
        probe = container(deployment)["startupProbe"]
        budgets.append(probe["periodSeconds"] * probe["failureThreshold"])
        assert deployment["spec"]["progressDeadlineSeconds"] > budgets[-1]
    assert gateway(manifests)["spec"]["progressDeadlineSeconds"] > max(budgets, default=0)


@pytest.mark.parametrize("name", GPU_VALUES)
def test_gpu_engines_request_and_limit_the_same_gpus(name: str) -> None:
    for pool, deployment in zip(load_values(name)["engines"], engines(rendered(name)), strict=True):
        vllm = container(deployment)
        resources = vllm["resources"]
        gpus = pool["gpus"]
        assert resources["requests"]["nvidia.com/gpu"] == gpus
        assert resources["limits"]["nvidia.com/gpu"] == gpus
        tp = int(flag(vllm["args"], "tensor-parallel-size") or 0)
        pp = int(flag(vllm["args"], "pipeline-parallel-size") or 0)
        assert tp * pp == gpus
        assert vllm["image"].startswith("vllm/vllm-openai:")
        assert float(flag(vllm["args"], "gpu-memory-utilization") or 0) > 0


def test_the_70b_pool_shards_over_four_gpus() -> None:
    (deployment,) = engines(rendered("gpu-llama3.1-70b-tp4-values.yaml"))
    vllm = container(deployment)
    assert flag(vllm["args"], "tensor-parallel-size") == "4"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 4


def test_the_8b_pool_runs_two_single_gpu_replicas() -> None:
    (deployment,) = engines(rendered("gpu-llama3.1-8b-values.yaml"))
    assert deployment["spec"]["replicas"] == 2
    assert container(deployment)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert flag(container(deployment)["args"], "model") == "meta-llama/Llama-3.1-8B-Instruct"


def test_cpu_demo_engine_uses_the_cpu_image_and_no_gpu() -> None:
    (deployment,) = engines(rendered("cpu-demo-values.yaml"))
    vllm = container(deployment)
    assert "vllm-cpu" in vllm["image"]
    assert flag(vllm["args"], "dtype") == "float32"
    assert flag(vllm["args"], "gpu-memory-utilization") is None
    resources = json.dumps(vllm["resources"])
    assert "gpu" not in resources
    assert not deployment["spec"]["template"]["spec"].get("tolerations")


@pytest.mark.parametrize("name", [*CI_VALUES, "defaults"])
def test_engine_probes_allow_ten_minutes_to_load_weights(name: str) -> None:
    for deployment in engines(rendered(name)):
        vllm = container(deployment)
        startup = vllm["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert vllm[probe]["httpGet"] == {"path": "/health", "port": "http"}
        assert vllm["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"


@pytest.mark.parametrize("name", [*CI_VALUES, "defaults"])
def test_engines_mount_shm_model_cache_and_the_adapter_store(name: str) -> None:
    manifests = rendered(name)
    store = mount_path(gateway(manifests), "adapters")
    assert gateway_settings(manifests)["LORAFLEET_ADAPTER_ROOTS"] == store
    # The gateway copies validated adapters into its store and tells engines to load from there:
    # the store must be on the shared volume, not the pod's scratch space.
    adapter_store = Path(gateway_settings(manifests)["LORAFLEET_ADAPTER_STORE"])
    assert adapter_store.is_relative_to(store)
    for deployment in engines(manifests):
        assert mount_path(deployment, "models") == "/models"
        claim = volume(deployment, "models")["persistentVolumeClaim"]["claimName"]
        assert claim in {p["metadata"]["name"] for p in of_kind(manifests, "PersistentVolumeClaim")}
    for deployment in vllm_engines(manifests):  # llama-server: no adapters, no worker IPC
        assert mount_path(deployment, "dshm") == "/dev/shm"
        assert volume(deployment, "dshm")["emptyDir"]["medium"] == "Memory"
        # vLLM loads an adapter from the very path the gateway validated.
        assert mount_path(deployment, "adapters") == store
        adapters = volume(deployment, "adapters")["persistentVolumeClaim"]
        assert adapters == volume(gateway(manifests), "adapters")["persistentVolumeClaim"] | {
            "readOnly": True
        }


def test_model_weights_come_from_the_hub_not_the_image() -> None:
    manifests = rendered("gpu-llama3.1-8b-values.yaml")
    for deployment in engines(manifests):
        env = {e["name"]: e for e in container(deployment)["env"]}
        assert env["HF_HOME"]["value"].startswith("/models")
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    # The gateway reads the gated model's config.json to validate adapters: it needs the token.
    env = {e["name"]: e for e in container(gateway(manifests))["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}


# --- the gateway ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*CI_VALUES, "defaults"])
def test_gateway_probes_and_drain(name: str) -> None:
    manifests = rendered(name)
    deployment = gateway(manifests)
    app = container(deployment)
    assert app["command"] == ["lorafleet", "serve"]
    assert app["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert app["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert app["livenessProbe"]["httpGet"]["path"] == "/health"
    sleep = int(app["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = float(gateway_settings(manifests)["LORAFLEET_DRAIN_TIMEOUT_S"])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > sleep + drain


def test_gateway_grace_period_follows_the_drain_timeout() -> None:
    manifests = rendered("gpu-llama3.1-70b-tp4-values.yaml")
    assert gateway_settings(manifests)["LORAFLEET_DRAIN_TIMEOUT_S"] == "120"
    assert gateway(manifests)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 125


@pytest.mark.parametrize("name", [*CI_VALUES, "defaults"])
def test_gateway_runs_locked_down(name: str) -> None:
    deployment = gateway(rendered(name))
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    app = container(deployment)
    assert app["securityContext"]["readOnlyRootFilesystem"] is True
    assert app["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("name", [*CI_VALUES, "defaults"])
def test_gateway_settings_are_the_contracts_names(name: str) -> None:
    manifests = rendered(name)
    settings = gateway_settings(manifests)
    env = {e["name"]: e for e in container(gateway(manifests))["env"]}
    used = {key for key in [*settings, *env] if key.startswith("LORAFLEET_")}
    assert used <= GATEWAY_SETTINGS, used - GATEWAY_SETTINGS
    assert settings["LORAFLEET_HOST"] == "0.0.0.0"
    assert settings["LORAFLEET_PORT"] == "8000"
    assert settings["LORAFLEET_LOG_FORMAT"] == "json"


@pytest.mark.parametrize("name", CI_VALUES)
def test_gateway_discovers_every_pool_through_its_headless_service(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = load_values(name)
    manifests = rendered(name)
    settings = gateway_reads(manifests, monkeypatch)
    services = {s["metadata"]["name"]: s for s in of_kind(manifests, "Service")}
    pools, external = values["engines"], values["gateway"].get("externalModels", [])
    models = settings.served_models
    names = [pool["servedModelName"] for pool in pools] + [model["name"] for model in external]
    assert [m.name for m in models] == names
    assert not settings.local_mode
    for model, pool, deployment in zip(
        models[: len(pools)], pools, engines(manifests), strict=True
    ):
        (target,) = model.engine_discovery
        host, port = target.rsplit(":", 1)
        service_name, namespace, *_ = host.split(".")
        assert (namespace, port) == (NAMESPACE, "8000")
        service = services[service_name]
        assert service["spec"]["clusterIP"] == "None"
        assert selects(service["spec"]["selector"], pod_labels(deployment))
        config = pool_config(values, pool)
        assert settings.max_lora_rank_for(model) == config["maxLoraRank"]
        assert model.engine_kind == config["kind"]
        # where config.json is: what vLLM serves, or what the GGUF file was exported from
        source = config["llamaCpp"]["sourceModel"] if config["kind"] == "llama.cpp" else None
        source = source or config["model"]
        if source.startswith("/models/"):  # the pool's cache, mounted in the gateway
            relative = source.removeprefix("/models/")
            assert model.weights == f"/pool-models/{pool['name']}/{relative}"
        else:
            assert model.weights == source


def test_two_pools_are_two_base_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pool is its own base model for the gateway (never one pool named "m,n")."""
    values = _with(
        engines=[
            {"name": "llama", "model": "meta-llama/Llama-3.1-8B-Instruct",
             "servedModelName": "llama-3.1-8b", "maxLoraRank": 64},
            {"name": "merged", "model": "/models/merged", "servedModelName": "merged",
             "maxLoraRank": 16},
        ],
    )  # fmt: skip
    values["gateway"] = {"externalModels": [
        {"name": "llama-405b", "source": "meta-llama/Llama-3.1-405B-Instruct",
         "engineUrls": ["http://vllm-405b-leader:8000"]},
        {"name": "court-q8", "source": "HuggingFaceTB/SmolLM2-135M-Instruct",
         "engineUrls": ["http://llama-server:8080"], "engineKind": "llama.cpp"},
    ]}  # fmt: skip
    manifests = render(values)
    settings = gateway_reads(manifests, monkeypatch)
    llama, merged, big, gguf = settings.served_models
    assert (llama.name, merged.name, big.name) == ("llama-3.1-8b", "merged", "llama-405b")
    assert llama.engine_discovery != merged.engine_discovery
    assert big.engine_urls == ["http://vllm-405b-leader:8000"] and not big.engine_discovery
    # what answers at an external URL: vLLM unless the values say llama.cpp's llama-server
    assert [m.engine_kind for m in settings.served_models] == ["vllm"] * 3 + ["llama.cpp"]
    assert gguf.engine_urls == ["http://llama-server:8080"]
    assert settings.max_lora_rank_for(llama) == 64 and settings.max_lora_rank_for(merged) == 16
    # A model given as a path in the pool's cache: the gateway mounts that cache read-only.
    app = gateway(manifests)
    assert merged.weights.startswith(mount_path(app, "models-merged") + "/")
    assert volume(app, "models-merged")["persistentVolumeClaim"]["readOnly"] is True


@pytest.mark.parametrize(
    ("gpus", "cpu_lora_ops", "guard"), [(0, False, "on"), (0, True, "off"), (1, False, "off")]
)
def test_cpu_pools_without_the_engine_plugin_get_the_base_guard(
    gpus: int, cpu_lora_ops: bool, guard: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM's own CPU LoRA ops answer base requests batched with adapter requests with an
    adapter applied (docs/design/base-guard.md): such pools route base traffic through the guard."""
    pool = {"name": "a", "model": "m", "servedModelName": "m", "gpus": gpus,
            "tensorParallelSize": 1, "cpuLoraOps": cpu_lora_ops}  # fmt: skip
    if gpus and cpu_lora_ops:
        pytest.skip("refused by the chart")
    (model,) = gateway_reads(render(_with(engines=[pool])), monkeypatch).served_models
    assert model.base_guard == guard


def test_the_cpu_demo_answers_base_requests_through_the_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (model,) = gateway_reads(rendered("cpu-demo-values.yaml"), monkeypatch).served_models
    assert model.base_guard == "on"


def test_tracing_reaches_gateway_and_engines_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    values = _with(monitoring={"otlpEndpoint": "http://otel:4318", "accessLog": True})
    manifests = render(values)
    settings = gateway_reads(manifests, monkeypatch)
    assert settings.otlp_endpoint == "http://otel:4318" and settings.access_log
    for deployment in engines(manifests):
        vllm = container(deployment)
        assert flag(vllm["args"], "otlp-traces-endpoint") == "http://otel:4318/v1/traces"
        env = {e["name"]: e.get("value") for e in vllm["env"]}
        assert env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] == "http/protobuf"


def test_ingress_publishes_inference_routes_only() -> None:
    values = _with(gateway={"ingress": {"enabled": True, "hosts": ["llm.example.com"]}})
    (ingress,) = of_kind(render(values), "Ingress")
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert paths == {"/v1/chat/completions", "/v1/completions", "/v1/models"}
    for private in ("/metrics", "/v1/adapters", "/v1/keys", "/v1/usage", "/docs"):
        assert not any(private.startswith(path) for path in paths)


@pytest.mark.parametrize("name", [*CI_VALUES, "defaults"])
def test_secrets_are_referenced_never_inlined(name: str) -> None:
    manifests = rendered(name)
    settings = gateway_settings(manifests)
    assert not SECRET_SETTINGS & set(settings)
    secrets = {s["metadata"]["name"] for s in of_kind(manifests, "Secret")}
    external = {"lorafleet-db", "lorafleet-redis", "hf-token"}
    for workload in [*of_kind(manifests, "Deployment"), *of_kind(manifests, "Job")]:
        for item in container(workload).get("env", []):
            if item["name"] in SECRET_SETTINGS | {"HF_TOKEN"}:
                ref = item["valueFrom"]["secretKeyRef"]
                assert ref["name"] in secrets | external
                assert "value" not in item
    text = json.dumps([m for m in manifests if m["kind"] != "Secret"])
    assert not re.search(r"(postgres(ql)?|redis)://", text)


def test_auth_secret_is_generated_once_and_kept() -> None:
    manifests = rendered("defaults")
    secret = named(manifests, "Secret", f"{RELEASE}-lorafleet-auth")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert len(base64.b64decode(secret["data"]["admin-key"])) >= 32
    assert len(base64.b64decode(secret["data"]["key-secret"])) >= 32


def test_existing_auth_secret_is_used_as_is() -> None:
    values = copy.deepcopy(DEFAULT_VALUES) | {"auth": {"existingSecret": "my-auth"}}
    manifests = render(values)
    assert not [s for s in of_kind(manifests, "Secret") if "auth" in s["metadata"]["name"]]
    env = {e["name"]: e for e in container(gateway(manifests))["env"]}
    assert env["LORAFLEET_ADMIN_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "my-auth",
        "key": "admin-key",
    }


def test_redis_reaches_only_the_gateway_and_only_when_configured() -> None:
    def redis_env(manifests: list[Manifest]) -> list[dict[str, Any]]:
        workloads = [*of_kind(manifests, "Deployment"), *of_kind(manifests, "Job")]
        return [
            item
            for workload in workloads
            for item in container(workload).get("env", [])
            if item["name"] == "LORAFLEET_REDIS_URL"
        ]

    assert not redis_env(rendered("defaults"))  # limits per replica
    existing = rendered("gpu-llama3.1-70b-tp4-values.yaml")  # the trainer is on there too
    (item,) = redis_env(existing)
    assert item in container(gateway(existing))["env"]
    assert item["valueFrom"]["secretKeyRef"] == {"name": "lorafleet-redis", "key": "redis-url"}

    inline = render(copy.deepcopy(DEFAULT_VALUES) | {"redis": {"url": "redis://r:6379/0"}})
    secret = named(inline, "Secret", f"{RELEASE}-lorafleet-redis")
    assert secret["stringData"] == {"redis-url": "redis://r:6379/0"}
    (item,) = redis_env(inline)
    assert item["valueFrom"]["secretKeyRef"]["name"] == f"{RELEASE}-lorafleet-redis"


def test_gateway_scales_with_an_hpa_and_keeps_one_pod_through_drains() -> None:
    manifests = rendered("gpu-llama3.1-8b-values.yaml")
    deployment = gateway(manifests)
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    (hpa,) = of_kind(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    gateway_pdb = named(manifests, "PodDisruptionBudget", deployment["metadata"]["name"])
    assert selects(gateway_pdb["spec"]["selector"]["matchLabels"], pod_labels(deployment))
    assert gateway_pdb["spec"]["minAvailable"] == 1


def test_cpu_demo_runs_one_gateway_without_hpa_or_pdb() -> None:
    manifests = rendered("cpu-demo-values.yaml")
    assert gateway(manifests)["spec"]["replicas"] == 1
    assert not of_kind(manifests, "HorizontalPodAutoscaler")
    assert not of_kind(manifests, "PodDisruptionBudget")


# --- network policy ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*CI_VALUES, "defaults"])
def test_engines_accept_traffic_only_from_the_gateway(name: str) -> None:
    manifests = rendered(name)
    if not engines(manifests):  # every model external: no engine of this release to protect
        assert not of_kind(manifests, "NetworkPolicy")
        return
    (policy,) = of_kind(manifests, "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    selector = spec["podSelector"]["matchLabels"]
    for deployment in engines(manifests):
        assert selects(selector, pod_labels(deployment))
    assert not selects(selector, pod_labels(gateway(manifests)))
    rules = spec["ingress"]
    assert all(rule.get("from") for rule in rules), "a rule without `from` admits everyone"
    gateway_rule = rules[0]["from"]
    assert len(gateway_rule) == 1 and set(gateway_rule[0]) == {"podSelector"}
    assert selects(gateway_rule[0]["podSelector"]["matchLabels"], pod_labels(gateway(manifests)))
    for deployment in engines(manifests):
        assert not selects(gateway_rule[0]["podSelector"]["matchLabels"], pod_labels(deployment))
    monitoring = load_values(name).get("monitoring", {}) if name != "defaults" else {}
    scraped = monitoring.get("serviceMonitor", {}).get("enabled", False)
    prometheus_rules = [r for r in rules[1:] if "namespaceSelector" in r["from"][0]]
    assert len(prometheus_rules) == (1 if scraped else 0)
    for rule in rules:
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


# --- monitoring and autoscaling ---------------------------------------------------------------


@pytest.mark.parametrize("name", GPU_VALUES)
def test_service_monitor_scrapes_gateway_and_engines_once(name: str) -> None:
    manifests = rendered(name)
    (monitor,) = of_kind(manifests, "ServiceMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [
        s for s in of_kind(manifests, "Service") if selects(selector, s["metadata"]["labels"])
    ]
    assert all(s["spec"].get("clusterIP") != "None" for s in scraped)
    components = sorted(s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scraped)
    assert components == ["engine"] * len(engines(manifests)) + ["gateway"]
    for service in scraped:
        assert [p["name"] for p in service["spec"]["ports"]] == ["http"]


def test_keda_scales_the_70b_pool_on_waiting_requests() -> None:
    manifests = rendered("gpu-llama3.1-70b-tp4-values.yaml")
    (scaled,) = of_kind(manifests, "ScaledObject")
    (deployment,) = engines(manifests)
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"]  # KEDA owns it
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] == 3
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    meta = trigger["metadata"]
    assert meta["serverAddress"].startswith("http")
    assert meta["query"].startswith("sum(vllm:num_requests_waiting{")
    assert 'model_name="llama-3.1-70b-instruct"' in meta["query"]
    assert f'namespace="{NAMESPACE}"' in meta["query"]
    assert float(meta["threshold"]) == 8  # KEDA reads thresholds as strings
    assert isinstance(meta["threshold"], str)


def test_no_scaled_object_without_keda() -> None:
    assert not of_kind(rendered("gpu-llama3.1-8b-values.yaml"), "ScaledObject")


def test_grafana_dashboard_covers_gateway_and_engine_metrics() -> None:
    manifests = rendered("gpu-llama3.1-8b-values.yaml")
    (config,) = [m for m in of_kind(manifests, "ConfigMap") if "dashboard" in m["metadata"]["name"]]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config["data"]["lorafleet.json"])
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    text = "\n".join(exprs)
    assert "rate(lorafleet:requests_total" in text
    ttft = (
        "lorafleet:time_to_first_token_seconds_bucket",
        "vllm:time_to_first_token_seconds_bucket",
    )
    for metric in ttft:
        for quantile in ("0.5", "0.99"):
            wanted = f"histogram_quantile({quantile}, "
            assert any(metric in e and e.startswith(wanted) for e in exprs), (metric, quantile)
    assert "rate(vllm:generation_tokens_total" in text
    assert "rate(lorafleet:generation_tokens_total" in text
    assert "vllm:num_requests_waiting" in text
    assert "vllm:kv_cache_usage_perc" in text and "vllm:gpu_cache_usage_perc" in text
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# --- trainer ----------------------------------------------------------------------------------


def test_trainer_job_is_off_by_default() -> None:
    assert not of_kind(rendered("defaults"), "Job")


def test_trainer_job_trains_on_a_gpu_and_publishes_to_the_gateway() -> None:
    manifests = rendered("gpu-llama3.1-70b-tp4-values.yaml")
    (job,) = of_kind(manifests, "Job")
    trainer = container(job)
    assert trainer["command"] == ["lorafleet", "train"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert trainer["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == 1
    publish = trainer["args"][trainer["args"].index("--publish") + 1]
    service = gateway(manifests)["metadata"]["name"]
    assert publish == f"http://{service}.{NAMESPACE}.svc.cluster.local:8000"
    env = {e["name"]: e for e in trainer["env"]}
    assert "secretKeyRef" in env["LORAFLEET_ADMIN_KEY"]["valueFrom"]
    assert mount_path(job, "adapters") == mount_path(gateway(manifests), "adapters")


# --- values the chart refuses -----------------------------------------------------------------


def _with(**changes: Any) -> dict[str, Any]:
    values = copy.deepcopy(DEFAULT_VALUES)
    values.update(changes)
    return values


def _llama_cpp_pool(**changes: Any) -> dict[str, Any]:
    """Values with one valid llama.cpp pool, `changes` laid over it."""
    pool = {"name": "q", "kind": "llama.cpp", "model": "/models/q.gguf", "servedModelName": "q",
            "llamaCpp": {"sourceModel": "m"}, **changes}  # fmt: skip
    return _with(engines=[pool])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (_with(engines=[{"name": "a", "model": "m", "servedModelName": "m", "gpus": 2}]), "gpus"),
        (
            _with(
                engines=[
                    {
                        "name": "a",
                        "model": "m",
                        "servedModelName": "m",
                        "startupProbe": {"failureThreshold": 10},
                    }
                ]
            ),
            "startupProbe",
        ),
        (
            _with(
                engines=[
                    {"name": "a", "model": "m", "servedModelName": "m"},
                    {"name": "a", "model": "n", "servedModelName": "n"},
                ]
            ),
            "twice",
        ),
        (
            _with(
                engines=[
                    {"name": "a", "model": "m", "servedModelName": "m", "maxLoras": 64},
                ]
            ),
            "maxCpuLoras",
        ),
        ({}, "database"),
        (_with(database={"url": "sqlite:////var/lib/lorafleet/registry.db"}), "SQLite"),
        (
            _with(
                engines=[
                    {"name": "a", "model": "m", "servedModelName": "m"},
                    {"name": "b", "model": "n", "servedModelName": "m"},
                ]
            ),
            "one pool per base model",
        ),
        (_with(engines=[{"name": "a", "model": "/data/m", "servedModelName": "m"}]), "/models/"),
        (
            _with(
                engines=[
                    {
                        "name": "a",
                        "model": "/models/m",
                        "servedModelName": "m",
                        "modelCache": {"enabled": False},
                    }
                ]
            ),
            "modelCache.enabled",
        ),
        (
            _with(
                engines=[
                    {
                        "name": "a",
                        "model": "/models/m",
                        "servedModelName": "m",
                        "modelCache": {"accessModes": ["ReadWriteOnce"]},
                    }
                ]
            ),
            "ReadWriteMany",
        ),
        (
            _with(
                engines=[{"name": "a", "model": "m", "servedModelName": "m", "cpuLoraOps": True}]
            ),
            "cpuLoraOps",
        ),
        (
            _with(gateway={"ingress": {"enabled": True, "hosts": ["h"], "paths": ["/"]}}),
            "admin or metrics",
        ),
        (
            _with(
                gateway={
                    "externalModels": [
                        {"name": "llama-3.1-8b-instruct", "engineUrls": ["http://x:8000"]}
                    ]
                }
            ),
            "served twice",
        ),
        (_llama_cpp_pool(model="/models/q"), "GGUF file"),
        (_llama_cpp_pool(llamaCpp={}), "sourceModel is required"),
        (_llama_cpp_pool(llamaCpp={"sourceModel": "/data/m"}), "under /models/"),
        (_llama_cpp_pool(keda={"enabled": True}), "set replicas instead"),
    ],
    ids=[
        "gpus-not-tp-times-pp",
        "short-startup-budget",
        "duplicate-pool",
        "cpu-lora-cache-below-max-loras",
        "no-database",
        "sqlite-with-replicas",
        "two-pools-one-model",
        "model-path-outside-the-cache",
        "model-path-without-a-cache",
        "model-path-in-a-cache-the-gateway-cannot-mount",
        "cpu-ops-on-a-gpu-pool",
        "ingress-publishes-admin-routes",
        "external-model-served-twice",
        "llama-cpp-pool-without-a-gguf-file",
        "llama-cpp-pool-without-its-source-model",
        "llama-cpp-source-model-outside-the-cache",
        "llama-cpp-pool-on-keda",
    ],
)
def test_chart_refuses_values_that_cannot_work(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


def test_pool_entries_override_defaults_key_by_key_including_zero_and_false() -> None:
    values = _with(
        engineDefaults={"keda": {"enabled": True, "maxReplicas": 6}},
        engines=[
            {"name": "gpu", "model": "m", "servedModelName": "m"},
            {
                "name": "cpu",
                "model": "n",
                "servedModelName": "n",
                "gpus": 0,
                "keda": {"enabled": False},
            },
        ],
    )
    manifests = render(values)
    pools = {d["metadata"]["labels"]["lorafleet.io/pool"]: d for d in engines(manifests)}
    assert container(pools["gpu"])["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "gpu" not in json.dumps(container(pools["cpu"])["resources"])
    assert "replicas" not in pools["gpu"]["spec"] and pools["cpu"]["spec"]["replicas"] == 1
    (scaled,) = of_kind(manifests, "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == 6  # defaults kept beside the entry's keys
    models = json.loads(gateway_settings(manifests)["LORAFLEET_MODELS"])
    assert [(m["name"], m["base_guard"]) for m in models] == [("m", "off"), ("n", "on")]


def test_a_gpu_llama_cpp_pool_runs_the_cuda_image_with_every_layer_on_the_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifests = render(
        _llama_cpp_pool(llamaCpp={"sourceModel": "meta-llama/Llama-3.1-8B-Instruct"})
    )
    (deployment,) = engines(manifests)
    server = container(deployment)
    assert server["image"] == "ghcr.io/ggml-org/llama.cpp:server-cuda"
    assert server["args"][server["args"].index("--n-gpu-layers") + 1] == "999"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "env" not in server  # none of vLLM's variables
    (model,) = gateway_reads(manifests, monkeypatch).served_models
    assert model.engine_kind == "llama.cpp" and model.base_guard == "off"
    assert model.weights == "meta-llama/Llama-3.1-8B-Instruct"  # its config.json, not the GGUF
