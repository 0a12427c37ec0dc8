"""A gateway killed with SIGKILL takes its real vLLM engine along, and the next one starts.

What the crash used to leave: vLLM's API server and EngineCore running on the engine port, and
a next `lorafleet serve` on the same port restarting its engine forever ("Address already in
use"). One real engine at a time: the second gateway starts after the first one's tree is gone.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from lorafleet.server.engine.ports import port_in_use
from tests.integration.conftest import free_port_run, start_server, wait_ready

pytestmark = pytest.mark.integration


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_sigkilled_gateway_leaves_no_engine_behind(tmp_path: Path) -> None:
    engine_port = free_port_run(1)
    env = {
        "LORAFLEET_ENGINE_PORT_BASE": str(engine_port),
        "LORAFLEET_ENGINE_KV_CACHE_GIB": "1",
        "LORAFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
        "LORAFLEET_ADAPTER_STORE": str(tmp_path / "adapter-store"),
    }
    first = start_server([], tmp_path / "first.log", env)
    tree: list[psutil.Process] = []
    try:
        wait_ready(first)
        tree = psutil.Process(first.process.pid).children(recursive=True)
        engines = [p for p in tree if os.getpgid(p.pid) != os.getpgid(first.process.pid)]
        assert len(engines) >= 2, [p.cmdline() for p in tree]  # API server and EngineCore
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        started = time.monotonic()
        while time.monotonic() - started < 15 and (
            any(alive(p) for p in tree) or port_in_use("127.0.0.1", engine_port)
        ):
            time.sleep(0.1)
        print(f"\n[engine tree gone {time.monotonic() - started:.1f}s after the SIGKILL]")
        survivors = [p.cmdline()[:4] for p in tree if alive(p)]
        assert not survivors, f"{survivors} outlived the gateway by 15 s"
        assert not port_in_use("127.0.0.1", engine_port)  # the next gateway can have it
    finally:
        first.stop()
        for process in tree:  # what a failure left behind
            if alive(process):
                process.kill()
    second = start_server([], tmp_path / "second.log", env)
    try:
        wait_ready(second)  # the same pinned engine port: free again
    finally:
        second.stop()
    assert second.process.returncode == 0, second.log_tail()
