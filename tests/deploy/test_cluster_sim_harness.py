"""The process harness's own rules (fast): mounts, image defaults, the DNS shim, pod deletion."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy.cluster_sim import REPO, ClusterSim, image_env

MOUNTS = [("/var/lib/lorafleet", Path("/sim/state")), ("/adapters", Path("/sim/pvc/adapters"))]


def test_paths_under_mount_points_are_rewritten_everywhere() -> None:
    rewrite = ClusterSim._rewrite
    assert rewrite("/adapters/store", MOUNTS, "127.0.1.9") == "/sim/pvc/adapters/store"
    assert rewrite("/adapters", MOUNTS, "127.0.1.9") == "/sim/pvc/adapters"
    assert rewrite("/adaptersX", MOUNTS, "127.0.1.9") == "/adaptersX"  # not under the mount
    assert rewrite("--model=/adapters/m", MOUNTS, "127.0.1.9") == "--model=/sim/pvc/adapters/m"
    assert rewrite("0.0.0.0", MOUNTS, "127.0.1.9") == "127.0.1.9"
    models = json.loads(rewrite('[{"source": "/adapters/m", "n": 1}]', MOUNTS, "127.0.1.9"))
    assert models == [{"source": "/sim/pvc/adapters/m", "n": 1}]


def test_the_gateway_images_env_defaults_come_from_the_dockerfile() -> None:
    env = image_env(REPO / "Dockerfile")
    assert env["LORAFLEET_ADAPTER_STORE"] == "/adapters/store"
    assert env["LORAFLEET_HOST"] == "0.0.0.0"
    assert env["HOME"] == "/var/lib/lorafleet"


def _deployment(command: list[str]) -> dict[str, object]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "sleeper"},
        "spec": {
            "replicas": 1,
            "template": {
                "metadata": {"labels": {"app": "sleeper"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "c",
                            "image": "python",
                            "command": command,
                            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}},
                        }
                    ],
                },
            },
        },
    }


def test_headless_names_resolve_to_ready_pods_only(tmp_path: Path) -> None:
    service = {
        "kind": "Service",
        "metadata": {"name": "pods"},
        "spec": {"clusterIP": "None", "selector": {"app": "sleeper"}},
    }
    sim = ClusterSim([service, _deployment(["sleep", "60"])], tmp_path, namespace="ns")
    sim.start()
    try:
        (pod,) = sim.deployment_pods("sleeper")
        deadline = time.monotonic() + 10
        while not pod.ready and time.monotonic() < deadline:  # no probe: ready once running
            time.sleep(0.05)
        resolve = (
            "import socket; print(sorted({a[4][0] for a in "
            "socket.getaddrinfo('pods.ns.svc.cluster.local', 8000)}))"
        )
        env = {**pod.container.env}
        out = subprocess.run(
            [sys.executable, "-c", resolve], env=env, capture_output=True, text=True
        )
        assert out.stdout.strip() == f"['{pod.ip}']", out.stderr
        # Deleted: out of DNS at once, a replacement is started, SIGTERM after the preStop.
        started = time.monotonic()
        replacement = sim.delete_pod(pod)
        assert json.loads(sim.dns_file.read_text())["pods.ns.svc.cluster.local"] == []
        assert replacement.ip != pod.ip
        assert pod.stopped.wait(10)
        assert time.monotonic() - started >= 1.0  # the preStop sleep ran first
    finally:
        sim.stop()


def test_this_installs_paths_are_never_taken_for_pod_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout under /tmp (CI clones anywhere) must not be rewritten by a pod's /tmp mount."""
    deployment = _deployment(["lorafleet", "serve", "--state=/tmp/state"])
    template = deployment["spec"]["template"]["spec"]  # type: ignore[index]
    template["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    template["containers"][0]["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    template["containers"][0]["env"] = [{"name": "SCRATCH", "value": "/tmp/x"}]
    monkeypatch.setenv("PATH", "/tmp/checkout/.venv/bin:/usr/bin")
    monkeypatch.setattr(sys, "executable", "/tmp/checkout/.venv/bin/python")
    sim = ClusterSim([deployment], tmp_path / "sim")
    spec = template
    (container,) = spec["containers"]
    mounts = sim._mounts("p", spec, container)
    command = sim._command(container, mounts, "127.0.1.9")
    assert command[:3] == ["/tmp/checkout/.venv/bin/python", "-m", "lorafleet.cli"]
    assert command[-1] == f"--state={tmp_path / 'sim' / 'pods' / 'p' / 'tmp'}/state"
    env = sim._env(container, mounts, "127.0.1.9")
    assert env["PATH"] == "/tmp/checkout/.venv/bin:/usr/bin"
    assert env["SCRATCH"] == f"{tmp_path / 'sim' / 'pods' / 'p' / 'tmp'}/x"
