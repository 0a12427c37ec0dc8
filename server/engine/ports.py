"""Internal ports for local engines: picked free by the kernel unless the operator pins them."""

from __future__ import annotations

import contextlib
import errno
import socket


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports nothing listens on now. The sockets stay bound until all are
    picked, so one call never hands out a port twice; another process may still take one before
    the engine binds it (the supervisor then says so, see `port_in_use_message`)."""
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(_family(host), socket.SOCK_STREAM))
            sock.bind((host, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]


def port_in_use(host: str, port: int) -> bool:
    """Whether binding `host:port` fails because something holds it. SO_REUSEADDR, as vLLM's
    uvicorn sets it: a port left in TIME_WAIT by the previous engine counts as free."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def port_in_use_message(name: str, host: str, port: int) -> str:
    return (
        f"{name}: port {port} on {host} is already in use (another lorafleet serve, or an engine"
        " left running?); pin other ports with LORAFLEET_ENGINE_PORT_BASE, or leave it unset"
        " to pick free ones"
    )
