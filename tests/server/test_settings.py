from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lorafleet.server.settings import Settings, load_settings


def test_defaults_are_local_mode_on_the_default_model() -> None:
    settings = Settings()
    assert settings.local_mode
    assert settings.base_model_id == "smollm2-135m-instruct"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_precedence_flags_over_env_over_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("port: 9000\nlog_level: debug\nengine_max_loras: 8\n")
    monkeypatch.setenv("LORAFLEET_LOG_LEVEL", "warning")
    settings = load_settings(config, port=9100, host=None)
    assert settings.port == 9100  # flag
    assert settings.log_level == "warning"  # env beats the file
    assert settings.engine_max_loras == 8  # file
    assert settings.host == "127.0.0.1"  # unset flag: default


def test_env_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAFLEET_ENGINE_URLS", "http://a:8000/, http://b:8000")
    monkeypatch.setenv("LORAFLEET_SERVED_MODEL_NAME", "m")
    monkeypatch.setenv("LORAFLEET_ADAPTER_ROOTS", "/srv/a:/srv/b")
    settings = Settings()
    assert settings.engine_urls == ["http://a:8000", "http://b:8000"]
    assert settings.adapter_roots == [Path("/srv/a"), Path("/srv/b")]
    assert not settings.local_mode


@pytest.mark.parametrize(
    "kwargs",
    [
        {"engine_urls": ["not a url"], "served_model_name": "m"},
        {"engine_urls": ["http://a:8000"]},  # cluster mode needs the served model name
        {"engine_discovery": ["no-port"], "served_model_name": "m"},
        {"port": 0},
        {"log_level": "loud"},
        {"no_such_setting": 1},
        {"redis_url": "http://127.0.0.1:6379"},
        {"redis_key_prefix": "has spaces"},
        {"metrics_max_adapter_labels": -1},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("prot: 9000\n")
    with pytest.raises(ValidationError):
        load_settings(config)
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.yaml")


def test_redis_is_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().redis_url is None  # limits per process
    monkeypatch.setenv("LORAFLEET_REDIS_URL", "")  # an empty Helm value means the same
    assert Settings().redis_url is None
    monkeypatch.setenv("LORAFLEET_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.setenv("LORAFLEET_METRICS_MAX_ADAPTER_LABELS", "500")
    settings = Settings()
    assert (settings.redis_url, settings.metrics_max_adapter_labels) == (
        "redis://redis:6379/0",
        500,
    )


def test_several_models_from_yaml_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(
        "models:\n"
        "  - {name: smollm2-135m-instruct}\n"
        "  - {name: merged, source: /srv/merged, replicas: 2, max_lora_rank: 8}\n"
    )
    settings = load_settings(config)
    assert [m.name for m in settings.served_models] == ["smollm2-135m-instruct", "merged"]
    assert settings.served_models[1].weights == "/srv/merged"
    assert settings.max_lora_rank_for(settings.served_models[1]) == 8
    assert settings.max_lora_rank_for(settings.served_models[0]) == 16
    assert settings.local_mode
    # Helm passes the list as JSON in LORAFLEET_MODELS.
    monkeypatch.setenv(
        "LORAFLEET_MODELS",
        '[{"name": "a", "engine_discovery": ["a-pods:8000"]},'
        ' {"name": "b", "source": "org/b", "engine_urls": "http://b:8000/"}]',
    )
    settings = Settings()
    assert not settings.local_mode
    assert settings.served_models[1].engine_urls == ["http://b:8000"]


def test_one_model_without_a_list_is_the_flat_settings() -> None:
    (only,) = Settings(model="/srv/m", replicas=2).served_models
    assert (only.name, only.weights, only.replicas) == ("m", "/srv/m", None)


@pytest.mark.parametrize(
    "models",
    [
        [{"name": "a"}, {"name": "a"}],  # one pool per name
        [{"name": "a"}, {"name": "b", "engine_urls": ["http://b:8000"]}],  # local and cluster
        [{"name": "a/b"}],
        [{"name": "a", "engine_discovery": ["no-port"]}],
        [{"name": "a", "replicas": 0}],
    ],
)
def test_bad_model_lists_are_refused(models: list[dict[str, object]]) -> None:
    with pytest.raises(ValidationError):
        Settings(models=models)  # type: ignore[arg-type]


def test_a_model_list_with_flat_engine_settings_is_refused() -> None:
    with pytest.raises(ValidationError, match="per model"):
        Settings(models=[{"name": "a"}], engine_urls=["http://a:8000"])  # type: ignore[list-item]
