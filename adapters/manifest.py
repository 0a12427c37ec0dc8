"""The lorafleet manifest: what produced an adapter directory, stored beside its weights.

`lorafleet train` writes `lorafleet-manifest.json` into every adapter directory it produces;
the registry reads it (when present) to record provenance. It is plain JSON, so readers need
neither torch nor this package's training extras:

    {"schema_version": 1, "kind": "lorafleet.adapter", "created_at": "...",
     "base_model": {"id", "path", "fingerprint"}, "dataset": {"path", "sha256", "examples", ...},
     "config": {...}, "libraries": {"torch": "...", ...}, "git_revision": "...",
     "metrics": {"train_loss", "eval_loss", "steps", "wall_time_s", "tokens_per_s", ...},
     "hardware": {"device", "device_name", "precision", ...}}

Reading is tolerant of keys a newer writer adds (as PEFT reads `adapter_config.json`), strict
about the ones this version needs: a missing or mistyped one raises `ManifestError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from lorafleet.adapters.validation import AdapterValidationError, read_safetensors_header

MANIFEST_NAME = "lorafleet-manifest.json"
SCHEMA_VERSION = 1


class ManifestError(ValueError):
    """The manifest is missing, not JSON, or lacks a field this version needs."""


@dataclass(frozen=True)
class BaseModelRef:
    id: str  # what the gateway serves it as, e.g. "smollm2-135m-instruct"
    path: str  # where the trainer loaded it from
    fingerprint: str  # `model_fingerprint`: config.json + the weights' tensor index


@dataclass(frozen=True)
class DatasetRef:
    path: str
    sha256: str
    examples: int
    bytes: int
    eval_path: str | None = None
    eval_sha256: str | None = None
    eval_examples: int = 0


@dataclass(frozen=True)
class TrainingMetrics:
    steps: int
    epochs: float
    train_loss: float | None
    eval_loss: float | None
    wall_time_s: float
    seconds_per_step: float | None
    tokens_per_s: float | None
    train_tokens: int  # non-padding tokens the model saw in this run
    resumed_from_step: int = 0


@dataclass(frozen=True)
class Hardware:
    device: str  # "cpu" | "cuda"
    device_name: str
    precision: str  # "fp32" | "bf16" | "fp16"
    quantization: str | None  # "nf4" for QLoRA
    gradient_checkpointing: bool
    cpu_count: int
    torch_threads: int


@dataclass(frozen=True)
class TrainingManifest:
    created_at: str
    base_model: BaseModelRef
    dataset: DatasetRef
    config: dict[str, Any]
    libraries: dict[str, str]
    git_revision: str | None
    metrics: TrainingMetrics
    hardware: Hardware
    adapter: dict[str, Any] = field(default_factory=dict)  # rank, alpha, target_modules, sha256
    schema_version: int = SCHEMA_VERSION
    kind: str = "lorafleet.adapter"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingManifest:
        return TrainingManifest(
            created_at=_get(data, "created_at", str),
            base_model=_nested(BaseModelRef, data, "base_model"),
            dataset=_nested(DatasetRef, data, "dataset"),
            config=_get(data, "config", dict),
            libraries=_get(data, "libraries", dict),
            git_revision=data.get("git_revision"),
            metrics=_nested(TrainingMetrics, data, "metrics"),
            hardware=_nested(Hardware, data, "hardware"),
            adapter=data.get("adapter") or {},
            schema_version=_get(data, "schema_version", int),
            kind=_get(data, "kind", str),
        )


_T = TypeVar("_T")


def _get(data: dict[str, Any], key: str, kind: type[_T]) -> _T:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ManifestError(f"manifest field {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _nested(cls: type[_T], data: dict[str, Any], key: str) -> _T:
    section = _get(data, key, dict)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in section.items() if k in known})
    except TypeError as exc:  # a required field is missing
        raise ManifestError(f"manifest section {key!r}: {exc}") from exc


def write_manifest(adapter_dir: Path, manifest: TrainingManifest) -> Path:
    """Write atomically (temp file + rename): a reader never sees half a manifest."""
    path = adapter_dir / MANIFEST_NAME
    text = json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=adapter_dir, prefix=f".{MANIFEST_NAME}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    Path(tmp).replace(path)
    return path


def read_manifest(adapter_dir: Path) -> TrainingManifest:
    path = adapter_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"{path} does not exist") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path} is not a JSON object")
    # A newer schema_version only adds fields (a breaking change would take a new `kind`), so
    # it is read like this one: unknown keys are ignored, required ones still checked.
    return TrainingManifest.from_dict(data)


def model_fingerprint(model_dir: Path) -> str:
    """A cheap identity for a base model: sha256 of config.json and each weight file's tensor index.

    The index (tensor names in file order, dtypes, shapes, the header's metadata) changes with any
    re-quantisation or architecture change, and reading it costs kilobytes, not the 16 GB an 8B
    model's weights would. safetensors checks every file against its size while reading it, so a
    truncated download is refused here rather than fingerprinted. When the directory carries
    lorafleet's model manifest with full weight hashes (`lorafleet-model.json`), those are folded
    in too.
    """
    digest = hashlib.sha256()
    digest.update((model_dir / "config.json").read_bytes())
    for name in ("model.safetensors.index.json", "lorafleet-model.json"):
        extra = model_dir / name
        if extra.is_file():
            digest.update(name.encode() + extra.read_bytes())
    for weights in sorted(model_dir.glob("*.safetensors")):
        digest.update(weights.name.encode() + _tensor_index(weights))
    return f"sha256:{digest.hexdigest()}"


def _tensor_index(path: Path) -> bytes:
    try:
        index = read_safetensors_header(path)
    except AdapterValidationError as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    return json.dumps(index, separators=(",", ":")).encode()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"
