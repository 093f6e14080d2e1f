"""Gaps between daphne and the gateway's contract, closed as the server starts.

1. Close codes. Daphne turns an ASGI ``websocket.close`` into autobahn's
   ``sendClose(code)``. ``sendClose`` is autobahn's *application* API and,
   following the IANA registry's rules for applications, only accepts 1000
   and 3000-4999: a close with 1011 ("internal error") raises inside daphne,
   the application dies with a logged traceback, and about a second later
   daphne's crash handler closes the socket with 1011 whatever code was asked
   for (a 1008 arrives as 1011). The chat socket must close with 1011 when
   the agent cannot start, so the codes a server itself is meant to send go
   straight to ``sendCloseFrame``, the lower-level call autobahn uses for its
   own protocol-level closes. Every other code keeps autobahn's checked path,
   so a bad code from the application still fails loudly.

2. Frame size. Daphne caps a WebSocket message at 1 MiB (its CLI default)
   and autobahn drops the connection above it. The contract wants a frame
   over CONSTRUCT_MAX_FRAME_BYTES answered with ``MESSAGE_TOO_LARGE`` on a
   socket that stays open, so the application must see such frames: the
   transport limit is raised to a multiple of the application's limit. Past
   that, autobahn still closes with 1009, which bounds memory per socket.
   Autobahn applies the same limit to what the server sends, and raises inside
   daphne for a larger message (a long session's `history` frame): the limit
   bounds what a client sends, so the server's own messages are sent whole.

3. The access log. Daphne writes it straight to a stream, not through
   logging, so the RedactingFilter never sees those lines, and an HTTP
   request line keeps its query string (a ``?token=``). Behind a proxy it
   names the proxy: daphne believes ``X-Forwarded-For`` from every peer or
   from none (``--proxy-headers``). Its line names the client as the gateway
   sees it instead: the ``X-Forwarded-For`` client when the peer is one of
   CONSTRUCT_TRUSTED_PROXIES, else the peer (sessions_app.clients). The
   application's scope keeps the peer: the gateway applies that rule itself.

4. Draining. On SIGTERM the process drains (construct_core.drain): a new
   socket is refused at the handshake with HTTP 503, before any application
   runs, and once the running turns ended the open sockets are closed with
   1012 ("service restart": reconnect now), straight from the transport.

5. Cost per frame. Autobahn formats the arguments of a debug line on every frame it
   sends and every read it gets (``hltype``/``hlval``: introspection and terminal
   colours, about 4 us a frame), even with debug logging off, when the line itself is
   dropped. Those two helpers become the identity: a debug line, when on, shows the
   plain values.

6. Memory per open socket. Once a socket is open, what only its handshake needed is let
   go: the HTTP request daphne upgraded (Twisted's channel stays registered as the
   transport's producer, and keeps the request, its headers and body, for the socket's
   life; once upgraded its pause and resume do nothing, as its request never finishes),
   autobahn's copies of the handshake (the request's bytes, its headers, the response), and
   the request autobahn parsed, of which daphne reads only the path afterwards.

7. The queue of each connection. Daphne hands each connection's application an
   ``asyncio.Queue``: four deques, about 3 KiB held for the socket's life, to pass a few
   messages (the connect, the client's frames, the disconnect) to one reader. An ``Inbox``
   does the same with no deque until a message waits.

8. The listen backlog. Daphne listens with Twisted's default backlog of 50 connections
   waiting to be accepted. When hundreds of clients connect at once (every page of a
   restarted process reconnecting) the kernel drops the rest of their SYNs, and each such
   client retries after 1, 3, 7 or 15 s. A TCP or UNIX endpoint without a ``backlog`` of its
   own gets LISTEN_BACKLOG (the kernel still caps it at ``net.core.somaxconn``).

9. Writes. Twisted buffers every write, asks the event loop to watch the socket for
   room, and sends once the loop says there is: two ``epoll_ctl`` calls, a handle and a
   dispatch per frame, for a socket that nearly always has room. Here a TCP connection's
   write is sent at the end of the loop's current round instead (every connection written
   to in the round, in one pass, each with all it was given), and the socket is watched
   only when the kernel did not take it all.

Every function is idempotent; construct_site.serving calls them as the
server starts.
"""

import asyncio
import collections
import functools
import weakref

from construct_core.drain import draining
from construct_core.redaction import redact

# RFC 6455 section 7.4.1 codes that an endpoint (here the server) may send
# itself: going away, policy violation, internal error, try again later; and
# IANA's 1012, service restart.
SERVER_CLOSE_CODES = frozenset({1001, 1008, 1011, 1012, 1013})
CLOSE_SERVICE_RESTART = 1012

