"""The smoke set, its scorer, and `lorafleet model smoke` against a canned endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from lorafleet.adapters import smoke
from lorafleet.adapters.smoke import SmokeItem, load_smoke_set, score
from lorafleet.cli import make_parser


def test_the_set_is_a_dozen_questions_with_expected_answers() -> None:
    items = load_smoke_set()
    assert len(items) == 12
    assert len({item.question for item in items}) == 12
    assert all(item.expect and all(item.expect) for item in items)


def test_an_answer_passes_when_it_contains_an_expected_string() -> None:
    item = SmokeItem("How many legs does a spider have?", ("8", "eight"))
    assert item.passes("A spider has EIGHT legs.")
    assert item.passes("8")
    assert not item.passes("Spiders have six legs.")


def test_score_counts_every_ask_and_keeps_the_misses() -> None:
    items = [SmokeItem("capital of France?", ("Paris",)), SmokeItem("2+2?", ("4",))]
    answers = iter(["Paris.", "Paris!", "five", "4"])
    result = score("sampling", lambda question: next(answers), items, repeats=2)
    assert (result.passed, result.asked) == (3, 4)
    assert result.missed == [{"question": "2+2?", "answer": "five"}]
    assert result.summary().split() == ["sampling", "3/4", "(75%)"]


class CannedEndpoint:
    """Answers Paris at temperature 0 and nonsense when sampling, and records the bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        greedy = body.get("temperature") == 0
        content = "The capital of France is Paris." if greedy else "La femme au martyre."
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}]})


def test_the_command_scores_both_settings_and_records_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "lorafleet-model.json").write_text(json.dumps({"id": "m", "files": {}}))
    endpoint = CannedEndpoint()
    args = make_parser().parse_args(
        ["model", "smoke", "--url", "http://gw:8000", "--repeats", "2", "--record", str(tmp_path)]
    )
    assert smoke.main(args, transport=httpx.MockTransport(endpoint)) == 0
    sampled = [b for b in endpoint.bodies if "temperature" not in b]  # the model's defaults
    assert len(sampled) == 24 and len(endpoint.bodies) == 36
    assert all(b["max_tokens"] == 64 and b["model"] == "smollm2-135m-instruct" for b in sampled)
    out = capsys.readouterr().out
    assert "default sampling   0/24 (0%)" in out
    assert "temperature 0      1/12 (8%)" in out  # only the France question expects Paris
    manifest = json.loads((tmp_path / "lorafleet-model.json").read_text())
    assert manifest["id"] == "m"  # the rest of the manifest is kept
    assert manifest["smoke"]["scores"] == {
        "default sampling": {"passed": 0, "asked": 24},
        "temperature 0": {"passed": 1, "asked": 12},
    }


def test_an_unreachable_endpoint_is_a_message_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    args = make_parser().parse_args(["model", "smoke", "--url", "http://gw:8000"])
    assert smoke.main(args, transport=httpx.MockTransport(refuse)) == 1
    assert "connection refused" in capsys.readouterr().err


def test_concurrent_asks_keep_each_answer_with_its_question() -> None:
    items = [SmokeItem(f"q{i}", (f"a{i}",)) for i in range(10)]
    result = score("concurrent", lambda question: "a" + question[1:], items, 2, concurrency=4)
    assert (result.passed, result.asked, result.missed) == (20, 20, [])


def test_the_measured_scores_reach_the_default_models_manifest(tmp_path: Path) -> None:
    from lorafleet.adapters import base_models

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 8)
    manifest = {"id": "smollm2-135m-instruct", "build_version": base_models._BUILD_VERSION}
    (tmp_path / "lorafleet-model.json").write_text(json.dumps(manifest))
    base_models._add_smoke_scores(tmp_path)
    recorded = json.loads((tmp_path / "lorafleet-model.json").read_text())
    shipped = json.loads(smoke.MEASURED_SCORES.read_text())
    assert recorded["id"] == "smollm2-135m-instruct"  # the rest of the manifest is kept
    assert recorded["smoke"]["scores"] == shipped["scores"]
    assert "lorafleet serve" in recorded["smoke"]["through"]  # measured through vLLM
    for setting in ("default sampling", "temperature 0"):
        assert 0 <= shipped["scores"][setting]["passed"] <= shipped["scores"][setting]["asked"]


def test_scores_measured_on_another_build_are_not_recorded(tmp_path: Path) -> None:
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"build_version": 1, "scores": {}}))
    assert smoke.measured_scores(2, scores) is None
    assert smoke.measured_scores(1, scores) == {"scores": {}}


def test_the_shipped_scores_match_their_raw_run() -> None:
    """adapters/smoke_scores.json is the summary of a committed raw run, not typed in."""
    shipped = json.loads(smoke.MEASURED_SCORES.read_text())
    root = Path(__file__).resolve().parents[2]
    raw = json.loads((root / shipped["raw"]).read_text())
    assert {s["setting"]: {"passed": s["passed"], "asked": s["asked"]} for s in raw} == shipped[
        "scores"
    ]
