"""TrainConfig: defaults < YAML < flags, unknown keys rejected, values checked."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lorafleet.adapters.training.config import (
    ConfigError,
    TrainConfig,
    add_config_arguments,
    build_config,
    config_from_args,
    resolve_target_modules,
)

LLAMA_MODULES = frozenset(
    {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
)


def parse(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_defaults_are_cpu_friendly() -> None:
    config = build_config({})
    assert config.precision == "auto"
    assert config.gradient_checkpointing is None  # decided by the hardware plan
    assert config.lora_r <= config.max_lora_rank


def test_flags_override_yaml(tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text("dataset: data.jsonl\nlora-r: 8\nlearning_rate: 0.001\nmax_steps: 30\n")
    config = parse(["--config", str(run), "--max-steps", "5", "--output", "out"])
    assert config.max_steps == 5  # flag wins
    assert config.lora_r == 8  # kebab-case YAML key accepted
    assert config.learning_rate == 0.001
    assert config.dataset == "data.jsonl"
    assert config.output == "out"


def test_boolean_flags_and_bare_resume() -> None:
    config = parse(["--no-progress", "--gradient-checkpointing", "--resume"])
    assert config.progress is False
    assert config.gradient_checkpointing is True
    assert config.resume == "latest"
    assert parse(["--resume", "/ckpt/checkpoint-4"]).resume == "/ckpt/checkpoint-4"


def test_unknown_yaml_key_is_rejected(tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text("lora_rank: 8\n")
    with pytest.raises(
        ConfigError, match=r"unknown option\(s\): lora_rank; valid options: base_model"
    ):
        parse(["--config", str(run)])


def test_unknown_flag_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--lora-rank", "8"])
    assert "unrecognized arguments: --lora-rank" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lora_r": "8"}, "lora_r must be int"),
        ({"epochs": "two"}, "epochs must be float"),
        ({"qlora": "yes"}, "qlora must be true or false"),
        ({"max_steps": 0}, "max_steps must be -1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"lora_r": 32}, "over the serving engines' max LoRA rank 16"),
        ({"precision": "int8"}, "precision must be one of"),
        ({"lora_r": None}, "lora_r may not be null"),
    ],
)
def test_bad_values_are_explained(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(values)


def test_yaml_must_be_a_mapping(tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse(["--config", str(run)])


def test_integers_widen_to_float_in_yaml() -> None:
    assert build_config({"epochs": 3}).epochs == 3.0


def test_checkpoints_live_beside_the_adapter(tmp_path: Path) -> None:
    config = build_config({"output": str(tmp_path / "adapters" / "court")})
    assert config.checkpoint_path == tmp_path / "adapters" / "court.checkpoints"


def test_served_base_id_from_a_local_directory(tmp_path: Path) -> None:
    base = tmp_path / "my-llama"
    base.mkdir()
    assert build_config({"base_model": str(base)}).served_base_id == "my-llama"
    assert build_config({"base_model": str(base), "base_model_id": "x"}).served_base_id == "x"
    assert build_config({}).served_base_id == "smollm2-135m-instruct"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("attention", ["q_proj", "k_proj", "v_proj", "o_proj"]),
        ("mlp", ["gate_proj", "up_proj", "down_proj"]),
        ("q_proj, v_proj", ["q_proj", "v_proj"]),
    ],
)
def test_target_module_groups(spec: str, expected: list[str]) -> None:
    assert resolve_target_modules(spec, LLAMA_MODULES) == expected
    assert len(resolve_target_modules("all-linear", LLAMA_MODULES)) == 7


def test_unknown_target_module_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="c_attn not in the base model"):
        resolve_target_modules("q_proj,c_attn", LLAMA_MODULES)
