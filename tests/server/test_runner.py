"""`lorafleet serve`'s exit status when a model cannot run on this machine."""

from __future__ import annotations

import pytest

from lorafleet.server import runner
from lorafleet.server.engine.local import EXIT_NOT_SERVABLE, ModelNotServableError
from lorafleet.server.settings import Settings


def test_a_model_this_machine_cannot_run_exits_78_with_one_line_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(settings: Settings) -> None:
        raise ModelNotServableError("court-w4a16 (/m) has 4-bit weights, and no int4 kernel")

    monkeypatch.setattr(runner, "build_supervisor", refuse)
    assert runner.serve(Settings()) == EXIT_NOT_SERVABLE == 78
    err = capsys.readouterr().err
    assert err == "lorafleet serve: court-w4a16 (/m) has 4-bit weights, and no int4 kernel\n"
