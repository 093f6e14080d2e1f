"""What the server does once, as it starts serving.

Daphne (its command line and `runserver` alike) speaks no ASGI lifespan: it
installs the Twisted reactor, imports the application, listens, then runs
the reactor. So asgi.py has nothing to do at import; it asks
`on_server_start` to run `server_start` once the reactor runs. That is
before the reactor's event loop accepts the first connection, and outside
any running asyncio loop, so the start-up may use the database synchronously.
"""

import os
import sys
import traceback

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def on_server_start() -> None:
    """Have `server_start` run when the Twisted reactor starts running.

    Call it only where daphne has installed the reactor: importing
    `twisted.internet.reactor` anywhere else would install a default one.
    """
    from twisted.internet import reactor

    reactor.callWhenRunning(server_start)
    # Inside the running event loop: the turn engine's work that needs no socket.
    reactor.callWhenRunning(reactor.callLater, 0, engine_start)


def engine_start() -> None:
    """Start the turn engine's approvals watchdog (a timeout fires with no socket open)."""
    import asyncio

    from chat import turns

    _started.add(asyncio.ensure_future(turns.engine_start()))


_started: set = set()  # a reference to the start-up task while it runs


def server_start() -> None:
    """Patch daphne, check REDIS_URL, say how the shell tool runs, look for a local Ollama when
    no provider is configured, print a pairing code if needed.

    A failure stops the process with a non-zero status: Twisted would only
    log an exception from a start-up callback and serve on.
    """
    from construct_site import startup

    try:
        daphne_patch()
        if settings.REDIS_URL:
            startup.check_redis(settings.REDIS_URL)
        startup.announce_shell()
        startup.use_local_ollama()
        startup.announce_pairing()
    except ImproperlyConfigured as exc:  # a setting that is wrong: its message names it
        _stop(f"Construct gateway cannot start: {exc}\n")
    except Exception:
        _stop("Construct gateway cannot start:\n" + traceback.format_exc())


def daphne_patch() -> None:
    """Close the gaps between daphne and the chat socket's contract (see daphne_compat)."""
    from construct_site import daphne_compat

    # Close with 1011; let frames past our own limit reach us, to answer
    # MESSAGE_TOO_LARGE; redact ?token= in the access log, which bypasses logging.
    daphne_compat.patch_daphne_close_codes()
    daphne_compat.patch_daphne_message_limit(settings.CONSTRUCT_MAX_FRAME_BYTES)
    daphne_compat.patch_daphne_access_log()


def _stop(message: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(message)
    sys.stderr.flush()
    os._exit(1)
