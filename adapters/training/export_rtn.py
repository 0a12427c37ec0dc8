"""Data-free `w8a8` / `w4a16` exports with the lock's compressed-tensors alone (no llmcompressor).

Round-to-nearest needs no calibration: each weight's scale is its group's (w4a16) or output
channel's (w8a8) largest magnitude over the type's half range, the zero point 0 (symmetric),
exactly what llmcompressor's `QuantizationModifier` computes with its default min-max
observer. w8a8's activations are quantised per token at run time (dynamic), so they need no
calibration either. compressed-tensors then packs the weights (`pack-quantized` int4,
`int-quantized` int8) and writes the `quantization_config` vLLM reads.

What needs llmcompressor (`export_quant.QUANT_INSTALL`): anything calibrated, SmoothQuant and
GPTQ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# compressed-tensors ships no type information
from compressed_tensors.compressors import ModelCompressor  # type: ignore[import-untyped]
from compressed_tensors.quantization import (  # type: ignore[import-untyped]
    QuantizationArgs,
    QuantizationConfig,
    QuantizationScheme,
    QuantizationStatus,
    apply_quantization_config,
    preset_name_to_scheme,
)
from compressed_tensors.quantization.utils import (  # type: ignore[import-untyped]
    calculate_qparams,
)

IGNORE = ["lm_head"]  # tied to the embeddings in SmolLM2; kept in the model's dtype


def scheme(fmt: str, group: int) -> Any:
    """The compressed-tensors scheme of `fmt` for every Linear layer: W8A8 (int8 weights per
    output channel, int8 dynamic per-token activations) or int4 weights in groups of
    `group`."""
    if fmt == "w8a8":
        return preset_name_to_scheme("W8A8", ["Linear"])
    args = QuantizationArgs(num_bits=4, type="int", strategy="group", group_size=group,
                            symmetric=True, dynamic=False)  # fmt: skip
    return QuantizationScheme(targets=["Linear"], weights=args)


def quantize_weights(model: Any, fmt: str, group: int) -> Any:
    """Quantise `model`'s Linear weights in place; returns the compressor whose
    `update_config` writes `quantization_config` after `model.save_pretrained`."""
    import torch

    config = QuantizationConfig(config_groups={"group_0": scheme(fmt, group)}, ignore=IGNORE,
                                quantization_status=QuantizationStatus.INITIALIZED)  # fmt: skip
    apply_quantization_config(model, config)
    with torch.no_grad():
        for module in model.modules():
            weights = getattr(getattr(module, "quantization_scheme", None), "weights", None)
            if weights is None:
                continue
            w = module.weight
            if weights.strategy == "group":
                view = w.reshape(w.shape[0], -1, weights.group_size)
                low, high = view.amin(dim=-1), view.amax(dim=-1)
            else:  # per output channel
                low, high = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
            scale, zero_point = calculate_qparams(low, high, weights)
            module.weight_scale.copy_(scale.reshape(module.weight_scale.shape))
            module.weight_zero_point.copy_(zero_point.reshape(module.weight_zero_point.shape))
            module.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    return compressor


def save(model: Any, tokenizer: Any, output_dir: Path, fmt: str, group: int) -> None:
    """Round-to-nearest `fmt` of `model`, saved as a compressed-tensors checkpoint."""
    compressor = quantize_weights(model, fmt, group)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    compressor.update_config(str(output_dir))
