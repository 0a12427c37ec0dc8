"""`lorafleet export --format gguf`: a merged Llama directory as a llama.cpp GGUF file.

The conversion follows llama.cpp's own converter for the llama architecture: tensor names
through gguf-py's `TensorNameMap`, the q/k projections permuted from the Hugging Face rotary
layout (the two halves of each head) to the GGUF one (interleaved pairs), norms kept in f32,
and the hyper-parameters and tokenizer as `llama.*` / `tokenizer.ggml.*` metadata.

Quantisation is gguf-py's numpy round-to-nearest, which needs no calibration data: `q8_0`
(8-bit), `q4_0` and `q4_1` (4-bit), or `f16`. With a 4-bit type the token embeddings and the
output projection stay `q8_0`, as llama.cpp's quantiser keeps them above 4 bits: every
generated token passes through them. A matrix whose rows do not split into whole blocks stays
`f16`. Tensors are read, converted and written one at a time, so memory holds one tensor.

Next to the file, `lorafleet-export.json` records the source (adapter and base fingerprints
from the merge manifest), the method, and each file's size and hash.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorafleet.adapters.manifest import file_sha256, model_fingerprint
from lorafleet.adapters.training.gguf_tokenizer import add_tokenizer
from lorafleet.adapters.training.merge import MERGE_MANIFEST

EXPORT_MANIFEST = "lorafleet-export.json"
QUANTS = ("q8_0", "q4_0", "q4_1", "f16")
_HIGH_PRECISION = ("token_embd.weight", "output.weight")


class ExportError(RuntimeError):
    """The model cannot be exported as asked; the message says why."""


@dataclass(frozen=True)
class TensorPlan:
    source: str  # name in the safetensors file
    file: Path
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy (row-major) shape
    qtype: Any  # gguf.GGMLQuantizationType
    heads: int | None  # permute for rotary with this many heads (q, k projections)
    values: Any = None  # computed here rather than read from `file` (rope_freqs)


def read_config(model_dir: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{model_dir} has no readable config.json: {exc}") from exc
    if config.get("model_type") != "llama":
        raise ExportError(f"only llama models are exported, not {config.get('model_type')!r}")
    return config


def rope_parameters(config: dict[str, Any]) -> tuple[dict[str, Any], float, str]:
    """(parameters, theta, scaling type): transformers 5 nests them in `rope_parameters`."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = float(params.get("rope_theta") or config.get("rope_theta") or 10000.0)
    kind = str(params.get("rope_type") or params.get("type") or "default")
    if kind not in ("default", "linear", "llama3"):
        raise ExportError(f"rope scaling {kind!r} is not exported (default, linear, llama3 are)")
    return params, theta, kind


def llama3_rope_factors(params: dict[str, Any], theta: float, head_dim: int) -> Any:
    """Llama 3.1's rope scaling as llama.cpp takes it: per rotary frequency, the number it
    divides that frequency by (the `rope_freqs` tensor). Long wavelengths are slowed by
    `factor`, short ones kept, the band between interpolated smoothly."""
    import numpy as np

    factor = float(params["factor"])
    low, high = (
        float(params.get("low_freq_factor", 1.0)),
        float(params.get("high_freq_factor", 4.0)),
    )
    context = float(params.get("original_max_position_embeddings", 8192))
    wavelength = 2 * np.pi * theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    smooth = (context / wavelength - low) / (high - low)
    between = 1 / ((1 - smooth) / factor + smooth)
    short, long = wavelength < context / high, wavelength > context / low
    return np.where(short, 1.0, np.where(long, factor, between)).astype(np.float32)


