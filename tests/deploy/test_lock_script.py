"""scripts/lock.py: hashes from pip's report, and the gateway's subset of the lock."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "lock.py"


def package(name: str, version: str, digest: str, requires: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "version": version, "requires_dist": requires},
        "download_info": {"archive_info": {"hashes": {"sha256": digest * 64}}},
    }


@pytest.fixture
def lock_main() -> Any:
    return runpy.run_path(str(SCRIPT))["main"]


def test_hashes_every_pin_and_keeps_the_gateway_subset(tmp_path: Path, lock_main: Any) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\ndependencies = ["fastapi>=0.1"]\n'
        '[project.optional-dependencies]\notel = ["opentelemetry-api"]\n'
    )
    lock = tmp_path / "cpu.lock"
    lock.write_text(
        "# old header\nFastAPI==1.0\nstarlette==2.0\ntorch==2.13.0+cpu\n"
        "opentelemetry_api==3.0\nhttpx==4.0\n"
    )
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"install": [
        package("fastapi", "1.0", "a", ["starlette>=1", 'httpx; extra == "all"']),
        package("starlette", "2.0", "b", ['httpx; sys_platform == "nowhere"']),
        package("torch", "2.13.0+cpu", "c", []),
        package("opentelemetry-api", "3.0", "d", []),
        package("httpx", "4.0", "e", []),
    ]}))  # fmt: skip
    gateway = tmp_path / "gateway.lock"
    args = ["--lock", str(lock), "--gateway-lock", str(gateway), "--report", str(report)]
    args += ["--pyproject", str(tmp_path / "pyproject.toml")]
    assert lock_main(args) == 0
    cpu_text = lock.read_text()
    assert "# old header" not in cpu_text and "--require-hashes" in cpu_text
    assert f"torch==2.13.0+cpu \\\n    --hash=sha256:{'c' * 64}\n" in cpu_text
    pins = [line.split(" ")[0] for line in gateway.read_text().splitlines() if "==" in line]
    # extras and markers are followed: httpx is only in fastapi[all] and off this platform
    assert pins == ["FastAPI==1.0", "opentelemetry_api==3.0", "starlette==2.0"]


def test_a_gateway_dependency_missing_from_the_lock(tmp_path: Path, lock_main: Any) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\ndependencies = ["fastapi"]\n[project.optional-dependencies]\notel = []\n'
    )
    lock = tmp_path / "cpu.lock"
    lock.write_text("fastapi==1.0\n")
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"install": [package("fastapi", "1.0", "a", ["starlette"])]}))
    args = ["--lock", str(lock), "--gateway-lock", str(tmp_path / "g.lock"), "--report"]
    args += [str(report), "--pyproject", str(tmp_path / "pyproject.toml")]
    with pytest.raises(SystemExit, match="starlette is needed by the gateway but not pinned"):
        lock_main(args)
