"""Hash requirements/cpu.lock and derive the gateway's subset, requirements/gateway.lock.

    python scripts/lock.py                      # what `make lock` and `make lock-hashes` run
    python scripts/lock.py --report pip.json    # reuse a report of the same pins

pip itself says which file it would install for each pin on this platform (CPython 3.11, Linux
x86_64: the Makefile's and the images'): `pip install --dry-run --no-deps --report`, nothing
installed. Each pin gets that file's sha256, so `pip install --require-hashes` refuses any other
file. torch's +cpu build comes from the local wheel folder (PIP_FIND_LINKS) and is hashed like
any other file. Pins are kept as they are: re-resolving them is `make lock`'s first step.

The gateway's subset is lorafleet's own requirements (pyproject.toml) plus the extras in
GATEWAY_EXTRAS, followed through the `Requires-Dist` of each pinned package (from the same
report): no torch, transformers or vLLM. It keeps cpu.lock's pins and hashes.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

try:
    from packaging.requirements import Requirement
except ImportError:  # a bare interpreter: pip's own copy
    from pip._vendor.packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
CPU_LOCK = REPO / "requirements" / "cpu.lock"
GATEWAY_LOCK = REPO / "requirements" / "gateway.lock"
GATEWAY_EXTRAS = ("otel",)  # request traces (off unless LORAFLEET_OTLP_ENDPOINT is set)
CPU_HEADER = """\
# Reproducible CPU install: pip install --no-deps --require-hashes -r requirements/cpu.lock
# Regenerate with 'make lock' (re-resolve and hash), or only the hashes with 'make lock-hashes'
# (scripts/lock.py). Each hash is the file pip picks on CPython 3.11 / Linux x86_64; torch comes
# from the machine's local wheel folder (PIP_FIND_LINKS).
# torchvision/torchaudio/torchcodec are deliberately absent: PyPI's builds of them break
# 'import transformers'.
"""
GATEWAY_HEADER = """\
# The gateway alone (cluster mode, remote engines): no torch, transformers or vLLM.
#   pip install --no-deps --require-hashes -r requirements/gateway.lock && pip install --no-deps .
# Generated with requirements/cpu.lock (same pins, same hashes) by scripts/lock.py:
# lorafleet's requirements plus the extras: {extras}.
"""
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(lock: Path) -> dict[str, str]:
    """normalized name -> `name==version` as written (hash lines and comments skipped)."""
    pins = {}
    for line in lock.read_text().splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[normalize(match[1])] = f"{match[1]}=={match[2]}"
    return pins


def pip_report(pins: dict[str, str]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        plain, report = Path(tmp) / "pins.txt", Path(tmp) / "report.json"
        plain.write_text("\n".join(pins.values()) + "\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--no-deps",
             "--ignore-installed", "--report", str(report), "-r", str(plain)],
            check=True,
        )  # fmt: skip
        installs: list[dict[str, Any]] = json.loads(report.read_text())["install"]
    return installs


def hashes_of(installs: list[dict[str, Any]], pins: dict[str, str]) -> dict[str, str]:
    found = {
        normalize(item["metadata"]["name"]): item["download_info"]["archive_info"]["hashes"]
        for item in installs
    }
    missing = sorted(set(pins) - set(found))
    if missing:
        raise SystemExit(f"pip reported no file for: {', '.join(missing)}")
    return {name: found[name]["sha256"] for name in pins}


def gateway_closure(installs: list[dict[str, Any]], pyproject: Path) -> set[str]:
    """Normalized names of every package `lorafleet[GATEWAY_EXTRAS]` needs on this platform."""
    requires = {
        normalize(item["metadata"]["name"]): item["metadata"].get("requires_dist") or []
        for item in installs
    }
    project = tomllib.loads(pyproject.read_text())["project"]
    roots = list(project["dependencies"])
    for extra in GATEWAY_EXTRAS:
        roots += project["optional-dependencies"][extra]
    needed: set[str] = set()
    todo = [Requirement(spec) for spec in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        name, extras = normalize(req.name), frozenset(req.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        needed.add(name)
        if name not in requires:
            raise SystemExit(f"{name} is needed by the gateway but not pinned (run make lock)")
        for spec in requires[name]:
            dep = Requirement(spec)
            envs = [{"extra": extra} for extra in sorted(extras) or [""]]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                todo.append(dep)
    return needed


def write_lock(path: Path, header: str, pins: dict[str, str], hashes: dict[str, str]) -> None:
    lines = [f"{pins[name]} \\\n    --hash=sha256:{hashes[name]}" for name in sorted(pins)]
    path.write_text(header + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lock", type=Path, default=CPU_LOCK)
    parser.add_argument("--gateway-lock", type=Path, default=GATEWAY_LOCK)
    parser.add_argument("--pyproject", type=Path, default=REPO / "pyproject.toml")
    parser.add_argument("--report", type=Path, help="a `pip install --report` of these pins")
    args = parser.parse_args(argv)
    pins = read_pins(args.lock)
    installs = json.loads(args.report.read_text())["install"] if args.report else pip_report(pins)
    hashes = hashes_of(installs, pins)
    write_lock(args.lock, CPU_HEADER, pins, hashes)
    gateway = gateway_closure(installs, args.pyproject)
    header = GATEWAY_HEADER.format(extras=", ".join(GATEWAY_EXTRAS))
    write_lock(args.gateway_lock, header, {n: pins[n] for n in gateway}, hashes)
    print(f"{args.lock}: {len(pins)} pins hashed; {args.gateway_lock}: {len(gateway)} of them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
