"""Let daphne close a WebSocket with the RFC 6455 server codes.

Daphne turns an ASGI ``websocket.close`` into autobahn's ``sendClose(code)``.
``sendClose`` is autobahn's *application* API and, following the IANA
registry's rules for applications, only accepts 1000 and 3000-4999: a close
with 1011 ("internal error") raises inside daphne and the client never gets
a close frame with that code. The chat socket must close with 1011 when the
agent cannot start, so we route the codes a server itself is meant to send
straight to ``sendCloseFrame``, the lower-level call autobahn uses for its
own protocol-level closes, which writes any code. Every other code keeps
autobahn's checked path, so a bad code from the application still fails loudly.

Call ``patch_daphne_close_codes()`` once at start-up (an ``AppConfig.ready``
does); calling it again is harmless.
"""

# RFC 6455 section 7.4.1 codes that an endpoint (here the server) may send
# itself: going away, policy violation, internal error, try again later.
SERVER_CLOSE_CODES = frozenset({1001, 1008, 1011, 1013})

_MARKER = "_construct_close_codes_patched"


def patch_daphne_close_codes():
    """Make daphne's ``WebSocketProtocol.serverClose`` accept server close codes."""
    # daphne.server installs the asyncio Twisted reactor on import; import it
    # before anything else from Twisted, as daphne's own AppConfig does.
    import daphne.server  # noqa: F401
    from daphne.ws_protocol import WebSocketProtocol

    original = WebSocketProtocol.serverClose
    if getattr(original, _MARKER, False):
        return

    def serverClose(self, code=None):
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code=code)

    setattr(serverClose, _MARKER, True)
    serverClose.__doc__ = original.__doc__
    WebSocketProtocol.serverClose = serverClose
