"""`TrainConfig`: one dataclass for `lorafleet train`, filled from defaults < YAML < flags.

The flags are generated from the dataclass fields (`lora_r` -> `--lora-r`, help from the
field's metadata), so the configuration is written down once. A YAML file given with
`--config run.yaml` may use either spelling (`lora_r` or `lora-r`); a key that is not a field
is an error, as is a flag argparse does not know.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from lorafleet.adapters.base_models import DEFAULT_MODEL_ID


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what is accepted."""


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _f(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    # --- data and model
    base_model: str = _f(DEFAULT_MODEL_ID, "base model id, Hugging Face id or local directory")
    base_model_id: str | None = _f(
        None, "id the gateway serves the base as (default: --base-model when it is an id)"
    )
    dataset: str | None = _f(None, "training JSONL (chat `messages` or `prompt`/`completion`)")
    eval_dataset: str | None = _f(None, "evaluation JSONL (same formats); eval loss at the end")
    output: str | None = _f(None, "adapter directory to write (must not exist unless --overwrite)")
    checkpoint_dir: str | None = _f(None, "checkpoints (default: OUTPUT.checkpoints beside it)")
    overwrite: bool = _f(False, "replace an existing adapter directory")
    # --- schedule
    max_steps: int = _f(-1, "optimizer steps; -1 trains for --epochs")
    epochs: float = _f(1.0, "epochs when --max-steps is -1")
    learning_rate: float = _f(2e-4, "peak learning rate (AdamW)")
    lr_scheduler: str = _f("linear", "transformers scheduler name (linear, cosine, constant, ...)")
    warmup_ratio: float = _f(0.05, "share of steps spent warming up the learning rate")
    batch_size: int = _f(4, "examples per device per forward pass")
    grad_accum: int = _f(1, "forward passes per optimizer step")
    max_length: int = _f(512, "tokens per example; longer ones are truncated")
    group_by_length: bool = _f(
        False, "batch examples of similar length together (less padding, faster on CPU)"
    )
    seed: int = _f(42, "seed for data order, dropout and LoRA init")
    max_minutes: float | None = _f(
        None, "stop (and save) after this much training time; pairs with a constant schedule"
    )
    # --- LoRA
    lora_r: int = _f(16, "LoRA rank")
    lora_alpha: int = _f(32, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = _f(0.05, "dropout on the LoRA path")
    target_modules: str = _f(
        "all-linear", "attention | mlp | all-linear | comma-separated names (q_proj,v_proj)"
    )
    max_lora_rank: int = _f(16, "the serving engines' --max-lora-rank; checked before training")
    # --- hardware
    precision: str = _f("auto", "auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16")
    gradient_checkpointing: bool | None = _f(
        None, "trade compute for memory (default: on for CUDA, off on CPU)"
    )
    qlora: bool = _f(False, "load the base in 4-bit NF4 (bitsandbytes, CUDA only)")
    threads: int | None = _f(None, "torch CPU threads (default: torch's choice)")
    # --- bookkeeping
    logging_steps: int = _f(5, "log loss and learning rate every N steps")
    save_steps: int = _f(50, "checkpoint every N steps")
    save_total_limit: int = _f(2, "checkpoints kept")
    resume: str | None = _f(
        None, "resume: a checkpoint directory, or 'latest' (bare --resume) in --checkpoint-dir"
    )
    progress: bool = _f(True, "show a progress bar")
    # --- publishing
    publish: str | None = _f(None, "gateway URL: register the adapter there after training")
    adapter_name: str | None = _f(None, "name to publish under (default: output directory name)")

    @property
    def output_path(self) -> Path:
        if not self.output:
            raise ConfigError("output is required (--output DIR or `output:` in the config)")
        return Path(self.output).expanduser().resolve()

    @property
    def checkpoint_path(self) -> Path:
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir).expanduser().resolve()
        out = self.output_path
        return out.with_name(out.name + ".checkpoints")

    @property
    def served_base_id(self) -> str:
        if self.base_model_id:
            return self.base_model_id
        return Path(self.base_model).name if Path(self.base_model).is_dir() else self.base_model

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES: dict[str, Any] = get_type_hints(TrainConfig)


def _scalar_type(name: str) -> type:
    hint = _TYPES[name]
    if get_origin(hint) in (Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    assert isinstance(hint, type)
    return hint


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config` plus one flag per field; unset flags stay absent from the namespace."""
    parser.add_argument("--config", type=Path, help="YAML file of these options; flags override it")
    for name, fld in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        kind = _scalar_type(name)
        help_text = f"{fld.metadata['help']} (default: {fld.default})"
        if name == "resume":
            parser.add_argument(
                flag, nargs="?", const="latest", default=argparse.SUPPRESS, help=help_text
            )
        elif kind is bool:
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the YAML file, then the flags given on the command line; validated."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        values.update(load_yaml(args.config))
    values.update({name: getattr(args, name) for name in FIELDS if hasattr(args, name)})
    return build_config(values)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping of option: value")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def build_config(values: dict[str, Any]) -> TrainConfig:
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown option(s): {', '.join(unknown)}; valid options: {', '.join(FIELDS)}"
        )
    coerced = {name: _coerce(name, value) for name, value in values.items()}
    config = TrainConfig(**coerced)
    validate(config)
    return config


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        if type(None) in get_args(_TYPES[name]):
            return None
        raise ConfigError(f"{name} may not be null")
    kind = _scalar_type(name)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{name} must be {kind.__name__}, got {value!r}")
    return value


def validate(config: TrainConfig) -> None:
    """Checks that need no model or data: ranges and choices."""
    positive = ("batch_size", "grad_accum", "max_length", "lora_r", "lora_alpha", "max_lora_rank")
    for name in (*positive, "logging_steps", "save_steps", "save_total_limit"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.max_steps == 0 or config.max_steps < -1:
        raise ConfigError(
            f"max_steps must be -1 (use --epochs) or positive, got {config.max_steps}"
        )
    if config.max_steps == -1 and config.epochs <= 0:
        raise ConfigError(f"epochs must be positive, got {config.epochs}")
    if config.lora_r > config.max_lora_rank:
        raise ConfigError(
            f"lora_r={config.lora_r} is over the serving engines' max LoRA rank "
            f"{config.max_lora_rank}; lower --lora-r or raise --max-lora-rank to match the engines"
        )
    if not 0.0 <= config.lora_dropout < 1.0 or not 0.0 <= config.warmup_ratio < 1.0:
        raise ConfigError("lora_dropout and warmup_ratio must be in [0, 1)")
    if config.precision not in PRECISIONS:
        raise ConfigError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}"
        )
    if config.max_minutes is not None and config.max_minutes <= 0:
        raise ConfigError(f"max_minutes must be positive, got {config.max_minutes}")
    if config.learning_rate <= 0:
        raise ConfigError(f"learning_rate must be positive, got {config.learning_rate}")


def resolve_target_modules(spec: str, available: frozenset[str]) -> list[str]:
    """`attention` | `mlp` | `all-linear` | `q_proj,v_proj` -> module names present in the base."""
    groups = {
        "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "mlp": ["gate_proj", "up_proj", "down_proj"],
    }
    groups["all-linear"] = groups["attention"] + groups["mlp"]
    names = groups.get(spec.strip()) or [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ConfigError("target_modules is empty")
    missing = [n for n in names if n not in available]
    if missing:
        raise ConfigError(
            f"target module(s) {', '.join(missing)} not in the base model "
            f"(it has {', '.join(sorted(available))}); or use attention, mlp, all-linear"
        )
    return names
