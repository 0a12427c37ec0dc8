"""A fixed smoke set for a base model: a dozen factual one-liners, scored through any
OpenAI-compatible endpoint, so users know what the default model can and cannot do.

    lorafleet model smoke                                # the gateway at $LORAFLEET_URL or :8000
    lorafleet model smoke --repeats 5 --record ~/.cache/lorafleet/models/smollm2-135m-instruct

Each question is asked at the model's own sampling defaults (the request sets no temperature,
so the engine applies generation_config.json; `--repeats` times, since sampling varies) and
once at temperature 0. An answer passes when it contains one of the expected strings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

SMOKE_SET = Path(__file__).with_name("smoke_set.json")
# The default model's scores as measured through `lorafleet serve` (gateway + vLLM), with where
# and how; `lorafleet model fetch` copies them into the model's manifest.
MEASURED_SCORES = Path(__file__).with_name("smoke_scores.json")
MANIFEST_NAME = "lorafleet-model.json"  # as in base_models, which this must not import (torch)

Ask = Callable[[str], str]


@dataclass(frozen=True)
class SmokeItem:
    question: str
    expect: tuple[str, ...]

    def passes(self, answer: str) -> bool:
        folded = answer.casefold()
        return any(expected.casefold() in folded for expected in self.expect)


@dataclass
class SmokeScore:
    setting: str
    passed: int = 0
    asked: int = 0
    missed: list[dict[str, str]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.passed / self.asked if self.asked else 0.0

    def summary(self) -> str:
        return f"{self.setting:<18} {self.passed}/{self.asked} ({self.rate:.0%})"


def load_smoke_set(path: Path = SMOKE_SET) -> list[SmokeItem]:
    data = json.loads(path.read_text())
    return [SmokeItem(q["question"], tuple(q["expect"])) for q in data["questions"]]


def score(
    setting: str, ask: Ask, items: list[SmokeItem], repeats: int = 1, concurrency: int = 1
) -> SmokeScore:
    """Ask every question `repeats` times, `concurrency` at a time: an engine batches them, so
    the set takes about as long as its longest answers rather than the sum of all of them."""
    asks = [item for item in items for _ in range(repeats)]
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        answers = list(pool.map(lambda item: ask(item.question), asks))
    result = SmokeScore(setting, asked=len(asks))
    for item, answer in zip(asks, answers, strict=True):
        if item.passes(answer):
            result.passed += 1
        else:
            result.missed.append({"question": item.question, "answer": answer})
    return result


def endpoint_asker(
    client: httpx.Client, url: str, model: str, temperature: float | None, max_tokens: int
) -> Ask:
    """Ask through `POST {url}/v1/chat/completions`; temperature None leaves the model's own."""

    def ask(question: str) -> str:
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens,
        }
        if temperature is not None:
            body["temperature"] = temperature
        response = client.post(f"{url}/v1/chat/completions", json=body)
        response.raise_for_status()
        content = response.json()["choices"][0]["message"]["content"]
        return str(content or "")

    return ask


def smoke_block(scores: list[SmokeScore], model: str) -> dict[str, Any]:
    return {
        "model": model,
        "set": SMOKE_SET.name,
        "scores": {s.setting: {"passed": s.passed, "asked": s.asked} for s in scores},
    }


def record(model_dir: Path, scores: list[SmokeScore], model: str) -> Path:
    """Keep the scores in the model's manifest, beside what it was built from."""
    path = model_dir / MANIFEST_NAME
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    manifest["smoke"] = smoke_block(scores, model)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def measured_scores(build_version: int, path: Path = MEASURED_SCORES) -> dict[str, Any] | None:
    """The default model's measured smoke block, if it was measured on this build of it."""
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("build_version") != build_version:
        return None
    return {key: value for key, value in data.items() if key not in ("about", "build_version")}


def add_parser(model_actions: Any) -> None:
    smoke = model_actions.add_parser(
        "smoke", help="score a served model on a fixed set of factual one-liners"
    )
    smoke.add_argument("--url", help="gateway or engine URL (default $LORAFLEET_URL or :8000)")
    smoke.add_argument("--model", default="smollm2-135m-instruct", help="the `model` to ask")
    smoke.add_argument("--repeats", type=int, default=3, help="asks per question when sampling")
    smoke.add_argument("--max-tokens", type=int, default=64)
    smoke.add_argument("--concurrency", type=int, default=8, help="questions in flight at once")
    smoke.add_argument("--record", type=Path, metavar="MODEL_DIR", help="write into its manifest")
    smoke.add_argument("--json", action="store_true", help="print the scores as JSON")
    smoke.set_defaults(func=main)


def main(args: argparse.Namespace, transport: httpx.BaseTransport | None = None) -> int:
    import httpx  # here, not at the top: `lorafleet --help` stays instant

    url = (args.url or os.environ.get("LORAFLEET_URL") or "http://127.0.0.1:8000").rstrip("/")
    key = os.environ.get("LORAFLEET_ADMIN_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    items = load_smoke_set()
    settings = (("default sampling", None, args.repeats), ("temperature 0", 0.0, 1))
    try:
        with httpx.Client(headers=headers, timeout=300, transport=transport) as client:
            scores = [
                score(
                    name, endpoint_asker(client, url, args.model, temp, args.max_tokens), items,
                    repeats, args.concurrency,
                )
                for name, temp, repeats in settings
            ]  # fmt: skip
    except httpx.HTTPError as exc:
        print(f"lorafleet model smoke: {url}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(s) for s in scores], indent=2, ensure_ascii=False))
    else:
        print(f"smoke set ({len(items)} questions) on {args.model} at {url}:")
        for s in scores:
            print(f"  {s.summary()}")
            for miss in s.missed:
                print(f"      missed {miss['question']!r}: {miss['answer'][:80]!r}")
    if args.record is not None:
        print(f"recorded in {record(args.record, scores, args.model)}", file=sys.stderr)
    return 0
