"""Real trained LoRA adapters for the product benchmark: what users serve, not random weights.

    python -m lorafleet.benchmarks.trained_adapters --count 8 --rank 16 --targets all-linear

Each adapter is a short run of the product's own trainer (`lorafleet train`: TRL SFT + PEFT) on
the synthetic court-extraction data, one seed per adapter, so every adapter is distinct and has
non-zero A and B on every target module (checked before use: a zero B would let an engine skip
work, a zero A is not an adapter anyone trains). A few steps are enough for that; the benchmark
measures serving cost, not what the adapters learned. Adapters are cached under
`$LORAFLEET_CACHE_DIR/bench-adapters/` (about 20 s each to train on two cores) and runs in its own
process so the load generator never imports torch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lorafleet.benchmarks.lora_adapters import AdapterCreationError

STEPS = 4
LEARNING_RATE = 1e-3
MAX_LENGTH = 256


def cache_key(rank: int, targets: str, seed: int) -> str:
    safe_targets = targets.replace(",", "+")
    return f"r{rank}-{safe_targets}-s{STEPS}-lr{LEARNING_RATE:g}-seed{seed}"


def trained_adapters(
    out_dir: Path, count: int, rank: int, targets: str, *, prefix: str, first_seed: int = 1
) -> list[tuple[str, Path]]:
    """`count` trained adapters copied into `out_dir` as `{prefix}-01`...; trained on first use."""
    argv = [
        sys.executable, "-m", "lorafleet.benchmarks.trained_adapters", "--out", str(out_dir),
        "--count", str(count), "--rank", str(rank), "--targets", targets, "--prefix", prefix,
        "--first-seed", str(first_seed),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise AdapterCreationError(f"training benchmark adapters failed:\n{done.stderr[-3000:]}")
    return [(name, Path(path)) for name, path in json.loads(done.stdout.strip().splitlines()[-1])]


def nonzero_report(adapter_dir: Path) -> dict[str, bool]:
    """For every LoRA weight in the adapter: whether any element is non-zero."""
    from safetensors.numpy import load_file

    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return {name: bool((tensor != 0).any()) for name, tensor in tensors.items()}


def check_trained(adapter_dir: Path, rank: int) -> None:
    """Refuse an adapter with a zero A or B anywhere, or of another rank."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("r") != rank:
        raise AdapterCreationError(f"{adapter_dir}: rank {config.get('r')}, expected {rank}")
    report = nonzero_report(adapter_dir)
    zero = sorted(name for name, nonzero in report.items() if not nonzero)
    if zero or not any("lora_B" in name for name in report):
        raise AdapterCreationError(f"{adapter_dir}: all-zero LoRA weights {zero[:4]}")


def _train_one(cache: Path, rank: int, targets: str, seed: int) -> Path:
    from lorafleet.adapters.training.config import build_config
    from lorafleet.adapters.training.synthetic import generate, write_jsonl
    from lorafleet.adapters.training.train import run_training

    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent) as work:
        data = Path(work) / "train.jsonl"
        write_jsonl(data, generate(16, "train", seed=seed))
        config = build_config(
            {
                "dataset": str(data),
                "output": str(Path(work) / "adapter"),
                "max_steps": STEPS,
                "batch_size": 1,
                "max_length": MAX_LENGTH,
                "lora_r": rank,
                "lora_alpha": 2 * rank,
                "target_modules": targets,
                "learning_rate": LEARNING_RATE,
                "lr_scheduler": "constant",
                "seed": seed,
                "progress": False,
            }
        )
        adapter = run_training(config).adapter_dir
        check_trained(adapter, rank)
        shutil.rmtree(cache, ignore_errors=True)
        adapter.rename(cache)
    return cache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lorafleet.benchmarks.trained_adapters", description=__doc__
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--targets", default="all-linear", help="comma list, or all-linear")
    parser.add_argument("--prefix", default="trained")
    parser.add_argument("--first-seed", type=int, default=1)
    args = parser.parse_args(argv)
    from lorafleet.adapters.base_models import default_cache_dir

    root = default_cache_dir() / "bench-adapters"
    made = []
    for index in range(args.count):
        seed = args.first_seed + index
        cache = root / cache_key(args.rank, args.targets, seed)
        if not (cache / "adapter_model.safetensors").is_file():
            print(
                f"[bench] training adapter {index + 1}/{args.count} ({cache.name})", file=sys.stderr
            )
            _train_one(cache, args.rank, args.targets, seed)
        check_trained(cache, args.rank)
        name = f"{args.prefix}-{index + 1:02d}"
        target = args.out / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(cache, target)
        made.append((name, str(target)))
    print(json.dumps(made))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
