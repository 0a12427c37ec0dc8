"""`lorafleet serve` flags: repeatable --model [NAME=]SOURCE and --engine [NAME=]URL."""

from __future__ import annotations

import pytest

from lorafleet.server.cli import model_flags
from lorafleet.server.settings import Settings


def test_plain_flags_keep_their_single_model_meaning() -> None:
    assert model_flags([], []) == {"model": None, "engine_urls": None}
    assert model_flags(["/srv/m"], ["http://e:8000"]) == {
        "model": "/srv/m",
        "engine_urls": ["http://e:8000"],
    }


def test_several_models_become_the_models_list() -> None:
    flags = model_flags(["smollm2-135m-instruct", "merged=/srv/runs/merged"], [])
    settings = Settings(**flags)
    assert [(m.name, m.weights) for m in settings.served_models] == [
        ("smollm2-135m-instruct", "smollm2-135m-instruct"),
        ("merged", "/srv/runs/merged"),
    ]
    assert settings.local_mode


def test_engines_are_grouped_by_model() -> None:
    flags = model_flags(
        ["llama=meta-llama/Llama-3.1-8B-Instruct"],
        ["llama=http://a:8000", "qwen=http://b:8000", "llama=http://c:8000?x=1"],
    )
    settings = Settings(**flags)
    llama, qwen = settings.served_models
    assert llama.engine_urls == ["http://a:8000", "http://c:8000?x=1"]
    assert (qwen.name, qwen.weights, qwen.engine_urls) == ("qwen", "qwen", ["http://b:8000"])
    assert not settings.local_mode
    # A URL without a name belongs to the one model there is.
    (only,) = Settings(**model_flags(["m=/srv/m"], ["http://a:8000"])).served_models
    assert only.engine_urls == ["http://a:8000"]
    with pytest.raises(ValueError, match="NAME="):
        model_flags(["a=/x", "b=/y"], ["http://a:8000"])
