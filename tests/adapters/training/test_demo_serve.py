"""The demo tells a `lorafleet serve` that refused a model (listed under its table) from one
that crashed (the run fails)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lorafleet.adapters.training.demo_serve import ServeRefusedError, wait_ready
from lorafleet.server.engine.local import EXIT_NOT_SERVABLE


def exited(tmp_path: Path, code: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / "serve.log"
    script = f"import sys; print('starting'); print('the last line'); sys.exit({code})"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-c", script], stdout=out)
    process.wait()
    return process, log


def test_a_refusal_is_raised_as_serve_refused_with_its_last_line(tmp_path: Path) -> None:
    process, log = exited(tmp_path, EXIT_NOT_SERVABLE)
    with pytest.raises(ServeRefusedError, match=r"^the last line$"):
        wait_ready("http://127.0.0.1:9", process, log, timeout_s=30)


@pytest.mark.parametrize("code", [1, 2, -9])
def test_any_other_early_exit_is_a_failure_not_a_refusal(tmp_path: Path, code: int) -> None:
    process, log = exited(tmp_path, code if code > 0 else 0)
    process.returncode = code  # -9: killed (by the OOM killer, say)
    with pytest.raises(RuntimeError) as raised:
        wait_ready("http://127.0.0.1:9", process, log, timeout_s=30)
    assert not isinstance(raised.value, ServeRefusedError)
    assert f"exited with {code} before it was ready: the last line" in str(raised.value)
