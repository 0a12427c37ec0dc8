"""The Helm chart run as local processes: a small stand-in for Kubernetes, for wiring tests.

Kubernetes cannot run on these machines, so this harness takes the objects Helm rendered and
plays kubelet, the Deployment controller, kube-proxy and cluster DNS for them:

- each Deployment's pods run their container's rendered command, args and environment as a
  process of this install (image -> this virtualenv: `lorafleet` and `python3` map to it, and
  the gateway image's `ENV` defaults are read from the Dockerfile; llama.cpp's
  `/app/llama-server` maps to this machine's build, `make llama-server`);
- each pod gets its own loopback address (127.X.Y.N), so every container port stays as
  rendered; an address of "0.0.0.0" in a pod's settings means that pod address;
- volumes: each PersistentVolumeClaim is one directory shared by every pod that mounts it, each
  emptyDir one directory per pod; a path under a mount point, in an argument or an environment
  value, is rewritten to the directory standing in for it (so two pods that mount one claim at
  the same path see the same files, as in a cluster);
- Secrets and ConfigMaps are their rendered data (`env`, `envFrom`, `secretKeyRef`);
- readiness and startup probes are polled (HTTP GET) every `probe_interval_s`; a headless
  Service's DNS name resolves to its ready pods through a `socket.getaddrinfo` shim loaded in
  the pods' Python (`sitecustomize`), and a ClusterIP Service is a TCP proxy on 127.0.0.1 that
  spreads new connections over ready endpoints;
- deleting a pod takes it out of every endpoint list at once, runs its preStop sleep, sends
  SIGTERM to its main process (as the container runtime does) and SIGKILL to all its processes
  after terminationGracePeriodSeconds, while the Deployment starts a replacement; a container
  that dies is restarted in the same pod.

Not simulated: scheduling, resource limits, the network policy, probes' failure thresholds
(readiness follows the last probe), and anything GPU.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lorafleet.adapters.training.llama_server import find_llama_server
from tests.tcp_proxy import TcpProxy

Manifest = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]

_DNS_SHIM = '''\
"""Cluster DNS for a simulated pod: headless Service names resolve to ready pod addresses."""
import json, os, socket

_real = socket.getaddrinfo
_file = os.environ.get("SIM_DNS_FILE")
_suffix = os.environ.get("SIM_DNS_SUFFIX", ".svc.cluster.local")


def _getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    name = host.decode() if isinstance(host, bytes) else host
    if _file and isinstance(name, str) and name.endswith(_suffix):
        with open(_file) as f:
            addresses = json.load(f).get(name, [])
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        port = int(port or 0)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, port))
                for a in addresses]
    return _real(host, port, family, type, proto, flags)


socket.getaddrinfo = _getaddrinfo

try:  # uvicorn runs on uvloop, whose resolver is libuv's own, not socket.getaddrinfo
    import uvloop

    _uv_getaddrinfo = uvloop.Loop.getaddrinfo

    async def _uv(self, host, port, *, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        if _file and isinstance(name, str) and name.endswith(_suffix):
            return _getaddrinfo(host, port, family, type, proto, flags)
        return await _uv_getaddrinfo(
            self, host, port, family=family, type=type, proto=proto, flags=flags
        )

    uvloop.Loop.getaddrinfo = _uv
except ImportError:
    pass
'''


def image_env(dockerfile: Path) -> dict[str, str]:
    """`ENV` defaults of a Dockerfile's last stage (what the image sets before the pod's env)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages = re.split(r"(?m)^FROM\s", text)
    env: dict[str, str] = {}
    for line in stages[-1].splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    return env


@dataclass
class Container:
    command: list[str]
    env: dict[str, str]
    readiness: tuple[str, int] | None  # (path, port) of an HTTP GET probe
    pre_stop_s: float
    grace_s: float


