"""What a serving process changes in daphne, autobahn and Twisted for memory and speed.

None of it changes what a client sees; each was measured (bench/RESULTS.md).

1. Cost per frame. Autobahn formats the arguments of a debug line on every frame it
   sends and every read it gets (``hltype``/``hlval``: introspection and terminal
   colours, about 4 us a frame), even with debug logging off, when the line itself is
   dropped. Those two helpers become the identity: a debug line, when on, shows the
   plain values.

2. Memory per open socket. Once a socket is open, what only its handshake needed is let
   go: the HTTP request daphne upgraded (Twisted's channel stays registered as the
   transport's producer, and keeps the request, its headers and body, for the socket's
   life; once upgraded its pause and resume do nothing, as its request never finishes),
   autobahn's copies of the handshake (the request's bytes, its headers, the response), and
   the request autobahn parsed, of which daphne reads only the path afterwards.

3. The queue of each connection. Daphne hands each connection's application an
   ``asyncio.Queue``: four deques, about 3 KiB held for the socket's life, to pass a few
   messages (the connect, the client's frames, the disconnect) to one reader. An ``Inbox``
   does the same with no deque until a message waits.

4. The listen backlog. Daphne listens with Twisted's default backlog of 50 connections
   waiting to be accepted. When hundreds of clients connect at once (every page of a
   restarted process reconnecting) the kernel drops the rest of their SYNs, and each such
   client retries after 1, 3, 7 or 15 s. A TCP or UNIX endpoint without a ``backlog`` of its
   own gets LISTEN_BACKLOG (the kernel still caps it at ``net.core.somaxconn``).

5. Writes. Twisted buffers every write, asks the event loop to watch the socket for
   room, and sends once the loop says there is: two ``epoll_ctl`` calls, a handle and a
   dispatch per frame, for a socket that nearly always has room. Here a TCP connection's
   write is sent at the end of the loop's current round instead (every connection written
   to in the round, in one pass, each with all it was given), and the socket is watched
   only when the kernel did not take it all.

Every function is idempotent; construct_site.serving calls them as the
server starts (patch_daphne_listen_backlog before daphne listens).
"""

import asyncio
import collections
import functools

from construct_site.daphne_compat import websocket_protocol

_MARKER = "_construct_tuned"

# Connections the kernel keeps waiting for the accept (see 4. above).
LISTEN_BACKLOG = 1024

# What autobahn keeps of a server handshake, read by nothing once the socket is open.
_HANDSHAKE_ATTRIBUTES = ("http_headers", "http_request_data", "http_response_data", "http_status_line",
                         "http_request_uri", "http_request_path", "http_request_params", "http_request_host")


class OpenedRequest:
    """What daphne reads of an open socket's handshake request: its path (for its log lines)."""

    __slots__ = ("path",)

    def __init__(self, path: str):
        self.path = path


def patch_daphne_handshake_release() -> None:
    """Let an open socket's handshake objects go (see 2. above)."""
    protocol = websocket_protocol()
    original = protocol.onOpen
    if getattr(original, _MARKER, False):
        return

    def onOpen(self):
        original(self)
        handshake_release(self)

    setattr(onOpen, _MARKER, True)
    onOpen.__doc__ = original.__doc__
    protocol.onOpen = onOpen


def handshake_release(sock) -> None:
    """Drop what socket `sock` kept of its handshake; it has just opened."""
    from twisted.web.http import HTTPChannel

    transport = sock.transport
    channel = getattr(transport, "producer", None)
    if isinstance(channel, HTTPChannel):  # a plain TCP transport: daphne upgraded its request
        transport.unregisterProducer()
        channel.requests.clear()  # the request and its channel refer to each other
    for name in _HANDSHAKE_ATTRIBUTES:
        if name in sock.__dict__:
            setattr(sock, name, None)
    request = getattr(sock, "request", None)
    if request is not None and not isinstance(request, OpenedRequest):
        sock.request = OpenedRequest(request.path)


