"""Whether this process drains: it takes no new socket and starts no new turn before it exits.

One flag per process (not per event loop): a SIGTERM drains the whole
server. Set by the server's SIGTERM handler (construct_site.serving), read
by `/ready`, the socket's handshake and the turn engine.
"""

import time

_since: float | None = None


def drain_begin() -> bool:
    """Start draining now; False when the process drains already."""
    global _since
    if _since is not None:
        return False
    _since = time.monotonic()
    return True


def draining() -> bool:
    return _since is not None


def drain_reset() -> None:
    """Serve again (tests only: a real process that drains exits)."""
    global _since
    _since = None