@dataclass
class Pod:
    name: str
    deployment: str
    ip: str
    labels: dict[str, str]
    container: Container
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    terminating: bool = False
    restarts: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)

    def url(self, port: int = 8000) -> str:
        return f"http://{self.ip}:{port}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class ClusterSim:
    def __init__(
        self,
        manifests: list[Manifest],
        workdir: Path,
        *,
        images: dict[str, dict[str, str]] | None = None,
        namespace: str = "default",
        cluster_domain: str = "cluster.local",
        probe_interval_s: float = 1.0,
    ) -> None:
        self.objects = manifests
        self.workdir = workdir
        self.images = images or {}  # image repository prefix -> its ENV defaults
        self.namespace = namespace  # `helm install -n`: the rendered objects do not say
        self.suffix = f".svc.{cluster_domain}"
        self.probe_interval_s = probe_interval_s
        self.pods: list[Pod] = []
        # Pod addresses in a /24 of the loopback range of this simulation's own, so two runs on
        # one machine (or a server on 127.0.0.1) never share an address and port.
        net = f"127.{random.randint(2, 254)}.{random.randint(0, 255)}"
        self._addresses = (f"{net}.{n}" for n in range(10, 255))
        self._serial = itertools.count()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._proxies: list[socket.socket] = []
        self._connections: list[socket.socket] = []
        self.dns_file = workdir / "dns.json"
        self.shim_dir = workdir / "shim"
        self.shim_dir.mkdir(parents=True, exist_ok=True)
        (self.shim_dir / "sitecustomize.py").write_text(_DNS_SHIM)
        self._publish_dns()

    # --- objects ---------------------------------------------------------------------------
    def of_kind(self, kind: str) -> list[Manifest]:
        return [m for m in self.objects if m["kind"] == kind]

    def _named(self, kind: str, name: str) -> Manifest:
        (found,) = [m for m in self.of_kind(kind) if m["metadata"]["name"] == name]
        return found

    def _secret(self, name: str, key: str) -> str:
        secret = self._named("Secret", name)
        if key in secret.get("stringData", {}):
            return str(secret["stringData"][key])
        return base64.b64decode(secret["data"][key]).decode()

    def claim_dir(self, claim: str) -> Path:
        path = self.workdir / "pvc" / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- pods ------------------------------------------------------------------------------
    def start(self) -> None:
        for deployment in self.of_kind("Deployment"):
            for _ in range(int(deployment["spec"].get("replicas", 1))):
                self._create_pod(deployment)
        threading.Thread(target=self._probe_loop, daemon=True).start()

    def _create_pod(self, deployment: Manifest) -> Pod:
        name = deployment["metadata"]["name"]
        pod_name = f"{name}-{next(self._serial)}"
        template = deployment["spec"]["template"]
        spec = template["spec"]
        (container,) = spec["containers"]
        ip = next(self._addresses)
        mounts = self._mounts(pod_name, spec, container)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        pre_stop_s = float(pre_stop["command"][1]) if pre_stop.get("command") else 0.0
        probe = container.get("readinessProbe", {}).get("httpGet")
        port = self._port(container, probe["port"]) if probe else 0
        pod = Pod(
            name=pod_name,
            deployment=name,
            ip=ip,
            labels=template["metadata"]["labels"],
            container=Container(
                command=self._command(container, mounts, ip),
                env=self._env(container, mounts, ip),
                readiness=(probe["path"], port) if probe else None,
                pre_stop_s=pre_stop_s,
                grace_s=float(spec.get("terminationGracePeriodSeconds", 30)),
            ),
            log_path=self.workdir / "logs" / f"{pod_name}.log",
        )
        pod.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.pods.append(pod)
        threading.Thread(target=self._kubelet, args=(pod,), daemon=True).start()
        return pod

    @staticmethod
    def _port(container: dict[str, Any], port: int | str) -> int:
        if isinstance(port, int):
            return port
        (found,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
        return int(found)

    def _mounts(self, pod: str, spec: dict[str, Any], container: dict[str, Any]) -> list[Any]:
        """(mount path, directory) pairs, longest mount path first."""
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = []
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "persistentVolumeClaim" in volume:
                directory = self.claim_dir(volume["persistentVolumeClaim"]["claimName"])
            else:  # emptyDir: the pod's own
                directory = self.workdir / "pods" / pod / mount["name"]
                directory.mkdir(parents=True, exist_ok=True)
            mounts.append((mount["mountPath"].rstrip("/") or "/", directory))
        return sorted(mounts, key=lambda item: -len(item[0]))

    @classmethod
    def _rewrite(cls, value: str, mounts: list[Any], ip: str) -> str:
        """A path under a mount point -> the directory standing in for it (also after `=`, and
        in the strings of a JSON value)."""
        if value == "0.0.0.0":
            return ip
        if value.startswith(("[", "{")):
            with contextlib.suppress(ValueError):
                return json.dumps(cls._rewrite_json(json.loads(value), mounts, ip))
        prefix, sep, rest = value.partition("=") if value.startswith("--") else ("", "", value)
        for mount_path, directory in mounts:
            if rest == mount_path or rest.startswith(mount_path + "/"):
                rest = str(directory) + rest[len(mount_path) :]
                break
        return f"{prefix}{sep}{rest}"

    @classmethod
    def _rewrite_json(cls, value: Any, mounts: list[Any], ip: str) -> Any:
        if isinstance(value, str):
            return cls._rewrite(value, mounts, ip)
        if isinstance(value, list):
            return [cls._rewrite_json(item, mounts, ip) for item in value]
        if isinstance(value, dict):
            return {key: cls._rewrite_json(item, mounts, ip) for key, item in value.items()}
        return value

    def _command(self, container: dict[str, Any], mounts: list[Any], ip: str) -> list[str]:
        command = [*container.get("command", []), *container.get("args", [])]
        program = {
            "lorafleet": [sys.executable, "-m", "lorafleet.cli"],
            "python3": [sys.executable],
        }
        if command[0] == "/app/llama-server":  # llama.cpp's server image -> this machine's build
            program[command[0]] = [str(find_llama_server())]
        # This install's programs are not pod paths: only what the manifest says is rewritten.
        words = [
            *program.get(command[0], [self._rewrite(command[0], mounts, ip)]),
            *(self._rewrite(word, mounts, ip) for word in command[1:]),
        ]
        if "vllm.entrypoints.openai.api_server" in words:
            words.append(f"--host={ip}")  # vLLM binds every address by default: the pod's only
        return words

    def _env(self, container: dict[str, Any], mounts: list[Any], ip: str) -> dict[str, str]:
        # The host's environment stands in for the image's base (PATH, locale, ...); its paths
        # are this machine's, never rewritten. What the image and the manifest set is.
        host = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("LORAFLEET_", "VLLM_", "HF_", "PYTEST", "COV_"))
        }
        host.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})  # no network here
        env: dict[str, str] = {}
        image = container["image"]
        for prefix, defaults in self.images.items():
            if image.startswith(prefix):
                env.update(defaults)
        for source in container.get("envFrom", []):
            env.update(self._named("ConfigMap", source["configMapRef"]["name"])["data"])
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif "secretKeyRef" in item.get("valueFrom", {}):
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self._secret(ref["name"], ref["key"])
        env = {**host, **{key: self._rewrite(value, mounts, ip) for key, value in env.items()}}
        env["PYTHONPATH"] = os.pathsep.join([str(self.shim_dir), str(REPO)])
        env["SIM_DNS_FILE"], env["SIM_DNS_SUFFIX"] = str(self.dns_file), self.suffix
        return env

    def _kubelet(self, pod: Pod) -> None:
        """Run the container; restart it when it exits, until the pod is deleted."""
        while not pod.terminating and not self._stop.is_set():
            with pod.log_path.open("ab") as log:
                pod.process = subprocess.Popen(
                    pod.container.command,
                    env=pod.container.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            pod.process.wait()
            if pod.terminating or self._stop.is_set():
                break
            pod.ready = False  # before the count: a watcher never sees a restart as ready
            pod.restarts += 1
            self._publish_dns()
            time.sleep(1.0)  # kubelet's first restart back-off is 10 s; 1 s keeps tests short
        pod.stopped.set()

    # --- probes, DNS, Services -------------------------------------------------------------
    def _probe_loop(self) -> None:
        with httpx.Client(timeout=2.0) as client:
            while not self._stop.is_set():
                changed = False
                for pod in list(self.pods):
                    ready = self._probe(client, pod)
                    if ready != pod.ready:
                        pod.ready, changed = ready, True
                if changed:
                    self._publish_dns()
                time.sleep(self.probe_interval_s)

    @staticmethod
    def _probe(client: httpx.Client, pod: Pod) -> bool:
        if pod.terminating or pod.process is None or pod.process.poll() is not None:
            return False
        if pod.container.readiness is None:
            return True  # no readiness probe: ready once running, as in Kubernetes
        path, port = pod.container.readiness
        try:
            return client.get(f"http://{pod.ip}:{port}{path}").status_code == 200
        except httpx.HTTPError:
            return False

    def endpoints(self, service: str) -> list[Pod]:
        """Ready pods selected by a Service (terminating pods never are)."""
        selector = self._named("Service", service)["spec"]["selector"]
        with self._lock:
            return [
                pod
                for pod in self.pods
                if pod.ready
                and not pod.terminating
                and all(pod.labels.get(k) == v for k, v in selector.items())
            ]

    def _publish_dns(self) -> None:
        records = {}
        for service in self.of_kind("Service"):
            if service["spec"].get("clusterIP") != "None":
                continue
            name = service["metadata"]["name"]
            records[f"{name}.{self.namespace}{self.suffix}"] = [p.ip for p in self.endpoints(name)]
        temporary = self.dns_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(records))
        temporary.replace(self.dns_file)  # readers never see half a file

    def service_url(self, service: str, port: int = 8000) -> str:
        """A ClusterIP Service: a loopback TCP proxy over its ready endpoints (round robin)."""
        listener = socket.create_server(("127.0.0.1", 0))
        self._proxies.append(listener)
        turn = itertools.count()

        def accept() -> None:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                pods = self.endpoints(service)
                if not pods:
                    client.close()  # no endpoint: connection refused, as kube-proxy does
                    continue
                pod = pods[next(turn) % len(pods)]
                try:
                    upstream = socket.create_connection((pod.ip, port), timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                self._connections += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=TcpProxy._pipe, args=(a, b), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    # --- what the test does to the cluster -------------------------------------------------
    def deployment_pods(self, deployment: str) -> list[Pod]:
        with self._lock:
            return [p for p in self.pods if p.deployment == deployment and not p.terminating]

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                live = [pod for pod in self.pods if not pod.terminating]
            if live and all(pod.ready for pod in live):
                return
            for pod in live:
                if pod.restarts > 3:
                    raise AssertionError(f"{pod.name} keeps crashing:\n{pod.log_tail()}")
            time.sleep(0.5)
        waiting = [pod for pod in self.pods if not pod.terminating and not pod.ready]
        raise AssertionError(
            "not ready in time: " + "\n\n".join(f"{pod.name}:\n{pod.log_tail()}" for pod in waiting)
        )

    def delete_pod(self, pod: Pod) -> Pod:
        """`kubectl delete pod`: out of the endpoints at once, preStop, SIGTERM, SIGKILL after
        the grace period; the Deployment starts a replacement right away (returned)."""
        with self._lock:
            pod.terminating, pod.ready = True, False
        self._publish_dns()
        deployment = self._named("Deployment", pod.deployment)
        replacement = self._create_pod(deployment)
        threading.Thread(target=self._terminate, args=(pod,), daemon=True).start()
        return replacement

    def _terminate(self, pod: Pod) -> None:
        started = time.monotonic()
        time.sleep(pod.container.pre_stop_s)
        process = pod.process
        if process is None:
            return
        # The container runtime signals the container's main process only (its children are
        # that process's business); at the deadline everything left in the container dies.
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        remaining = pod.container.grace_s - (time.monotonic() - started)
        try:
            process.wait(max(remaining, 0))
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
        _signal_group(process.pid, signal.SIGKILL)  # workers left in the group

    def kill_container(self, pod: Pod) -> None:
        """The container crashes (SIGKILL): kubelet restarts it in the same pod."""
        if pod.process is not None:
            _signal_group(pod.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        self._stop.set()
        for sock in [*self._proxies, *self._connections]:
            with contextlib.suppress(OSError):
                sock.close()
        for pod in self.pods:
            pod.terminating = True
            if pod.process is not None and pod.process.poll() is None:
                _signal_group(pod.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for pod in self.pods:
            if pod.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    pod.process.wait(max(0.1, deadline - time.monotonic()))
                _signal_group(pod.process.pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
