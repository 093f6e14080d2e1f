"""The ports tests and benchmarks start servers on (tests/support/ports.py): below the kernel's
ephemeral range, so a poll of a server not yet listening cannot connect to itself."""

import socket
import sys
from pathlib import Path

from tests.support import ports

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import resume_history  # noqa: E402
import rolling_restart  # noqa: E402
import servers  # noqa: E402


def bindable(port):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_free_port_is_below_the_ephemeral_range_and_free():
    low, _high = ports.ephemeral_ports()
    for _ in range(20):
        port = ports.free_port()
        assert ports.LOWEST <= port < low
        bindable(port)


def test_consecutive_ports_are_all_free_and_below_the_range():
    low, _high = ports.ephemeral_ports()
    base = ports.consecutive_free_ports(4)
    assert ports.LOWEST <= base and base + 3 < low
    for port in range(base, base + 4):
        bindable(port)


def test_a_port_taken_is_never_given(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(ports, "LOWEST", port)
        monkeypatch.setattr(ports, "ephemeral_ports", lambda: (port + 1002, 60999))
        chosen = {ports.free_port() for _ in range(200)}
        assert port not in chosen
        assert chosen <= set(range(port + 1, port + 1002))


def test_with_no_room_below_the_range_the_kernel_chooses(monkeypatch):
    monkeypatch.setattr(ports, "ephemeral_ports", lambda: (ports.LOWEST + 10, 60999))
    base = ports.consecutive_free_ports(2)
    bindable(base)
    bindable(base + 1)


def test_the_benchmarks_take_their_ports_from_the_same_place():
    assert servers.free_port is ports.free_port
    assert resume_history.free_port is ports.free_port
    assert rolling_restart.free_port is ports.free_port
    assert rolling_restart.consecutive_free_ports is ports.consecutive_free_ports
