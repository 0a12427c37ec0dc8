"""Huge request heads against a real uvicorn server in its own process, its RSS watched.

    PYTHONPATH=. python -m tests.server.head_flood            # the table in
                                                               # docs/design/header-memory.md
    PYTHONPATH=. python -m tests.server.head_flood --mib 50 --clients 4 --protocols bounded
    PYTHONPATH=. python -m tests.server.head_flood --throughput 4000   # CPU per small request

The server is the gateway app (cluster mode, its engine URL unreachable: requests that pass the
head checks get 404 or 503, which is all a flood needs) behind `server/runner.py`'s uvicorn
config (`bounded`), or the same app under uvicorn's stock httptools protocol (`httptools`) or
h11 with the 64 KiB incomplete-event limit the gateway used to set (`h11`). Each client sends,
over a raw socket, a request whose URL or one header value is `--mib` MiB long, then reads the
answer: a status code, or `closed` when the server hung up first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[2]
PROTOCOLS = ("httptools", "h11", "bounded")
PIECE = b"a" * 65536


def _serve(port: int, protocol: str, workdir: Path) -> None:
    import uvicorn

    from lorafleet.server.app import create_app
    from lorafleet.server.runner import uvicorn_config
    from lorafleet.server.settings import Settings

    settings = Settings(
        port=port,
        engine_urls=["http://127.0.0.1:9"],
        served_model_name="flood",
        database_url=f"sqlite:///{workdir}/registry.db",
        adapter_store=workdir / "store",
        cache_dir=workdir / "cache",
        log_level="error",
    )
    config = uvicorn_config(create_app(settings), settings)
    if protocol == "httptools":
        config.http = "httptools"
    elif protocol == "h11":
        config.http, config.h11_max_incomplete_event_size = "h11", 64 * 1024
    uvicorn.Server(config).run()


@dataclass
class Server:
    """A server process and the peak of its RSS while watched."""

    process: subprocess.Popen[bytes]
    port: int
    samples: list[int] = field(default_factory=list)

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)


@contextlib.contextmanager
def server(protocol: str) -> Any:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="head-flood-") as workdir:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.server.head_flood", "--serve", str(port),
             "--protocols", protocol, "--workdir", workdir],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, "the server exited"
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
            yield Server(process, port)
        finally:
            process.terminate()
            process.wait(30)


def send_huge(port: int, kind: str, size: int) -> str:
    """One request with a `size`-byte URL or header value; its status code, or `closed`."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(b"GET /v1/models?q=" if kind == "url" else b"GET /v1/models HTTP/1.1\r\n")
            if kind == "header":
                sock.sendall(b"host: x\r\nx-flood: ")
            for _ in range(size // len(PIECE)):
                sock.sendall(PIECE)
            end = b" HTTP/1.1\r\nhost: x\r\n\r\n" if kind == "url" else b"\r\n\r\n"
            sock.sendall(end)
        except OSError:
            pass  # the server hung up mid-request; it may have answered first
        try:
            head = sock.recv(65536)
        except OSError:
            return "closed"
    return head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/1.1 ") else "closed"


def flood(srv: Server, kind: str, size: int, clients: int) -> dict[str, Any]:
    """`clients` concurrent huge requests; outcomes, seconds and the server's RSS in MiB."""
    baseline = srv.rss()
    outcomes: list[str] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                srv.samples.append(srv.rss())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    workers = [
        threading.Thread(target=lambda: outcomes.append(send_huge(srv.port, kind, size)))
        for _ in range(clients)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    mib = 2**20
    return {
        "kind": kind, "outcomes": sorted(outcomes), "seconds": round(seconds, 2),
        "rss_before_mib": round(baseline / mib, 1),
        "rss_peak_mib": round(max([baseline, *srv.samples]) / mib, 1),
        "rss_after_mib": round(srv.rss() / mib, 1),
    }  # fmt: skip


def throughput(srv: Server, requests: int, clients: int) -> float:
    """The server's CPU time (user + system) per small keep-alive GET /health, in µs, with
    `clients` connections at once: unlike requests per second it hardly moves with what else
    runs on the machine."""
    import http.client

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        for _ in range(requests // clients):
            connection.request("GET", "/health", headers={"user-agent": "head-flood"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        connection.close()

    workers = [threading.Thread(target=client) for _ in range(clients)]
    cpu = psutil.Process(srv.process.pid).cpu_times
    before = cpu()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    after = cpu()
    return (after.user + after.system - before.user - before.system) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--throughput", type=int, default=0, metavar="N",
        help="instead: N small requests per protocol and round, 3 rounds: server CPU µs each",
    )  # fmt: skip
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.protocols, args.workdir)
        return
    if args.throughput:
        rates: dict[str, list[float]] = {p: [] for p in args.protocols.split(",")}
        for _ in range(3):  # rounds alternate the protocols: the machine's noise hits each
            for protocol, rate in rates.items():
                with server(protocol) as srv:
                    throughput(srv, args.throughput // 10, args.clients)  # warm-up
                    rate.append(throughput(srv, args.throughput, args.clients))
        print(json.dumps({p: sorted(round(r) for r in rate) for p, rate in rates.items()}))
        return
    for protocol in args.protocols.split(","):
        for kind in ("header", "url"):
            with server(protocol) as srv:
                row = flood(srv, kind, args.mib * 2**20, args.clients)
            print(json.dumps({"protocol": protocol, **row}), flush=True)


if __name__ == "__main__":
    main()
