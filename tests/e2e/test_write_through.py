"""Twisted's writes, sent at once on an idle connection (construct_site.daphne_compat, 6.).

A real Twisted server on Twisted's asyncio reactor (as daphne runs it), in a
process of its own, with the patch applied: a client reads everything it
writes. What must hold: every byte arrives, in order, through paced frames,
bursts, and a write far larger than the kernel takes at once; a paced frame
goes out without the reactor being asked to watch the socket; a burst still
leaves in few sends.
"""

import json
import socket
import subprocess
import sys
import textwrap

SERVER = textwrap.dedent('''
    import asyncio, json, sys
    from twisted.internet import asyncioreactor
    asyncioreactor.install(asyncio.new_event_loop())
    from twisted.internet import protocol, reactor, task
    from construct_site.daphne_compat import patch_twisted_write_through
    if sys.argv[1] == "patched":
        patch_twisted_write_through()
        patch_twisted_write_through()  # idempotent

    watched = []
    add_writer = reactor.addWriter
    def counting(descriptor):  # the socket newly watched for writing
        if descriptor not in reactor.getWriters():
            watched.append(1)
        return add_writer(descriptor)
    reactor.addWriter = counting

    def frame(n):
        return b"<%06d>" % n

    class Writer(protocol.Protocol):
        def connectionMade(self):
            self.n = 0
            task.deferLater(reactor, 0.05, self.paced)

        def paced(self, left=50):
            self.transport.write(frame(self.n)); self.n += 1
            if left > 1:
                task.deferLater(reactor, 0.005, self.paced, left - 1)
            else:
                paced_watched = len(watched)
                for _ in range(200):  # a burst: one loop turn
                    self.transport.write(frame(self.n)); self.n += 1
                self.transport.write(b"<big>" + b"x" * (8 * 1024 * 1024) + b"</big>")
                for _ in range(20):
                    self.transport.write(frame(self.n)); self.n += 1
                self.stats = {"paced_watched": paced_watched, "frames": self.n}
                task.deferLater(reactor, 0.1, self.done)

        def done(self):
            self.stats["watched"] = len(watched)
            print(json.dumps(self.stats), flush=True)
            self.transport.loseConnection()
            reactor.callLater(0.5, reactor.stop)

    factory = protocol.Factory.forProtocol(Writer)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()
''')


def _run(mode):
    server = subprocess.Popen([sys.executable, "-c", SERVER, mode], stdout=subprocess.PIPE, text=True)
    with server:
        try:
            port = int(server.stdout.readline())
            client = socket.create_connection(("127.0.0.1", port))
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            received = bytearray()
            while chunk := client.recv(1 << 20):
                received += chunk
            client.close()
            stats = json.loads(server.stdout.readline())
            server.wait(timeout=30)
        finally:
            server.kill()
    return bytes(received), stats


def _expected(frames):
    first = b"".join(b"<%06d>" % n for n in range(frames - 20))
    return first + b"<big>" + b"x" * (8 * 1024 * 1024) + b"</big>" + b"".join(
        b"<%06d>" % n for n in range(frames - 20, frames))


def test_every_byte_arrives_in_order_and_a_paced_frame_goes_out_at_once():
    received, stats = _run("patched")
    assert stats["frames"] == 270
    assert received == _expected(stats["frames"])
    # 50 paced frames: none waited for the reactor (without the patch: one watch each).
    assert stats["paced_watched"] == 0
    # The burst and the large write: the reactor sends what the kernel did not take.
    assert 1 <= stats["watched"] <= 10


def test_without_the_patch_every_write_waits_for_the_reactor():
    """The figure the patch removes, measured the same way."""
    received, stats = _run("plain")
    assert received == _expected(stats["frames"])
    assert stats["paced_watched"] == 50