def permute_rotary(weights: Any, heads: int) -> Any:
    """[heads * head_dim, in] from per-head halves (x0..x(d/2-1), y0..) to pairs (x0, y0, ...)."""
    rows = weights.shape[0]
    return (
        weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def tensor_type(name: str, shape: tuple[int, ...], quant: str) -> Any:
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as Q

    if len(shape) == 1:
        return Q.F32
    wanted = {"q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1, "f16": Q.F16}[quant]
    if quant.startswith("q4") and name in _HIGH_PRECISION:
        wanted = Q.Q8_0
    block, _ = GGML_QUANT_SIZES[wanted]
    return wanted if shape[-1] % block == 0 else Q.F16


def plan(model_dir: Path, config: dict[str, Any], quant: str) -> list[TensorPlan]:
    import gguf
    from safetensors import safe_open

    layers = int(config["num_hidden_layers"])
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, layers)
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir} has no .safetensors weights")
    plans = []
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for source in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if source.endswith("rotary_emb.inv_freq"):
                    continue  # recomputed by every runtime from the rope metadata
                name = names.get_name(source, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise ExportError(f"no GGUF name for tensor {source!r}")
                shape = tuple(f.get_slice(source).get_shape())
                rotary = {"q_proj": heads, "k_proj": kv_heads}
                permute = next((n for k, n in rotary.items() if f".{k}." in source), None)
                plans.append(TensorPlan(source, path, name, shape,
                                        tensor_type(name, shape, quant), permute))  # fmt: skip
    params, theta, kind = rope_parameters(config)
    if kind == "llama3":
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
        factors = llama3_rope_factors(params, theta, head_dim)
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        plans.append(TensorPlan("(rope_freqs)", files[0], name, factors.shape,
                                gguf.GGMLQuantizationType.F32, None, factors))  # fmt: skip
    return plans


def add_metadata(writer: Any, config: dict[str, Any], name: str, quant: str) -> None:
    import gguf

    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    params, theta, kind = rope_parameters(config)
    writer.add_name(name)
    writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(theta)
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(params["factor"]))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-5))
    writer.add_vocab_size(int(config["vocab_size"]))
    file_type = {"q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0", "q4_1": "MOSTLY_Q4_1",
                 "f16": "MOSTLY_F16"}[quant]  # fmt: skip
    writer.add_file_type(int(gguf.LlamaFileType[file_type]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def tensor_data(item: TensorPlan) -> Any:
    import torch
    from gguf import quants
    from safetensors import safe_open

    if item.values is not None:
        return item.values
    with safe_open(str(item.file), framework="pt") as f:
        array = f.get_tensor(item.source).to(torch.float32).numpy()
    if item.heads is not None:
        array = permute_rotary(array, item.heads)
    return quants.quantize(array, item.qtype)


def export_gguf(
    model_dir: Path, output_dir: Path, quant: str, *, tokenizer_pre: str | None = None
) -> dict[str, Any]:
    """Write `<output_dir>/<model>-<quant>.gguf`; returns its manifest entry."""
    import gguf
    import numpy as np

    if quant not in QUANTS:
        raise ExportError(f"unknown quantisation {quant!r} (choose from {', '.join(QUANTS)})")
    config = read_config(model_dir)
    plans = plan(model_dir, config, quant)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{model_dir.name}-{quant}.gguf"
    started = time.perf_counter()
    writer = gguf.GGUFWriter(path, "llama")
    try:
        add_metadata(writer, config, model_dir.name, quant)
        pre = add_tokenizer(writer, model_dir, int(config["vocab_size"]), tokenizer_pre)
        for item in plans:
            nbytes = int(np.prod(gguf.quant_shape_to_byte_shape(item.shape, item.qtype)))
            writer.add_tensor_info(item.name, item.shape, np.dtype(np.float32), nbytes,
                                   raw_dtype=item.qtype)  # fmt: skip
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for item in plans:
            writer.write_tensor_data(tensor_data(item))
    finally:
        writer.close()
    types: dict[str, int] = {}
    for item in plans:
        types[item.qtype.name] = types.get(item.qtype.name, 0) + 1
    return {
        "file": path.name,
        "quant": quant,
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "tensors": len(plans),
        "tensor_types": types,
        "tokenizer_pre": pre,
        "seconds": round(time.perf_counter() - started, 1),
    }


def provenance(model_dir: Path) -> dict[str, Any]:
    """What an export was made from: the merged model and, from its merge manifest, the adapter
    and base model behind it. Every export format's manifest starts with this."""
    merge_path = model_dir / MERGE_MANIFEST
    merge = json.loads(merge_path.read_text()) if merge_path.is_file() else {}
    return {
        "source": str(model_dir.resolve()),
        "source_fingerprint": model_fingerprint(model_dir),
        "adapter": merge.get("adapter"),
        "adapter_sha256": merge.get("adapter_sha256"),
        "base_model": merge.get("base_model"),
        "base_fingerprint": merge.get("base_fingerprint"),
        "merged_dtype": merge.get("dtype"),
    }


def export_manifest(model_dir: Path, files: list[dict[str, Any]]) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "format": "gguf",
        **provenance(model_dir),
        "method": (
            "llama-architecture GGUF (llama.cpp tensor names, rotary q/k permutation); "
            f"gguf-py {version('gguf')} numpy "
            "round-to-nearest quantisation; token embeddings/output q8_0 under 4-bit types"
        ),
        "calibration_data_sha256": None,  # round-to-nearest uses no calibration data
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }


def export_model(
    model_dir: Path, output_dir: Path, quants: list[str], *, tokenizer_pre: str | None = None
) -> Path:
    """Every requested quantisation of `model_dir`, plus the manifest; returns its path."""
    files = [export_gguf(model_dir, output_dir, q, tokenizer_pre=tokenizer_pre) for q in quants]
    manifest = output_dir / EXPORT_MANIFEST
    manifest.write_text(json.dumps(export_manifest(model_dir, files), indent=2) + "\n")
    return manifest
