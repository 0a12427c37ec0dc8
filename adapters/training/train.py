"""One LoRA/QLoRA run: TRL `SFTTrainer` + PEFT `LoraConfig`, then a validated adapter directory.

The order is chosen so that a run fails as early and as cheaply as possible:

1. config checks, the base model's facts and target modules, the dataset (every line), the
   hardware plan (a `--qlora` on CPU stops here);
2. training, with checkpoints in `OUTPUT.checkpoints/` (outside the adapter directory: they hold
   pickled optimizer state, which the serving rules refuse) and `--resume` from them;
3. the adapter is saved into a staging directory beside OUTPUT, checked with the registry's own
   `validate_adapter_dir` (safetensors, rank within the engines' limit, target modules present,
   no `modules_to_save`), given its manifest, and only then renamed into place.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lorafleet.adapters.base_models import ModelInfo, fetch_model, model_info
from lorafleet.adapters.manifest import (
    BaseModelRef,
    DatasetRef,
    Hardware,
    TrainingManifest,
    TrainingMetrics,
    model_fingerprint,
    write_manifest,
)
from lorafleet.adapters.training.config import ConfigError, TrainConfig, resolve_target_modules
from lorafleet.adapters.training.data import LoadedDataset, load_jsonl
from lorafleet.adapters.training.hardware import (
    DeviceFacts,
    HardwarePlan,
    detect_device,
    plan_hardware,
)

logger = logging.getLogger(__name__)
_LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes")


@dataclass(frozen=True)
class PreparedRun:
    """Everything checked before any weights are loaded."""

    config: TrainConfig
    base_path: Path
    base: ModelInfo
    target_modules: list[str]
    train: LoadedDataset
    eval: LoadedDataset | None
    facts: DeviceFacts
    plan: HardwarePlan
    resume_from: Path | None


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    manifest: TrainingManifest


def prepare(config: TrainConfig) -> PreparedRun:
    """Steps that need no weights: cheap, and they are where most mistakes surface."""
    output = config.output_path
    if not config.dataset:
        raise ConfigError("dataset is required (--dataset FILE.jsonl or `dataset:` in the config)")
    if output.exists() and any(output.iterdir()) and not config.overwrite:
        raise ConfigError(f"{output} exists and is not empty; pass --overwrite to replace it")
    resume_from = _resume_checkpoint(config)
    facts = detect_device()
    plan = plan_hardware(
        facts,
        precision=config.precision,
        gradient_checkpointing=config.gradient_checkpointing,
        qlora=config.qlora,
    )
    base_path = fetch_model(config.base_model, progress=config.progress)
    base = model_info(base_path)
    targets = resolve_target_modules(config.target_modules, base.target_modules)
    train = load_jsonl(Path(config.dataset).expanduser())
    evaluation = load_jsonl(Path(config.eval_dataset).expanduser()) if config.eval_dataset else None
    return PreparedRun(
        config, base_path, base, targets, train, evaluation, facts, plan, resume_from
    )


def _resume_checkpoint(config: TrainConfig) -> Path | None:
    checkpoints = config.checkpoint_path
    existing = (
        sorted(checkpoints.glob("checkpoint-*"), key=_step_of) if checkpoints.is_dir() else []
    )
    if config.resume is None:
        if existing and not config.overwrite:
            raise ConfigError(
                f"{checkpoints} holds checkpoints of an earlier run; pass --resume to continue it "
                "or --overwrite to start over"
            )
        if existing:
            shutil.rmtree(checkpoints)
        return None
    if config.resume != "latest":
        path = Path(config.resume).expanduser().resolve()
        if not (path / "trainer_state.json").is_file():
            raise ConfigError(
                f"--resume {path}: not a checkpoint directory (no trainer_state.json)"
            )
        return path
    if not existing:
        raise ConfigError(f"--resume: no checkpoint-* directory in {checkpoints}")
    return existing[-1]


def _step_of(path: Path) -> int:
    suffix = path.name.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


def run_training(config: TrainConfig) -> TrainResult:
    run = prepare(config)
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    logger.info(
        "training on %s (%s, gradient checkpointing %s%s)",
        run.plan.device_name,
        run.plan.precision,
        "on" if run.plan.gradient_checkpointing else "off",
        ", NF4 base" if run.plan.quantization else "",
    )
    trainer = build_trainer(run)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    wall = time.perf_counter() - started
    eval_loss = trainer.evaluate()["eval_loss"] if run.eval is not None else None
    metrics = _metrics(trainer, output, wall, eval_loss)
    adapter_dir = save_adapter(trainer.model, run, metrics)
    from lorafleet.adapters.manifest import read_manifest

    return TrainResult(adapter_dir=adapter_dir, manifest=read_manifest(adapter_dir))


def build_trainer(run: PreparedRun) -> Any:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]  # lazy module, no __all__

    config, plan = run.config, run.plan
    tokenizer = AutoTokenizer.from_pretrained(run.base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = _load_base(run, torch, AutoModelForCausalLM)
    peft_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=run.target_modules,  # an explicit list: what the serving check expects
        bias="none",
        task_type="CAUSAL_LM",
    )
    sampling: dict[str, Any] = (
        {"train_sampling_strategy": "group_by_length"} if config.group_by_length else {}
    )
    args = SFTConfig(
        output_dir=str(config.checkpoint_path),
        max_steps=config.max_steps,
        num_train_epochs=config.epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the total steps
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        max_length=config.max_length,
        seed=config.seed,
        data_seed=config.seed,
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",
        use_cpu=plan.device == "cpu",
        gradient_checkpointing=plan.gradient_checkpointing,
        completion_only_loss=True,  # loss on the assistant's answer only (see data.py)
        packing=False,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="no",
        report_to="none",
        disable_tqdm=not config.progress,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        **sampling,
    )
    callbacks = [time_budget_callback(config.max_minutes)] if config.max_minutes else []
    return SFTTrainer(
        model=model,
        callbacks=callbacks,
        args=args,
        train_dataset=Dataset.from_list(run.train.rows),
        eval_dataset=Dataset.from_list(run.eval.rows) if run.eval is not None else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def time_budget_callback(minutes: float) -> Any:
    """Stop after `minutes` of training (checked after each step); the adapter is still saved.

    On a shared CPU the step time varies several-fold with the neighbours' load, so a demo that
    must finish "within about 30 minutes" is given a time budget rather than a guessed step count.
    """
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.deadline = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.deadline = time.monotonic() + minutes * 60

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if time.monotonic() >= self.deadline and not control.should_training_stop:
                logger.info(
                    "time budget of %.1f min reached at step %d", minutes, state.global_step
                )
                control.should_training_stop = True
                control.should_save = True

    return TimeBudget()


def _load_base(run: PreparedRun, torch: Any, auto_model: Any) -> Any:
    dtype = getattr(torch, run.plan.torch_dtype_name)
    if run.plan.quantization != "nf4":
        return auto_model.from_pretrained(run.base_path, dtype=dtype)
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(  # type: ignore[no-untyped-call]  # untyped upstream
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    model = auto_model.from_pretrained(
        run.base_path, dtype=dtype, quantization_config=quantization, device_map={"": 0}
    )
    return prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]  # untyped upstream
        model, use_gradient_checkpointing=run.plan.gradient_checkpointing
    )


def _metrics(trainer: Any, output: Any, wall: float, eval_loss: float | None) -> TrainingMetrics:
    state = trainer.state
    first_step = int(getattr(trainer, "_initial_global_step", 0) or 0)
    steps_run = state.global_step - first_step
    tokens = int(
        state.num_input_tokens_seen - getattr(trainer, "_initial_num_input_tokens_seen", 0)
    )
    return TrainingMetrics(
        steps=int(state.global_step),
        epochs=round(float(state.epoch or 0.0), 4),
        train_loss=_finite(output.training_loss),
        eval_loss=_finite(eval_loss),
        wall_time_s=round(wall, 2),
        seconds_per_step=round(wall / steps_run, 3) if steps_run else None,
        tokens_per_s=round(tokens / wall, 1) if wall > 0 and tokens else None,
        train_tokens=tokens,
        resumed_from_step=first_step,
    )


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return round(number, 5) if number == number and abs(number) != float("inf") else None


def save_adapter(model: Any, run: PreparedRun, metrics: TrainingMetrics) -> Path:
    """Save to a staging directory, validate against serving limits, then move into place."""
    from lorafleet.adapters.validation import validate_adapter_dir

    output = run.config.output_path
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.staging-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        facts = validate_adapter_dir(staging, base=run.base, max_rank=run.config.max_lora_rank)
        write_manifest(staging, build_manifest(run, metrics, facts))
        for (
            file
        ) in staging.iterdir():  # PEFT and mkstemp write 0600; the gateway may be another user
            file.chmod(0o644)
        if output.exists():  # --overwrite was checked in prepare()
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return output


def build_manifest(run: PreparedRun, metrics: TrainingMetrics, facts: Any) -> TrainingManifest:
    import torch

    config = run.config
    evaluation = run.eval
    return TrainingManifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        base_model=BaseModelRef(
            id=config.served_base_id,
            path=str(run.base_path),
            fingerprint=model_fingerprint(run.base_path),
        ),
        dataset=DatasetRef(
            path=str(run.train.path.resolve()),
            sha256=run.train.sha256,
            examples=len(run.train.rows),
            bytes=run.train.bytes,
            eval_path=str(evaluation.path.resolve()) if evaluation else None,
            eval_sha256=evaluation.sha256 if evaluation else None,
            eval_examples=len(evaluation.rows) if evaluation else 0,
        ),
        config={**config.to_dict(), "resolved_target_modules": run.target_modules},
        libraries=library_versions(),
        git_revision=git_revision(),
        metrics=metrics,
        hardware=Hardware(
            device=run.plan.device,
            device_name=run.plan.device_name,
            precision=run.plan.precision,
            quantization=run.plan.quantization,
            gradient_checkpointing=run.plan.gradient_checkpointing,
            cpu_count=run.facts.cpu_count,
            torch_threads=torch.get_num_threads(),
        ),
        adapter={
            "rank": facts.rank,
            "alpha": facts.alpha,
            "target_modules": list(facts.target_modules),
            "sha256": facts.sha256,
            "size_bytes": facts.size_bytes,
        },
    )


def library_versions() -> dict[str, str]:
    versions = {}
    for name in ("lorafleet", *_LIBRARIES):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> str | None:
    """The source checkout's commit, `+dirty` when it has local changes; None outside git."""
    source = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")
