"""Adapter validation: everything checked before any engine sees an adapter directory.

A PEFT LoRA directory is accepted only when
- its weights are safetensors (`adapter_model.safetensors`); any pickle file is refused;
- `adapter_config.json` is a LoRA config whose rank `r` (and every `rank_pattern` entry) is
  within the engine's `--max-lora-rank`, and whose `modules_to_save` is empty;
- every target module exists in the base model;
- the tensors agree with the config: only `lora_A`/`lora_B` weights of targeted modules, with
  `lora_A: [r, in]` and `lora_B: [out, r]`;
- the total size is sane.

The tensor index is read with `safetensors.safe_open` (memory-mapped, no tensor loaded), so
validation needs neither torch nor the weights in memory; safetensors itself refuses a file whose
byte ranges do not fit the tensors' shapes or the file's size (a truncated copy, for one).
Unknown keys in adapter_config.json (newer PEFT versions) are ignored, as PEFT itself does.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from safetensors import SafetensorError, safe_open

from lorafleet.adapters.base_models import ModelInfo

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
DEFAULT_MAX_BYTES = 2 * 1024**3
_LAYER = re.compile(r"\.layers\.(\d+)\.")
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B)(?:\.[^.]+)?\.weight$")


class AdapterValidationError(ValueError):
    """The adapter cannot be served; `code` names the rule it broke."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AdapterFacts:
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    base_model_name_or_path: str | None
    size_bytes: int
    sha256: str


