"""Local engines die with their gateway, however the gateway dies.

Engines run in sessions of their own (so a stop reaches vLLM's worker processes, and a Ctrl-C
at the terminal reaches only the gateway, which drains first). The price: a gateway killed with
SIGKILL, or crashing, used to leave them running, holding their ports. Two lines of defence:

- `exec`: the engine is started through this module, which sets `PR_SET_PDEATHSIG` (SIGKILL)
  and then execs vLLM, so vLLM's API server dies the moment the gateway does. Linux only. It
  fires when the *thread* that forked the engine exits: the supervisor forks from the event
  loop's thread, which lives as long as the gateway. It does not reach vLLM's own children
  (EngineCore, workers): they are started later and do not inherit it.
- `reap`: one small process per supervisor, in the gateway's own process group, reads the
  engines' process group ids from a pipe whose only writer is the gateway (`+PGID` when an
  engine starts, `-PGID` once it is gone). End of file means the gateway is gone, whatever
  killed it: the reaper SIGKILLs every group it still watches, which reaches every process
  vLLM started (none of them leaves the group), then exits. It ignores SIGINT, SIGTERM and
  SIGHUP: a Ctrl-C reaches it along with the gateway, which still needs it while it drains.

    python -m lorafleet.server.engine.lifeline exec --parent PID -- COMMAND...
    python -m lorafleet.server.engine.lifeline reap    # stdin: +PGID / -PGID lines

No lorafleet imports beyond the standard library: both run before vLLM starts and must be quick.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Iterable, Sequence

MODULE = "lorafleet.server.engine.lifeline"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

log = logging.getLogger(__name__)


def exec_command(parent: int, command: Sequence[str], python: str = sys.executable) -> list[str]:
    """`command`, started so that it is killed when process `parent` dies."""
    return [python, "-m", MODULE, "exec", f"--parent={parent}", "--", *command]


def reaper_command(python: str = sys.executable) -> list[str]:
    return [python, "-m", MODULE, "reap"]


def die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGKILL when our parent dies; exit at once if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before prctl: nobody would kill us
        raise SystemExit(f"{MODULE}: parent {parent} is gone; not starting the engine")


def reap(lines: Iterable[str]) -> set[int]:
    """Follow `+PGID`/`-PGID` lines to their end; return the groups still watched then."""
    watched: set[int] = set()
    for line in lines:
        sign, number = line[:1], line[1:].strip()
        if not (number.isascii() and number.isdigit()) or int(number) <= 1:
            continue  # never group 0 (killpg(0) is our own group) or 1
        if sign == "+":
            watched.add(int(number))
        elif sign == "-":
            watched.discard(int(number))
    return watched


def kill_groups(pgids: Iterable[int]) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


class Reaper:
    """The gateway's end: starts the reaper and tells it which engine groups to watch."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        # Not start_new_session: it stays in the gateway's group, like any helper process.
        self._process = await asyncio.create_subprocess_exec(
            *reaper_command(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
        )

    async def watch(self, pgid: int) -> None:
        await self._send(f"+{pgid}")

    async def unwatch(self, pgid: int) -> None:
        await self._send(f"-{pgid}")

    async def _send(self, line: str) -> None:
        if self._process is None or self._process.stdin is None:
            return
        try:
            self._process.stdin.write(f"{line}\n".encode())
            await self._process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):  # only PDEATHSIG is left to help
            log.warning("the engine reaper (pid %s) is gone", self._process.pid)

    async def stop(self) -> None:
        """Once the engines are stopped: the reaper reads end of file, kills nothing, exits."""
        process, self._process = self._process, None
        if process is None or process.stdin is None:
            return
        process.stdin.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await process.stdin.wait_closed()
        await process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("exec", help="run COMMAND, killed when --parent dies")
    run.add_argument("--parent", type=int, required=True)
    run.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("reap", help="kill the process groups read from stdin when it closes")
    args = parser.parse_args(argv)
    if args.action == "exec":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("exec needs a command")
        die_with_parent(args.parent)
        os.execvp(command[0], command)  # PR_SET_PDEATHSIG survives exec
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    kill_groups(reap(sys.stdin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
