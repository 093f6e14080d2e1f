"""Free TCP ports on 127.0.0.1 for the servers tests and benchmarks start (plain Python).

Ports are chosen below the kernel's ephemeral range. A test or benchmark
polls a server's port before the server listens; were the port one the
kernel also hands out as a source port, a poll could be given that very
port and connect to itself (TCP's simultaneous open), reading its own
request back as the answer ("BadStatusLine: GET /health HTTP/1.1") and
holding the port the server is about to bind.
"""

import random
import socket

LOWEST = 20000


def ephemeral_ports():
    """The kernel's range of ports for outgoing connections, (low, high)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            low, high = (int(part) for part in ports.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port():
    """A port below the ephemeral range that was free a moment ago."""
    return consecutive_free_ports(1)


def consecutive_free_ports(count):
    """The first of `count` consecutive ports below the ephemeral range, all free a moment ago."""
    high = min(ephemeral_ports()[0], 65536) - count
    if high - LOWEST < 1000:  # an unusual range: let the kernel choose
        return _kernel_chosen(count)
    chooser = random.SystemRandom()
    for _ in range(200):
        base = chooser.randint(LOWEST, high)
        if all(_bindable(port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports between {LOWEST} and {high + count - 1}")


def _kernel_chosen(count):
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            base = sock.getsockname()[1]
        if all(_bindable(port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports")
