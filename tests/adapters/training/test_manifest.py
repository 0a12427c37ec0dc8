"""The lorafleet manifest: round trip, tolerant reading, model fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from lorafleet.adapters.manifest import (
    MANIFEST_NAME,
    BaseModelRef,
    DatasetRef,
    Hardware,
    ManifestError,
    TrainingManifest,
    TrainingMetrics,
    model_fingerprint,
    read_manifest,
    write_manifest,
)


def sample() -> TrainingManifest:
    return TrainingManifest(
        created_at="2026-01-01T00:00:00+00:00",
        base_model=BaseModelRef(id="smollm2-135m-instruct", path="/m", fingerprint="sha256:ab"),
        dataset=DatasetRef(path="/d.jsonl", sha256="sha256:cd", examples=10, bytes=1000),
        config={"lora_r": 16},
        libraries={"torch": "2.13.0"},
        git_revision=None,
        metrics=TrainingMetrics(
            steps=2,
            epochs=0.1,
            train_loss=1.0,
            eval_loss=None,
            wall_time_s=3.0,
            seconds_per_step=1.5,
            tokens_per_s=100.0,
            train_tokens=300,
        ),
        hardware=Hardware(
            device="cpu",
            device_name="CPU",
            precision="fp32",
            quantization=None,
            gradient_checkpointing=False,
            cpu_count=2,
            torch_threads=2,
        ),
    )


def test_round_trip(tmp_path: Path) -> None:
    write_manifest(tmp_path, sample())
    assert read_manifest(tmp_path) == sample()
    assert not list(tmp_path.glob(f".{MANIFEST_NAME}*"))  # no temp file left behind


def test_newer_fields_are_ignored(tmp_path: Path) -> None:
    data = sample().to_dict()
    data["schema_version"] = 2
    data["future"] = {"x": 1}
    data["metrics"]["flops"] = 1e12
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    assert read_manifest(tmp_path).metrics.steps == 2


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("dataset"), "field 'dataset' must be dict"),
        (lambda d: d["metrics"].pop("steps"), "section 'metrics'"),
        (lambda d: d.update(created_at=5), "field 'created_at' must be str"),
    ],
)
def test_missing_fields_are_errors(tmp_path: Path, mutate: object, message: str) -> None:
    data = sample().to_dict()
    mutate(data)  # type: ignore[operator]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path)


def test_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{")
    with pytest.raises(ManifestError, match="not readable JSON"):
        read_manifest(tmp_path)


def _fake_model(path: Path, shape: list[int]) -> Path:
    path.mkdir()
    (path / "config.json").write_text('{"model_type": "llama"}')
    save_file({"w": np.zeros(shape, np.float32)}, str(path / "model.safetensors"))
    return path


def test_fingerprint_follows_config_and_tensor_index(tmp_path: Path) -> None:
    a = model_fingerprint(_fake_model(tmp_path / "a", [2, 2]))
    assert a == model_fingerprint(_fake_model(tmp_path / "a2", [2, 2]))
    assert a != model_fingerprint(_fake_model(tmp_path / "b", [2, 3]))
    assert a.startswith("sha256:")


def test_fingerprint_refuses_a_truncated_weight_file(tmp_path: Path) -> None:
    model = _fake_model(tmp_path / "a", [4, 4])
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(ManifestError, match=r"model\.safetensors is not a safetensors file"):
        model_fingerprint(model)
