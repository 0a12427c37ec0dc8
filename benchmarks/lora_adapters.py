"""Small random PEFT LoRA adapters for the LoRA scenarios (no training: only their cost matters).

    python -m lorafleet.benchmarks.lora_adapters --model DIR --out /tmp/adapters --count 8 --rank 16

Each adapter is a real PEFT directory (`adapter_config.json` + `adapter_model.safetensors`) with
seeded random A and non-zero B (a zero B would let an engine skip nothing but would make every
adapter produce the base model's text). Runs in its own process so the load generator never
imports torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DEFAULT_TARGETS = ("q_proj", "v_proj")


class AdapterCreationError(RuntimeError):
    """The adapter-making subprocess failed; the message carries its stderr tail."""


ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def adapter_name(index: int, rank: int, tag: str = "") -> str:
    """`bench[-TAG]-r16-03`: a tag per run keeps names unique on long-lived engines."""
    return f"bench{'-' + tag if tag else ''}-r{rank}-{index:02d}"


def make_adapters(
    model_dir: Path,
    out_dir: Path,
    count: int,
    rank: int,
    targets: tuple[str, ...],
    seed: int = 0,
    first: int = 0,
    tag: str = "",
) -> list[tuple[str, Path]]:
    """Create `count` adapters under `out_dir` in a subprocess; returns (name, path) pairs."""
    argv = [
        sys.executable,
        "-m",
        "lorafleet.benchmarks.lora_adapters",
        "--model",
        str(model_dir),
        "--out",
        str(out_dir),
        "--count",
        str(count),
        "--rank",
        str(rank),
        "--targets",
        ",".join(targets),
        "--seed",
        str(seed),
        "--tag",
        tag,
        "--first",
        str(first),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise AdapterCreationError(f"creating adapters failed:\n{done.stderr[-3000:]}")
    return [(name, Path(path)) for name, path in json.loads(done.stdout.strip().splitlines()[-1])]


def _write(
    model_dir: Path,
    out_dir: Path,
    count: int,
    rank: int,
    targets: list[str],
    seed: int,
    first: int,
    tag: str,
) -> list[tuple[str, str]]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=targets,
        lora_dropout=0.0,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    made = []
    for index in range(first, first + count):
        generator = torch.Generator().manual_seed(seed * 10_000 + index)
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if "lora_A" in param_name:
                    param.copy_(torch.randn(param.shape, generator=generator) / rank**0.5)
                elif "lora_B" in param_name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        name = adapter_name(index, rank, tag)
        path = out_dir / name
        model.save_pretrained(str(path), safe_serialization=True)
        _set_base_path(path, model_dir)
        made.append((name, str(path)))
    return made


def _set_base_path(path: Path, model_dir: Path) -> None:
    """Point `base_model_name_or_path` at the served base so registries can check it."""
    config_path = path / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(model_dir)
    config_path.write_text(json.dumps(config, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lorafleet.benchmarks.lora_adapters", description=__doc__
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--first", type=int, default=0, help="index of the first adapter (names)")
    parser.add_argument("--tag", default="", help="inserted in every adapter name")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument(
        "--targets", default=",".join(DEFAULT_TARGETS), help="comma list, or 'all-linear'"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    targets = list(ALL_LINEAR) if args.targets == "all-linear" else args.targets.split(",")
    made = _write(
        args.model, args.out, args.count, args.rank, targets, args.seed, args.first, args.tag
    )
    print(json.dumps(made))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
