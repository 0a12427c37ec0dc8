"""A second, genuinely different base model for tests: the default model merged with a trained
adapter (`lorafleet merge`), built once and cached beside the default model.

A few optimizer steps at a high learning rate on the synthetic court-extraction data move the
weights enough for greedy answers to differ from the base model's, yet it still speaks.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from lorafleet.adapters.base_models import default_cache_dir, fetch_model
from lorafleet.adapters.training.merge import MERGE_MANIFEST, merge_adapter
from lorafleet.adapters.training.smoke import train_smoke_adapter

NAME = "smollm2-court-merged"
# A court decision from the held-out split: the base model echoes it, the merged model answers
# with the task's JSON, so greedy answers to it tell the two checkpoints apart.
COURT_MESSAGES = generate(1, "test", seed=5)[0].to_record()["messages"][:-1]
STEPS = 8


def merged_model_dir(cache_dir: Path | None = None) -> Path:
    """The merged checkpoint's directory (trained and merged on first use: about a minute)."""
    root = (cache_dir or default_cache_dir()) / "test-models"
    target = root / f"{NAME}-s{STEPS}"
    if (target / MERGE_MANIFEST).is_file():
        return target
    fetch_model(None, progress=False)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as work:
        adapter = train_smoke_adapter(Path(work) / "adapters" / "court", steps=STEPS).adapter_dir
        staged = merge_adapter(adapter, Path(work) / "merged")
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)
    return target


if __name__ == "__main__":
    print(merged_model_dir())