# How far past the application's frame limit the transport still delivers a
# frame, so that the application can answer it with an error frame.
TRANSPORT_HEADROOM = 4

_MARKER = "_construct_patched"

# Connections the kernel keeps waiting for the accept (see 8. above).
LISTEN_BACKLOG = 1024


def _websocket_protocol():
    # daphne.server installs the asyncio Twisted reactor on import; import it
    # before anything else from Twisted, as daphne's own AppConfig does.
    import daphne.server  # noqa: F401
    from daphne.ws_protocol import WebSocketProtocol

    return WebSocketProtocol


def patch_daphne_close_codes():
    """Make daphne's ``WebSocketProtocol.serverClose`` send the RFC 6455 server codes."""
    protocol = _websocket_protocol()
    original = protocol.serverClose
    if getattr(original, _MARKER, False):
        return

    def serverClose(self, code=None):
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code=code)

    setattr(serverClose, _MARKER, True)
    serverClose.__doc__ = original.__doc__
    protocol.serverClose = serverClose


def patch_daphne_message_limit(max_frame_bytes, headroom=TRANSPORT_HEADROOM):
    """Let daphne deliver frames up to ``headroom`` times the application's limit.

    A larger limit given to daphne on its command line is kept. Calling
    again replaces the limit.
    """
    protocol = _websocket_protocol()
    protocol._construct_transport_limit = max_frame_bytes * headroom
    original = protocol.onConnect
    if getattr(original, _MARKER, False):
        return

    def onConnect(self, request):
        # Autobahn copied the factory's limits onto this connection when the
        # TCP connection was made; frames are only read after this handshake.
        limit = type(self)._construct_transport_limit
        for name in ("maxMessagePayloadSize", "maxFramePayloadSize"):
            if 0 < getattr(self, name) < limit:  # 0 means unlimited
                setattr(self, name, limit)
        return original(self, request)

    setattr(onConnect, _MARKER, True)
    onConnect.__doc__ = original.__doc__
    protocol.onConnect = onConnect

    original_send = protocol.serverSend

    def serverSend(self, content, binary=False):
        # The limit is the client's: autobahn would refuse the server's own larger message.
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            original_send(self, content, binary)
        finally:
            self.maxMessagePayloadSize = limit

    serverSend.__doc__ = original_send.__doc__
    protocol.serverSend = serverSend


def patch_daphne_access_log() -> None:
    """Redact secrets (a ``?token=``) from daphne's access log lines."""
    from daphne.access import AccessLogGenerator

    original = AccessLogGenerator.write_entry
    if getattr(original, _MARKER, False):
        return

    def write_entry(self, host, date, request, *args, **kwargs):
        return original(self, host, date, redact(request), *args, **kwargs)

    setattr(write_entry, _MARKER, True)
    write_entry.__doc__ = original.__doc__
    AccessLogGenerator.write_entry = write_entry


_CLIENT_MARKER = "_construct_log_client"


def patch_daphne_access_log_client() -> None:
    """Name in daphne's access lines the client the trusted proxies report, not the proxy."""
    from daphne.http_protocol import WebRequest

    protocol = _websocket_protocol()
    original_process = WebRequest.process
    if getattr(original_process, _CLIENT_MARKER, False):
        return

    def process(self):
        result = original_process(self)
        # The application's scope is made by now, with the peer: only the log line changes.
        forwarded = self.requestHeaders.getRawHeaders(b"x-forwarded-for")
        if forwarded and self.client_addr:
            self.client_addr = _logged_client(self.client_addr, forwarded)
        return result

    original_connect = protocol.onConnect

    def onConnect(self, request):
        result = original_connect(self, request)
        forwarded = [value for name, value in getattr(self, "clean_headers", ())
                     if name == b"x-forwarded-for"]
        if forwarded and self.client_addr:
            self.client_addr = _logged_client(self.client_addr, forwarded)
        return result

    for patched, original in ((process, original_process), (onConnect, original_connect)):
        setattr(patched, _CLIENT_MARKER, True)
        patched.__doc__ = original.__doc__
    WebRequest.process = process
    protocol.onConnect = onConnect


def _logged_client(peer: list, forwarded: list[bytes]) -> list:
    """daphne's [host, port] of a request for its access line: the client's when a trusted
    proxy forwarded it (port 0, as daphne's own proxy headers give), else the peer's."""
    from sessions_app.clients import client_address

    client = client_address(remote_addr=str(peer[0]),
                            forwarded_for=", ".join(value.decode("latin-1") for value in forwarded))
    return peer if client == str(peer[0]) else [client, 0]


