"""`lorafleet label` against a real local HTTP server: retries, cache, invalid answers, outputs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lorafleet.adapters.training.court_task import SYSTEM_PROMPT, label_json_schema
from lorafleet.adapters.training.data import load_jsonl
from lorafleet.adapters.training.label import (
    Counters,
    LabelCache,
    LabelOptions,
    Outcome,
    check_answer,
    label_documents,
)
from lorafleet.adapters.training.label_cli import BarProgress
from lorafleet.adapters.training.label_data import Document
from lorafleet.adapters.training.prices import TokenPrice
from lorafleet.adapters.training.retry_after import retry_after
from lorafleet.cli import main
from tests.adapters.training.fake_labeller import FakeLabeller, Reply, serve


def court_label(n: int) -> dict[str, Any]:
    return {
        "claimant": f"Alpha-{n} LLC", "defendant": f"Beta-{n} JSC",
        "dispute_subject": "supply_contract", "claim_amount": 1_000_000 + n,
        "outcome": "satisfied", "initiator": "claimant",
    }  # fmt: skip


DOCS = [Document(f"d{n}.txt", f"Decision {n}: Alpha-{n} LLC v Beta-{n} JSC.") for n in range(4)]


@pytest.fixture
def fake() -> Iterator[FakeLabeller]:
    with serve(FakeLabeller({d.text: court_label(n) for n, d in enumerate(DOCS)})) as server:
        yield server


def options(fake: FakeLabeller, **overrides: Any) -> LabelOptions:
    values: dict[str, Any] = {"base_url": fake.url, "model": "gpt-4o-mini", "backoff_s": 0.01,
                              "max_wait_s": 5.0, "timeout_s": 10.0, "concurrency": 4}  # fmt: skip
    return LabelOptions(**(values | overrides))


async def test_retries_429_honouring_retry_after_and_5xx(
    fake: FakeLabeller, tmp_path: Path
) -> None:
    throttled, broken = DOCS[0].text, DOCS[1].text
    fake.script[throttled] = [Reply(429, headers={"Retry-After": "1"})]
    fake.script[broken] = [Reply(500), Reply(503)]
    counters = Counters()
    outcomes = await label_documents(DOCS, options(fake), LabelCache(tmp_path), counters=counters)
    assert [o.label for o in outcomes] == [court_label(n) for n in range(4)]
    assert [len(fake.calls_for(d.text)) for d in DOCS] == [2, 3, 1, 1]
    first, second = fake.calls_for(throttled)
    assert second.at - first.at >= 0.95  # waited as told, not the 0.01 s backoff
    assert counters.retries == 3 and counters.requests == 7
    body = fake.calls[0].body
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == label_json_schema()


async def test_gives_up_after_max_attempts_and_caches_nothing(
    fake: FakeLabeller, tmp_path: Path
) -> None:
    fake.script[DOCS[0].text] = [Reply(502)] * 5
    fake.script[DOCS[1].text] = [Reply(401)]  # the request is wrong: no retry
    opts, cache = options(fake, max_attempts=3), LabelCache(tmp_path)
    outcomes = await label_documents(DOCS[:2], opts, cache)
    assert all(o.failed and o.label is None for o in outcomes)
    assert "HTTP 502" in (outcomes[0].reason or "") and "HTTP 401" in (outcomes[1].reason or "")
    assert len(fake.calls_for(DOCS[0].text)) == 3 and len(fake.calls_for(DOCS[1].text)) == 1
    assert cache.get(opts.cache_key(DOCS[0])) is None  # a failure is asked again next time


async def test_an_interrupted_run_never_pays_twice(fake: FakeLabeller, tmp_path: Path) -> None:
    cache = LabelCache(tmp_path)
    fake.script[DOCS[2].text] = [Reply(hang_s=30)]
    run = asyncio.create_task(label_documents(DOCS, options(fake, concurrency=1), cache))
    for _ in range(600):  # one at a time, in order: docs 0 and 1 are answered when 2 is asked
        if fake.calls_for(DOCS[2].text):
            break
        await asyncio.sleep(0.05)
    assert [fake.paid(d.text) for d in DOCS] == [1, 1, 0, 0]  # interrupted while 2 is asked
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    outcomes = await label_documents(DOCS, options(fake, concurrency=1), cache)
    assert [fake.paid(d.text) for d in DOCS] == [1, 1, 1, 1]
    assert [o.cached for o in outcomes] == [True, True, False, False]
    assert [o.prompt_tokens for o in outcomes] == [0, 0, 100, 100]
    assert all(o.label for o in outcomes)


def test_a_changed_prompt_or_model_is_a_new_request(tmp_path: Path) -> None:
    base = LabelOptions(base_url="http://x", model="a")
    key = base.cache_key(DOCS[0])
    assert key == LabelOptions(base_url="http://other", model="a", concurrency=9).cache_key(DOCS[0])
    assert key != LabelOptions(base_url="http://x", model="b").cache_key(DOCS[0])
    assert key != base.cache_key(Document(DOCS[0].id, DOCS[0].text + " "))
    assert key != LabelOptions(base_url="http://x", model="a", max_tokens=7).cache_key(DOCS[0])


def test_check_answer_says_why_an_answer_is_unusable() -> None:
    good = json.dumps(court_label(1))
    assert check_answer(good, "stop") == (court_label(1), None)
    assert (check_answer(good, "length")[1] or "").startswith("truncated")
    assert (check_answer("Sure! {", "stop")[1] or "").startswith("not JSON")
    missing = {k: v for k, v in court_label(1).items() if k != "initiator"}
    assert check_answer(json.dumps(missing), "stop")[1] == (
        "schema: answer: 'initiator' is a required property"
    )
    wrong = court_label(1) | {"outcome": "won"}
    assert (check_answer(json.dumps(wrong), "stop")[1] or "").startswith("schema: outcome: 'won'")


def test_retry_after_reads_seconds_milliseconds_and_dates() -> None:
    def wait(headers: dict[str, str]) -> float | None:
        return retry_after(httpx.Response(429, headers=headers))

    assert wait({"Retry-After": "2"}) == 2.0
    assert wait({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert wait({"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}) == 0.0  # in the past
    assert wait({"Retry-After": "soon"}) is None and wait({}) is None


def test_progress_counts_paid_tokens_and_their_cost() -> None:
    progress = BarProgress(3, TokenPrice(2.0, 10.0, "test"), disable=True)
    progress.update(Outcome(DOCS[0], label={}, prompt_tokens=1000, completion_tokens=100))
    progress.update(Outcome(DOCS[1], label={}, cached=True))
    progress.update(Outcome(DOCS[2], reason="not JSON", prompt_tokens=500, completion_tokens=50))
    # (1500 * $2 + 150 * $10) / 1M
    assert progress.cost == pytest.approx(0.0045)
    assert progress.bar.postfix == "tok in 1500 out 150 $0.0045 cached 1 set aside 1"
    assert BarProgress(1, None, disable=True).cost is None


def write_docs(folder: Path) -> None:
    for doc in DOCS:
        (folder / doc.id).write_text(doc.text + "\n", encoding="utf-8")


def label_cli(fake: FakeLabeller, tmp_path: Path, *extra: str) -> int:
    return main([
        "label", "--input", str(tmp_path / "raw"), "--base-url", fake.url,
        "--model", "gpt-4o-mini", "--output", str(tmp_path / "out"),
        "--cache-dir", str(tmp_path / "cache"), "--no-progress", *extra,
    ])  # fmt: skip


def test_cli_sets_invalid_answers_aside_and_writes_trainer_jsonl(
    fake: FakeLabeller, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "raw").mkdir()
    write_docs(tmp_path / "raw")
    fake.script[DOCS[1].text] = [Reply(content="I cannot find a claim amount.")]
    fake.script[DOCS[3].text] = [Reply(content=json.dumps(court_label(3) | {"initiator": "x"}))]
    assert label_cli(fake, tmp_path, "--verify-fraction", "0.5") == 0
    out = tmp_path / "out"
    labelled = load_jsonl(out / "labels.jsonl")  # the trainer reads it as it is
    assert labelled.format == "chat" and len(labelled.rows) == 2
    answers = [json.loads(r["completion"][0]["content"]) for r in labelled.rows]
    assert answers == [court_label(0), court_label(2)]
    aside = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert [(a["id"], a["failed"]) for a in aside] == [("d1.txt", False), ("d3.txt", False)]
    assert aside[0]["reason"].startswith("not JSON") and aside[0]["raw"].startswith("I cannot")
    assert aside[1]["reason"].startswith("schema: initiator: 'x' is not one of")
    report = json.loads((out / "report.json").read_text())
    assert (report["labelled"], report["rejected"], report["failed"]) == (2, 2, 0)
    # 4 paid answers of 100 + 20 tokens at gpt-4o-mini's $0.15 / $0.60 per 1M
    assert report["estimated_cost_usd"] == pytest.approx(4 * (100 * 0.15 + 20 * 0.60) / 1e6)
    assert report["review_size"] == 1 and (out / "review.csv").is_file()
    capsys.readouterr()
    assert label_cli(fake, tmp_path) == 0  # again: everything from the cache, nothing paid
    again = json.loads((out / "report.json").read_text())
    assert (again["cached"], again["requests"], again["estimated_cost_usd"]) == (4, 0, 0.0)
    assert [fake.paid(d.text) for d in DOCS] == [1, 1, 1, 1]


def test_cli_exits_1_when_requests_still_fail(fake: FakeLabeller, tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    write_docs(tmp_path / "raw")
    fake.script[DOCS[0].text] = [Reply(500)] * 2
    assert label_cli(fake, tmp_path, "--max-attempts", "2") == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["labelled"], report["failed"]) == (3, 1)


def test_cli_needs_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["label", "--model", "m"]) == 2
    assert "--input, --base-url, --output required" in capsys.readouterr().err
