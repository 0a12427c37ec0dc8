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
