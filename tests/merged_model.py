"""A second, genuinely different base model for tests: the default model merged with a trained
adapter (`lorafleet merge`), built once and cached beside the default model.

A few optimizer steps at a deliberately high, constant learning rate on the synthetic
court-extraction data move the weights enough for greedy answers to differ from the base
model's (at the trainer's defaults a handful of steps change nothing visible), yet it still
speaks.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from lorafleet.adapters.base_models import default_cache_dir, fetch_model
from lorafleet.adapters.training.config import build_config
from lorafleet.adapters.training.merge import MERGE_MANIFEST, merge_adapter
from lorafleet.adapters.training.synthetic import generate, write_jsonl
from lorafleet.adapters.training.train import run_training

NAME = "smollm2-court-merged"
# A court decision from the held-out split: the base model echoes it, the merged model answers
# with the task's JSON, so greedy answers to it tell the two checkpoints apart.
COURT_MESSAGES = generate(1, "test", seed=5)[0].to_record()["messages"][:-1]
STEPS = 6
LEARNING_RATE = 5e-3


def merged_model_dir(cache_dir: Path | None = None) -> Path:
    """The merged checkpoint's directory (trained and merged on first use: about a minute)."""
    root = (cache_dir or default_cache_dir()) / "test-models"
    target = root / f"{NAME}-s{STEPS}-lr{LEARNING_RATE:g}"
    if (target / MERGE_MANIFEST).is_file():
        return target
    fetch_model(None, progress=False)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as work:
        data = Path(work) / "train.jsonl"
        write_jsonl(data, generate(16, "train", seed=0))
        config = build_config(
            {
                "dataset": str(data),
                "output": str(Path(work) / "adapter"),
                "max_steps": STEPS,
                "batch_size": 1,
                "max_length": 512,
                "lora_r": 8,
                "lora_alpha": 16,
                "target_modules": "all-linear",
                "learning_rate": LEARNING_RATE,
                "lr_scheduler": "constant",
                "progress": False,
            }
        )
        staged = merge_adapter(run_training(config).adapter_dir, Path(work) / "merged")
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)
    return target


if __name__ == "__main__":
    print(merged_model_dir())
