"""Every README and docs/ example that talks to the gateway, run against the real one.

The examples come from the Markdown itself (tests/docs_examples.py), so they cannot drift from
what users read; a printed output the README shows is asserted. Examples that cannot run here
are marked in the Markdown, and tests/test_docs_examples.py checks the marks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import httpx
import pytest

from lorafleet.adapters.base_models import fetch_model, model_info
from tests.adapter_factory import make_lora_dir
from tests.docs_examples import Example, all_examples
from tests.integration.conftest import MODEL, Server, free_port, start_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [example for example in all_examples(ROOT) if example.not_run is None]
TIMEOUT_S = 300
_ADAPTER_SOURCE = re.compile(r"\bruns/([\w.-]+)")
_ADDED = re.compile(r"lorafleet adapters add (\S+)")
ADMIN_KEY = "readme-admin-key-0123456789"
# The README's placeholders for what a user types in: their admin key, a key id from `keys ls`.
PLACEHOLDERS = {
    "export LORAFLEET_ADMIN_KEY=...": f"export LORAFLEET_ADMIN_KEY={ADMIN_KEY}",
    "<key id>": "\"$(lorafleet keys ls | awk 'NR == 1 {print $1}')\"",
}


@cache
def base_dir() -> Path:
    return fetch_model(None, progress=False)


@pytest.fixture
def workdir(gateway: Server, request: pytest.FixtureRequest) -> Path:
    """A directory under the gateway's adapter root, so `runs/...` sources are allowed."""
    assert gateway.adapter_root is not None
    path = gateway.adapter_root / f"readme-{request.node.name}".replace("/", "_")
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def auth_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway with auth on for the keys examples. Key and usage routes need no engine, so
    it points at a port where none listens: the session's engine stays out of it."""
    state = tmp_path_factory.mktemp("auth-gateway")
    env = {
        "LORAFLEET_ADMIN_KEY": ADMIN_KEY,
        "LORAFLEET_KEY_SECRET": "s" * 40,
        "LORAFLEET_DATABASE_URL": f"sqlite:///{state / 'registry.db'}",
        "LORAFLEET_ADAPTER_STORE": str(state / "adapter-store"),
    }
    dead_engine = f"http://127.0.0.1:{free_port()}"
    args = ["--engine", dead_engine, "--served-model-name", MODEL]
    server = start_server(args, state / "serve.log", env)
    deadline = time.monotonic() + 60
    while not _answers(f"{server.url}/health"):
        if server.process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"auth gateway did not start:\n{server.log_tail()}")
        time.sleep(0.2)
    yield server
    server.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def prepare_adapters(example: Example, workdir: Path) -> None:
    """The README's `runs/<name>` directories, as small random adapters (distinct content,
    so each `adapters add` is a new version)."""
    for seed, name in enumerate(sorted(set(_ADAPTER_SOURCE.findall(example.code)))):
        make_lora_dir(workdir / "runs" / name, model_info(base_dir()), rank=8, seed=seed)


def run(example: Example, gateway: Server, workdir: Path) -> subprocess.CompletedProcess[str]:
    code = example.for_gateway(gateway.url)
    for placeholder, value in PLACEHOLDERS.items():
        code = code.replace(placeholder, value)
    runner = (
        [sys.executable, "-c"] if example.runner == "python" else ["bash", "-euo", "pipefail", "-c"]
    )
    env = {
        **os.environ,
        "LORAFLEET_URL": gateway.url,
        # The lorafleet console script of this environment, whichever PATH pytest got.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return subprocess.run(
        [*runner, code],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_example(
    example: Example, gateway: Server, workdir: Path, request: pytest.FixtureRequest
) -> None:
    if "LORAFLEET_ADMIN_KEY" in example.code:  # an auth example: the gateway with auth on
        gateway = request.getfixturevalue("auth_gateway")
    prepare_adapters(example, workdir)
    try:
        result = run(example, gateway, workdir)
    finally:
        for name in _ADDED.findall(example.code):  # leave the shared gateway as it was
            httpx.delete(f"{gateway.url}/v1/adapters/{name}", timeout=60)
    shown = f"{example.name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, shown
    assert '"error"' not in result.stdout, shown
    printed = result.stdout.splitlines()
    for expected in example.expected_output():
        assert expected in printed, f"{example.name}: README shows {expected!r}\n{shown}"
    if '"stream": true' in example.code:
        events = [line for line in printed if line.startswith("data: ")]
        assert len(events) > 3 and events[-1] == "data: [DONE]", shown
