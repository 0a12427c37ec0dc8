"""A stand-in for a vLLM engine and for a gateway that supervises one, in real processes.

python -m tests.server.engine.standin engine --port N --pids FILE
    listens on N, starts a "worker" child (as vLLM starts its EngineCore), writes
    "<own pid> <worker pid>" to FILE and sleeps
python -m tests.server.engine.standin gateway --port N --pids FILE
    supervises that engine with the real EngineSupervisor and sleeps (to be SIGKILLed)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lorafleet.server.engine.recipe import EngineRecipe
from lorafleet.server.engine.supervisor import EngineProcess, EngineSpec, EngineSupervisor

REPO = Path(__file__).resolve().parents[3]
MODULE = "tests.server.engine.standin"  # not __name__: that is __main__ under -m


@dataclass(frozen=True)
class StandInSpec(EngineSpec):
    """An engine spec whose command is the stand-in engine, not vLLM."""

    pids_file: str = ""

    def command(self) -> list[str]:
        port = str(self.recipe.port)
        return [sys.executable, "-m", MODULE, "engine", "--port", port, "--pids", self.pids_file]

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "PYTHONPATH": str(REPO)}


def standin_spec(port: int, pids_file: Path) -> StandInSpec:
    recipe = EngineRecipe(model="/m", served_model_name="base", host="127.0.0.1", port=port)
    return StandInSpec(recipe=recipe, base_model="base", pids_file=str(pids_file))


def read_pids(path: Path) -> list[int]:
    """The engine's and its worker's pids, once the engine has written them."""
    text = path.read_text() if path.exists() else ""
    return [int(pid) for pid in text.split()] if text.endswith("\n") else []


def _engine(port: int, pids_file: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    listener.listen()
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    pids_file.write_text(f"{os.getpid()} {worker.pid}\n")
    time.sleep(600)


async def _gateway(port: int, pids_file: Path) -> None:
    supervisor = EngineSupervisor([EngineProcess(standin_spec(port, pids_file), "engine-0")])
    await supervisor.start()
    await asyncio.sleep(600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["engine", "gateway"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pids", type=Path, required=True)
    args = parser.parse_args()
    if args.role == "engine":
        _engine(args.port, args.pids)
    else:
        asyncio.run(_gateway(args.port, args.pids))


if __name__ == "__main__":
    main()