class Inbox:
    """The part of ``asyncio.Queue`` daphne and an ASGI application use (``put_nowait``,
    ``get``, ``get_nowait``, ``qsize``, ``empty``), unbounded, holding nothing while empty."""

    __slots__ = ("_items", "_getters")

    def __init__(self):
        self._items: collections.deque | None = None
        self._getters: list | None = None  # the futures of readers waiting, oldest first

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        self._wake_one()

    def get_nowait(self):
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    async def get(self):
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if self._getters is not None and getter in self._getters:
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wake_one()  # woken, then cancelled: the next reader takes it
                raise
        return self.get_nowait()

    def _wake_one(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                break
        if not getters:
            self._getters = None


def patch_daphne_inbox() -> None:
    """Daphne's ``Server.create_application`` with an ``Inbox`` for its queue (see 3. above)."""
    websocket_protocol()
    from daphne.server import Server

    if getattr(Server.create_application, _MARKER, False):
        return

    def create_application(self, protocol, scope):
        # daphne 4.2's own, but for the queue's class.
        assert "application_instance" not in self.connections[protocol]
        input_queue = Inbox()
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope, receive=input_queue.get, send=functools.partial(self.handle_reply, protocol),
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance, loop=asyncio.get_event_loop(),
        )
        return input_queue

    setattr(create_application, _MARKER, True)
    create_application.__doc__ = Server.create_application.__doc__
    Server.create_application = create_application


def endpoint_with_backlog(description: str, backlog: int = LISTEN_BACKLOG) -> str:
    """A Twisted server endpoint `description` with `backlog`, unless it names one or its
    kind takes none."""
    kind = description.split(":", 1)[0]
    if kind not in ("tcp", "tcp6", "unix") or "backlog=" in description:
        return description
    return f"{description}:backlog={backlog}"


def patch_daphne_listen_backlog() -> None:
    """Daphne's server listens with LISTEN_BACKLOG (see 4. above). Call it before the server
    runs: as the application is imported, not once the reactor runs."""
    websocket_protocol()
    from daphne import server

    if getattr(server.serverFromString, _MARKER, False):
        return
    original = server.serverFromString

    def serverFromString(reactor, description):
        return original(reactor, endpoint_with_backlog(str(description)))

    setattr(serverFromString, _MARKER, True)
    server.serverFromString = serverFromString


def patch_twisted_writes() -> None:
    """Send a TCP connection's writes at the end of the loop's round (see 5. above)."""
    websocket_protocol()
    from twisted.internet import asyncioreactor, tcp

    reactor_class = asyncioreactor.AsyncioSelectorReactor
    if getattr(reactor_class.addWriter, _MARKER, False):
        return
    add_writer, remove_writer = reactor_class.addWriter, reactor_class.removeWriter

    def addWriter(self, writer):
        if writer in self._writers or not isinstance(writer, tcp.Connection):
            return add_writer(self, writer)
        pending = self.__dict__.setdefault("_construct_writes", {})
        if writer not in pending:
            pending[writer] = None
            if len(pending) == 1:
                self._asyncioEventloop.call_soon(writes_send, self)

    def removeWriter(self, writer):
        pending = self.__dict__.get("_construct_writes")
        if pending:
            pending.pop(writer, None)
        return remove_writer(self, writer)

    def writes_send(reactor) -> None:
        """Send what the connections written to in this round hold; watch those the kernel
        did not take it all from, as Twisted would have from the start."""
        pending, reactor._construct_writes = reactor._construct_writes, {}
        for writer in pending:
            if not writer.connected:
                continue
            # Twisted's own dispatch: doWrite, and a failure or a finished close ends the connection.
            reactor._readOrWrite(writer, False)
            if writer.connected and (len(writer.dataBuffer) > writer.offset or writer._tempDataLen):
                add_writer(reactor, writer)

    for patched in (addWriter, removeWriter):
        setattr(patched, _MARKER, True)
    reactor_class.addWriter, reactor_class.removeWriter = addWriter, removeWriter


def _plain(value, **_colours):
    """An argument of an autobahn debug line as it is: no introspection, no terminal colours."""
    return value


def patch_autobahn_debug_args() -> None:
    """Make autobahn's per-frame debug arguments (``hltype``, ``hlval``) cost one call."""
    websocket_protocol()
    from autobahn.twisted import websocket as twisted_websocket
    from autobahn.websocket import protocol as autobahn_protocol

    for module in (autobahn_protocol, twisted_websocket):
        for name in ("hltype", "hlval"):
            if hasattr(module, name):
                setattr(module, name, _plain)
