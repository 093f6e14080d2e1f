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

Every function is idempotent; construct_site.serving calls them as the
server starts.
"""

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


def websocket_protocol():
    # daphne.server installs the asyncio Twisted reactor on import; import it
    # before anything else from Twisted, as daphne's own AppConfig does.
    import daphne.server  # noqa: F401
    from daphne.ws_protocol import WebSocketProtocol

    return WebSocketProtocol


def patch_daphne_close_codes():
    """Make daphne's ``WebSocketProtocol.serverClose`` send the RFC 6455 server codes."""
    protocol = websocket_protocol()
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
    protocol = websocket_protocol()
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

    protocol = websocket_protocol()
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

    protocol = websocket_protocol()
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


def websockets_open() -> int:
    """How many sockets are open (or still opening)."""
    protocol = websocket_protocol()
    return sum(1 for sock in list(_sockets)
               if sock.state in (protocol.STATE_OPEN, protocol.STATE_CONNECTING))


def websockets_close(code: int = CLOSE_SERVICE_RESTART) -> int:
    """Start the closing handshake of every open socket with `code`; how many."""
    protocol = websocket_protocol()
    closed = 0
    for sock in list(_sockets):
        if sock.state == protocol.STATE_OPEN:
            sock.serverClose(code=code)
            closed += 1
    return closed