def validate_adapter_dir(
    path: Path, *, base: ModelInfo, max_rank: int, max_bytes: int = DEFAULT_MAX_BYTES
) -> AdapterFacts:
    """Check `path` against the rules above; return what the registry records."""
    if not path.is_dir():
        raise AdapterValidationError(f"{path} is not a directory", "not_found")
    pickles = sorted(p.name for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise AdapterValidationError(
            f"pickle weight files are not accepted (only safetensors): {', '.join(pickles)}",
            "pickle_weights",
        )
    config = read_adapter_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise AdapterValidationError(f"{WEIGHTS_NAME} is missing", "missing_weights")
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if size > max_bytes:
        raise AdapterValidationError(
            f"adapter is {size} bytes, over the limit of {max_bytes}", "too_large"
        )

    rank = _check_rank(config, max_rank)
    alpha = _check_alpha(config, rank)
    targets = _check_targets(config, base)
    _check_tensors(weights, config, rank, targets, base)
    return AdapterFacts(
        rank=rank,
        alpha=alpha,
        target_modules=tuple(sorted(targets)),
        base_model_name_or_path=config.get("base_model_name_or_path") or None,
        size_bytes=size,
        sha256=_content_hash(path / CONFIG_NAME, weights),
    )


def read_adapter_config(path: Path) -> dict[str, Any]:
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise AdapterValidationError(f"{CONFIG_NAME} is missing", "missing_config")
    try:
        config = strict_json_loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AdapterValidationError(
            f"{CONFIG_NAME} is not valid JSON: {exc}", "bad_config"
        ) from exc
    if not isinstance(config, dict):
        raise AdapterValidationError(f"{CONFIG_NAME} is not a JSON object", "bad_config")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise AdapterValidationError(
            f"only LoRA adapters are served, not {config.get('peft_type')}", "unsupported_type"
        )
    if config.get("modules_to_save"):
        raise AdapterValidationError(
            "modules_to_save must be empty: vLLM serves LoRA deltas only, not full module copies "
            f"(got {config['modules_to_save']})",
            "modules_to_save",
        )
    return config


def _check_rank(config: dict[str, Any], max_rank: int) -> int:
    rank = config.get("r")
    if not _is_int(rank) or rank < 1:
        raise AdapterValidationError(
            f"adapter rank r must be a positive integer, got {rank!r}", "bad_rank"
        )
    ranks = [rank, *_rank_pattern(config).values()]
    too_big = max(ranks)
    if too_big > max_rank:
        raise AdapterValidationError(
            f"adapter rank {too_big} is over the engine's max LoRA rank {max_rank}",
            "rank_too_large",
        )
    return rank


def _rank_pattern(config: dict[str, Any]) -> dict[str, int]:
    """`rank_pattern` as PEFT means it: module regex -> positive integer rank."""
    pattern = config.get("rank_pattern") or {}
    if not isinstance(pattern, dict):
        raise AdapterValidationError("rank_pattern must be an object", "bad_config")
    for key, rank in pattern.items():
        _regex(key, "rank_pattern")
        if not _is_int(rank) or rank < 1:
            raise AdapterValidationError(
                f"rank_pattern[{key!r}] must be a positive integer, got {rank!r}", "bad_rank"
            )
    return pattern


def _check_alpha(config: dict[str, Any], rank: int) -> float:
    alpha = config.get("lora_alpha")
    if alpha is None:
        return float(rank)  # PEFT's default scale is alpha = r
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1e6:
        raise AdapterValidationError(
            f"lora_alpha must be a positive number, got {alpha!r}", "bad_config"
        )
    return float(alpha)


def _regex(text: str, field: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except (re.error, RecursionError, OverflowError) as exc:
        raise AdapterValidationError(
            f"{field} holds an invalid regular expression {text!r}: {exc}", "bad_config"
        ) from exc


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def strict_json_loads(text: str | bytes) -> Any:
    """JSON as the spec defines it: NaN and Infinity, which Python's `json` accepts, are
    refused (stored, they break every later JSON answer that includes them)."""
    return json.loads(text, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _check_targets(config: dict[str, Any], base: ModelInfo) -> set[str]:
    raw = config.get("target_modules")
    if isinstance(raw, str):
        pattern = _regex(raw, "target_modules")
        targets = {name for name in base.target_modules if pattern.search(name)}
        if not targets:
            raise AdapterValidationError(
                f"target_modules pattern {raw!r} matches no module of the base model",
                "unknown_target_module",
            )
        return targets
    if not isinstance(raw, list) or not raw or not all(isinstance(t, str) for t in raw):
        raise AdapterValidationError(
            "target_modules must be a non-empty list of names", "bad_config"
        )
    unknown = sorted(set(raw) - base.target_modules)
    if unknown:
        raise AdapterValidationError(
            f"target modules not in the base model: {', '.join(unknown)} "
            f"(it has {', '.join(sorted(base.target_modules))})",
            "unknown_target_module",
        )
    return set(raw)


def _check_tensors(
    weights: Path, config: dict[str, Any], rank: int, targets: set[str], base: ModelInfo
) -> None:
    header = read_safetensors_header(weights)
    rank_pattern = _rank_pattern(config)
    seen = 0
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        match = _LORA_KEY.match(key)
        if match is None:
            raise AdapterValidationError(
                f"tensor {key!r} is not a LoRA weight (full module weights are not served)",
                "unexpected_tensor",
            )
        module = match["module"]
        leaf = module.rsplit(".", 1)[-1]
        if leaf not in targets:
            raise AdapterValidationError(
                f"tensor {key!r} targets {leaf!r}, which target_modules does not list",
                "unexpected_tensor",
            )
        expected = next((r for pat, r in rank_pattern.items() if re.search(pat, module)), rank)
        shape = meta.get("shape") if isinstance(meta, dict) else None
        if not isinstance(shape, list) or len(shape) != 2:
            raise AdapterValidationError(f"tensor {key!r} is not a matrix", "shape_mismatch")
        actual = shape[0] if match["part"] == "A" else shape[1]
        if actual != expected:
            raise AdapterValidationError(
                f"tensor {key!r} has rank {actual} but adapter_config.json says r={expected}",
                "shape_mismatch",
            )
        # lora_A is [r, in_features], lora_B is [out_features, r] of the base module.
        in_features, out_features = base.module_shapes[leaf]
        width = shape[1] if match["part"] == "A" else shape[0]
        if width != (in_features if match["part"] == "A" else out_features):
            raise AdapterValidationError(
                f"tensor {key!r} has shape {shape}, which does not fit the base model's "
                f"{leaf} ({in_features} -> {out_features}): trained on a different base model?",
                "base_model_mismatch",
            )
        layer = _LAYER.search(module)
        if layer and int(layer[1]) >= base.num_layers:
            raise AdapterValidationError(
                f"tensor {key!r} names layer {layer[1]}, but the base model has "
                f"{base.num_layers} layers: trained on a different base model?",
                "base_model_mismatch",
            )
        seen += 1
    if seen == 0:
        raise AdapterValidationError(f"{WEIGHTS_NAME} holds no LoRA tensors", "empty_adapter")


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor index: name -> {"dtype", "shape"}, plus "__metadata__" when the file has any.

    safetensors checks what a hand-written header parser missed: the header's size, that each
    tensor's byte range matches its dtype and shape, and that the ranges cover the file exactly.
    """
    try:
        index: dict[str, Any] = {}
        with safe_open(str(path), framework="numpy") as weights:
            for name in weights.offset_keys():
                tensor = weights.get_slice(name)
                index[name] = {"dtype": tensor.get_dtype(), "shape": tensor.get_shape()}
            metadata = weights.metadata()
    except (OSError, SafetensorError) as exc:
        raise AdapterValidationError(
            f"{path.name} is not a safetensors file: {exc}", "bad_weights"
        ) from exc
    if metadata:
        index["__metadata__"] = metadata
    return index


def _content_hash(*files: Path) -> str:
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