_DRAIN_MARKER = "_construct_drain"
_sockets: "weakref.WeakSet" = weakref.WeakSet()


def patch_daphne_drain() -> None:
    """Refuse new sockets with HTTP 503 while the process drains; keep track of the others."""
    from autobahn.websocket.types import ConnectionDeny

    protocol = _websocket_protocol()
    original = protocol.onConnect
    if getattr(original, _DRAIN_MARKER, False):
        return

    def onConnect(self, request):
        if draining():
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, "Service restarting")
        _sockets.add(self)
        return original(self, request)

    setattr(onConnect, _DRAIN_MARKER, True)
    onConnect.__doc__ = original.__doc__
    protocol.onConnect = onConnect


_RELEASE_MARKER = "_construct_release"

# What autobahn keeps of a server handshake, read by nothing once the socket is open.
_HANDSHAKE_ATTRIBUTES = ("http_headers", "http_request_data", "http_response_data", "http_status_line",
                         "http_request_uri", "http_request_path", "http_request_params", "http_request_host")


class OpenedRequest:
    """What daphne reads of an open socket's handshake request: its path (for its log lines)."""

    __slots__ = ("path",)

    def __init__(self, path: str):
        self.path = path


def patch_daphne_handshake_release() -> None:
    """Let an open socket's handshake objects go (see 6. above)."""
    protocol = _websocket_protocol()
    original = protocol.onOpen
    if getattr(original, _RELEASE_MARKER, False):
        return

    def onOpen(self):
        original(self)
        handshake_release(self)

    setattr(onOpen, _RELEASE_MARKER, True)
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
    """Daphne's ``Server.create_application`` with an ``Inbox`` for its queue (see 7. above)."""
    _websocket_protocol()
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
    """Daphne's server listens with LISTEN_BACKLOG (see 8. above). Call it before the server
    runs: as the application is imported, not once the reactor runs."""
    _websocket_protocol()
    from daphne import server

    if getattr(server.serverFromString, _MARKER, False):
        return
    original = server.serverFromString

    def serverFromString(reactor, description):
        return original(reactor, endpoint_with_backlog(str(description)))

    setattr(serverFromString, _MARKER, True)
    server.serverFromString = serverFromString


def patch_twisted_writes() -> None:
    """Send a TCP connection's writes at the end of the loop's round (see 9. above)."""
    _websocket_protocol()
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
                self._asyncioEventloop.call_soon(_writes_send, self)

    def removeWriter(self, writer):
        pending = self.__dict__.get("_construct_writes")
        if pending:
            pending.pop(writer, None)
        return remove_writer(self, writer)

    for patched in (addWriter, removeWriter):
        setattr(patched, _MARKER, True)
    reactor_class.addWriter, reactor_class.removeWriter = addWriter, removeWriter
    reactor_class._construct_add_writer = add_writer


def _writes_send(reactor) -> None:
    """Send what the connections written to in this round hold; watch those the kernel did
    not take it all from, as Twisted would have from the start."""
    pending, reactor._construct_writes = reactor._construct_writes, {}
    for writer in pending:
        if not writer.connected:
            continue
        # Twisted's own dispatch: doWrite, and a failure or a finished close ends the connection.
        reactor._readOrWrite(writer, False)
        if writer.connected and (len(writer.dataBuffer) > writer.offset or writer._tempDataLen):
            reactor._construct_add_writer(writer)


def websockets_open() -> int:
    """How many sockets are open (or still opening)."""
    protocol = _websocket_protocol()
    return sum(1 for sock in list(_sockets)
               if sock.state in (protocol.STATE_OPEN, protocol.STATE_CONNECTING))


def websockets_close(code: int = CLOSE_SERVICE_RESTART) -> int:
    """Start the closing handshake of every open socket with `code`; how many."""
    protocol = _websocket_protocol()
    closed = 0
    for sock in list(_sockets):
        if sock.state == protocol.STATE_OPEN:
            sock.serverClose(code=code)
            closed += 1
    return closed


def _plain(value, **_colours):
    """An argument of an autobahn debug line as it is: no introspection, no terminal colours."""
    return value


def patch_autobahn_debug_args() -> None:
    """Make autobahn's per-frame debug arguments (``hltype``, ``hlval``) cost one call."""
    _websocket_protocol()
    from autobahn.twisted import websocket as twisted_websocket
    from autobahn.websocket import protocol as websocket_protocol

    for module in (websocket_protocol, twisted_websocket):
        for name in ("hltype", "hlval"):
            if hasattr(module, name):
                setattr(module, name, _plain)
