"""Local engines die with their gateway: SIGKILL a gateway-like parent, its engines go too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from lorafleet.server.engine import lifeline
from lorafleet.server.engine.ports import free_ports, port_in_use
from tests.server.engine.standin import REPO, read_pids

T = TypeVar("T")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def wait_for(probe: Callable[[], T], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while not (value := probe()):
        assert time.monotonic() < deadline, f"gave up after {timeout_s}s"
        time.sleep(0.05)
    return value


def gone(pid: int) -> bool:
    """Dead (a zombie counts: whoever adopted it may never reap it in a container)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids a test started; whatever is still alive at the end is killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_engine_and_its_workers_die_with_a_sigkilled_gateway(
    tmp_path: Path, spawned: list[int]
) -> None:
    port, pids_file = free_ports("127.0.0.1", 1)[0], tmp_path / "pids"
    gateway = subprocess.Popen(
        [sys.executable, "-m", "tests.server.engine.standin", "gateway",
         "--port", str(port), "--pids", str(pids_file)],
        cwd=REPO, env=ENV,
    )  # fmt: skip
    spawned.append(gateway.pid)
    engine_pids = wait_for(lambda: read_pids(pids_file), 60)
    spawned.extend(engine_pids)
    assert port_in_use("127.0.0.1", port)
    gateway.kill()
    gateway.wait()
    started = time.monotonic()
    wait_for(lambda: all(gone(pid) for pid in engine_pids), 10)
    assert time.monotonic() - started < 10
    assert not port_in_use("127.0.0.1", port)  # the next lorafleet serve can have it


def test_exec_kills_the_command_when_its_parent_dies(spawned: list[int]) -> None:
    """PR_SET_PDEATHSIG alone (no reaper): the parent is SIGKILLed, the command dies."""
    parent_code = (
        "import os, subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-m', {lifeline.MODULE!r}, 'exec', "
        "f'--parent={os.getpid()}', '--', 'sleep', '600'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True
    )
    spawned.append(parent.pid)
    assert parent.stdout is not None
    with parent.stdout:
        child = int(parent.stdout.readline())
    spawned.append(child)
    wait_for(lambda: psutil.Process(child).name() == "sleep", 30)  # exec happened
    parent.kill()
    parent.wait()
    wait_for(lambda: gone(child), 5)


def test_exec_refuses_to_start_when_the_parent_is_already_gone() -> None:
    result = subprocess.run(
        [*lifeline.exec_command(1, ["true"])], cwd=REPO, env=ENV, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "parent 1 is gone" in result.stderr


def test_reaper_follows_the_groups_it_is_told_about() -> None:
    lines = ["+100\n", "+200\n", "-100\n", "+1\n", "+0\n", "-\n", "junk\n", "+²\n", "+300"]
    assert lifeline.reap(lines) == {200, 300}
