"""Starting and stopping what a scenario needs: vLLM engines, the gateway, the HF baseline.

    with ProcessStack(log_dir) as stack:
        engine = stack.start(vllm_engine(model_dir, port=find_free_port()))
        gateway = stack.start(gateway_process([engine.url], "smollm2-135m-instruct", port=...))
        stack.wait_ready()
        ...                                   # everything is stopped on the way out

Each child runs in its own process group, gets SIGTERM then SIGKILL on exit, and (on Linux)
dies with the benchmark through PR_SET_PDEATHSIG even if the benchmark is killed. Output goes
to a log file per process; the tail is shown when a process fails to come up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

PORT_RANGE = (8300, 8399)


class ProcessStartError(RuntimeError):
    """A child process exited or did not become ready in time."""


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]
    port: int
    ready_path: str  # GET this until it answers 200
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 300.0
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class VllmOptions:
    """How the benchmark starts a bare vLLM engine (the brief's measured CPU settings)."""

    served_model_name: str = "smollm2-135m-instruct"
    dtype: str = "float32"
    max_model_len: int = 2048
    kv_cache_gib: float = 2.0
    threads_bind: str = "0-1"
    max_num_seqs: int | None = None
    enable_lora: bool = False
    max_loras: int = 4
    max_lora_rank: int = 16
    lora_modules: tuple[tuple[str, str], ...] = ()  # (name, path) preloaded at start
    extra_args: tuple[str, ...] = ()
    extra_env: tuple[tuple[str, str], ...] = ()


def find_free_port(
    low: int = PORT_RANGE[0], high: int = PORT_RANGE[1], taken: set[int] | None = None
) -> int:
    """A port in [low, high] nothing listens on (and not in `taken`). The scan starts at an
    offset drawn from this process id, so two benchmarks started at once rarely race for the
    same port between the probe and the child's bind."""
    span = high - low + 1
    start = os.getpid() % span
    for port in (low + (start + i) % span for i in range(span)):
        if taken and port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        if taken is not None:
            taken.add(port)
        return port
    raise ProcessStartError(f"no free port in {low}-{high}")


def vllm_engine(
    model_dir: Path, port: int, options: VllmOptions, name: str = "engine"
) -> ProcessSpec:
    """A bare vLLM engine (a component, not the product) built from the product's one engine
    recipe (`server/engine/recipe.py`, what `lorafleet serve` and the Helm chart run) with the
    benchmark's options: only the settings in `options` differ from a product engine."""
    from lorafleet.server.engine.recipe import EngineRecipe
    from lorafleet.server.engine.supervisor import EngineSpec

    extra = list(options.extra_args)
    if options.enable_lora and options.lora_modules:
        extra = [
            "--lora-modules",
            *(f"{lora}={path}" for lora, path in options.lora_modules),
            *extra,
        ]
    recipe = EngineRecipe(
        model=str(model_dir),
        served_model_name=options.served_model_name,
        dtype=options.dtype,
        max_model_len=options.max_model_len,
        max_num_seqs=options.max_num_seqs,
        enable_lora=options.enable_lora,
        max_loras=options.max_loras,
        max_lora_rank=options.max_lora_rank,
        host="127.0.0.1",
        port=port,
        extra_args=tuple(extra),
    )
    engine = EngineSpec(
        recipe=recipe,
        base_model=options.served_model_name,
        kv_cache_gib=options.kv_cache_gib,
        cpu_threads=options.threads_bind,
        log_level="INFO",  # the benchmark keeps the engine's own log beside its results
    )
    return ProcessSpec(
        name=name,
        argv=engine.command(),
        port=port,
        ready_path="/health",
        env=engine.environment({}) | dict(options.extra_env),
        ready_timeout_s=900.0,
    )


def gateway_process(
    engine_urls: list[str],
    served_model_name: str,
    port: int,
    *,
    adapter_roots: list[Path] | None = None,
    state_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    name: str = "gateway",
) -> ProcessSpec:
    """`lorafleet serve` in cluster mode, fronting engines this benchmark started (or was given).

    With `state_dir`, its adapter registry and store live there, apart from any other gateway's.
    """
    argv = [
        sys.executable,
        "-m",
        "lorafleet.cli",
        "serve",
        "--port",
        str(port),
        "--served-model-name",
        served_model_name,
    ]
    for url in engine_urls:
        argv += ["--engine", url]
    env = dict(extra_env or {})
    if adapter_roots:
        env["LORAFLEET_ADAPTER_ROOTS"] = ",".join(str(root) for root in adapter_roots)
    if state_dir:
        env["LORAFLEET_DATABASE_URL"] = f"sqlite:///{state_dir / f'{name}-registry.db'}"
        env["LORAFLEET_ADAPTER_STORE"] = str(state_dir / f"{name}-adapter-store")
    return ProcessSpec(
        name=name, argv=argv, port=port, ready_path="/ready", env=env, ready_timeout_s=120.0
    )


def serve_process(
    port: int,
    engine_port: int,
    state_dir: Path,
    *,
    adapter_roots: list[Path] | None = None,
    settings_env: dict[str, str] | None = None,
    name: str = "serve",
) -> ProcessSpec:
    """`lorafleet serve` as a user runs it: local mode, the gateway starts its own engine from
    the product's defaults (`settings_env` holds any LORAFLEET_* setting a scenario changes,
    recorded with the result). Only what keeps two instances apart is set here: ports, state."""
    argv = [sys.executable, "-m", "lorafleet.cli", "serve", "--port", str(port)]
    env = {
        "LORAFLEET_ENGINE_PORT_BASE": str(engine_port),
        "LORAFLEET_DATABASE_URL": f"sqlite:///{state_dir / f'{name}-registry.db'}",
        "LORAFLEET_ADAPTER_STORE": str(state_dir / f"{name}-adapter-store"),
        **(settings_env or {}),
    }
    if adapter_roots:
        env["LORAFLEET_ADAPTER_ROOTS"] = ",".join(str(root) for root in adapter_roots)
    return ProcessSpec(
        name=name, argv=argv, port=port, ready_path="/ready", env=env, ready_timeout_s=900.0
    )


def plain_vllm_process(
    model_dir: Path,
    port: int,
    served_model_name: str,
    name: str = "plain-vllm",
    extra_args: tuple[str, ...] = (),
) -> ProcessSpec:
    """Plain vLLM, LoRA off, no lorafleet plugin: what a user compares the product against.

    Built from the engine `lorafleet serve` would start with its defaults (the same recipe:
    dtype, context length, batch size, KV-cache size, core binding), with only LoRA turned off
    and vLLM's plugins disabled (`VLLM_PLUGINS=""`), so the two differ in nothing else.
    `extra_args` go after the recipe's (a profiler, say)."""
    from dataclasses import replace

    from lorafleet.server.engine.local import engine_specs
    from lorafleet.server.settings import Settings

    settings = Settings(served_model_name=served_model_name, replicas=1)
    (spec,) = engine_specs(settings, {served_model_name: model_dir})
    recipe = replace(
        spec.recipe, enable_lora=False, host="127.0.0.1", port=port,
        extra_args=(*spec.recipe.extra_args, *extra_args),
    )  # fmt: skip
    spec = replace(spec, recipe=recipe)
    env = spec.environment({}) | {"VLLM_PLUGINS": ""}
    return ProcessSpec(
        name=name,
        argv=spec.command(),
        port=port,
        ready_path="/health",
        env=env,
        ready_timeout_s=900.0,
    )


def descendant_commands(pid: int) -> list[list[str]]:
    """The command lines of a process's live descendants (Linux /proc), oldest first."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in stats.items():
        children.setdefault(parent, []).append(child)
    found, stack = [], list(children.get(pid, []))
    while stack:
        current = stack.pop()
        try:
            raw = Path(f"/proc/{current}/cmdline").read_bytes()
        except OSError:
            continue
        found.append(
            (current, [part.decode(errors="replace") for part in raw.split(b"\0") if part])
        )
        stack.extend(children.get(current, []))
    return [command for _, command in sorted(found)]


def hf_server(
    model_dir: Path,
    port: int,
    *,
    served_model_name: str,
    batch_size: int = 1,
    threads: int | None = None,
    name: str = "hf",
) -> ProcessSpec:
    argv = [
        sys.executable,
        "-m",
        "lorafleet.benchmarks.hf_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_model_name,
        "--port",
        str(port),
        "--batch-size",
        str(batch_size),
    ]
    if threads:
        argv += ["--threads", str(threads)]
    return ProcessSpec(name=name, argv=argv, port=port, ready_path="/health", ready_timeout_s=180.0)


def fake_engine(
    port: int, *, ttft_ms: float, itl_ms: float, served_model_name: str, name: str = "fake-engine"
) -> ProcessSpec:
    argv = [
        sys.executable,
        "-m",
        "lorafleet.benchmarks.fake_server",
        "--port",
        str(port),
        "--ttft-ms",
        str(ttft_ms),
        "--itl-ms",
        str(itl_ms),
        "--model",
        served_model_name,
    ]
    return ProcessSpec(name=name, argv=argv, port=port, ready_path="/health", ready_timeout_s=60.0)


def _gib(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ManagedProcess:
    def __init__(self, spec: ProcessSpec, log_dir: Path) -> None:
        self.spec = spec
        self.log_path = log_dir / f"{spec.name}.log"
        self._popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_after_s: float | None = None

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = os.environ | self.spec.env
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.spec.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self.started_at = time.monotonic()

    def poll_ready(self) -> bool:
        if self._popen is None:
            raise ProcessStartError(f"{self.spec.name} was never started")
        if self._popen.poll() is not None:
            raise ProcessStartError(
                f"{self.spec.name} exited with {self._popen.returncode}:\n{self.log_tail()}"
            )
        try:
            response = httpx.get(self.url + self.spec.ready_path, timeout=5.0)
        except httpx.HTTPError:
            return False
        if response.status_code == 200 and self.ready_after_s is None:
            self.ready_after_s = time.monotonic() - self.started_at
        return response.status_code == 200

    def stop(self, grace_s: float = 20.0) -> None:
        popen, self._popen = self._popen, None
        if popen is None or popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float | None:
        return tree_cpu_seconds(self.pid) if self.pid else None


class ProcessStack:
    """Processes started for one scenario; all stopped (in reverse order) on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = []

    def __enter__(self) -> ProcessStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(self, spec: ProcessSpec) -> ManagedProcess:
        process = ManagedProcess(spec, self.log_dir)
        self.processes.append(process)
        print(
            f"[bench] starting {spec.name} on {spec.url} (log: {process.log_path})", file=sys.stderr
        )
        process.start()
        return process

    def wait_ready(self, processes: list[ManagedProcess] | None = None) -> None:
        """Wait until each process answers its readiness path (they start in parallel)."""
        waiting = [p for p in processes or self.processes if p.ready_after_s is None]
        deadline = {id(p): time.monotonic() + p.spec.ready_timeout_s for p in waiting}
        while waiting:
            for process in list(waiting):
                if process.poll_ready():
                    print(
                        f"[bench] {process.spec.name} ready after {process.ready_after_s:.0f}s",
                        file=sys.stderr,
                    )
                    waiting.remove(process)
                elif time.monotonic() > deadline[id(process)]:
                    limit = process.spec.ready_timeout_s
                    raise ProcessStartError(
                        f"{process.spec.name} not ready after {limit:.0f}s:\n{process.log_tail()}"
                    )
            if waiting:
                time.sleep(1.0)

    def stop(self, process: ManagedProcess) -> None:
        process.stop()
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and all its live descendants (Linux /proc)."""
    stats = _all_stats()
    if pid not in stats:
        return None
    children: dict[int, list[int]] = {}
    for child, (parent, _) in stats.items():
        children.setdefault(parent, []).append(child)
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += stats[current][1]
        stack.extend(children.get(current, []))
    return total


def _all_stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) for every process we can read."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    stats: dict[int, tuple[int, float]] = {}
    for entry in _proc_pids():
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        stats[entry] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    return stats


def _proc_pids() -> Iterator[int]:
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                yield int(name)
