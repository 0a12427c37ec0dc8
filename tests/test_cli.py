"""The top-level `lorafleet` command: every feature's sub-command, and an install that leaves the
benchmarks out still has the rest."""

from __future__ import annotations

import subprocess
import sys


def test_every_sub_command_is_offered() -> None:
    from lorafleet.cli import make_parser

    text = make_parser().format_help()
    for command in ("serve", "adapters", "keys", "train", "bench"):
        assert command in text


def test_without_the_benchmarks_package_the_other_commands_work() -> None:
    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'lorafleet.benchmarks' or name.startswith('lorafleet.benchmarks.'):\n"
        "            raise ModuleNotFoundError(name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Block())\n"
        "from lorafleet.cli import make_parser\n"
        "help = make_parser().format_help()\n"
        "assert 'serve' in help and 'bench' not in help.split('COMMAND', 1)[1], help\n"
    )
    done = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
