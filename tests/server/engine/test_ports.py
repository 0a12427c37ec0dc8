from __future__ import annotations

import socket

from lorafleet.server.engine.ports import free_ports, port_in_use, port_in_use_message


def test_free_ports_are_distinct_and_free() -> None:
    ports = free_ports("127.0.0.1", 4)
    assert len(set(ports)) == 4
    assert not any(port_in_use("127.0.0.1", port) for port in ports)


def test_a_listening_port_is_in_use() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)


def test_the_message_says_what_to_do() -> None:
    message = port_in_use_message("engine-0", "127.0.0.1", 8100)
    assert "\n" not in message
    assert "port 8100 on 127.0.0.1 is already in use" in message
    assert "LORAFLEET_ENGINE_PORT_BASE" in message
