"""What the server does once, as it starts serving.

Daphne (its command line and `runserver` alike) speaks no ASGI lifespan: it
installs the Twisted reactor, imports the application, listens, then runs
the reactor. So asgi.py has nothing to do at import; it asks
`on_server_start` to run `server_start` once the reactor runs. That is
before the reactor's event loop accepts the first connection, and outside
any running asyncio loop, so the start-up may use the database synchronously.
"""

import asyncio
import logging
import os
import signal
import sys
import traceback

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from construct_core import heap

logger = logging.getLogger(__name__)

# After the 1012 closes, how long the clients get to answer them before the process exits.
CLOSE_GRACE_SECONDS = 3.0


def on_server_start() -> None:
    """Have daphne listen with a backlog fit for a reconnecting crowd, and `server_start` run
    when the Twisted reactor starts running.

    Call it only where daphne has installed the reactor: importing
    `twisted.internet.reactor` anywhere else would install a default one.
    """
    from twisted.internet import reactor

    from construct_site import daphne_tuning

    # Before daphne listens, which it does before its reactor runs.
    daphne_tuning.patch_daphne_listen_backlog()
    reactor.callWhenRunning(server_start)
    # Inside the running event loop: the turn engine's work that needs no socket.
    reactor.callWhenRunning(reactor.callLater, 0, engine_start)
    # The spans still queued leave before the process does.
    reactor.addSystemEventTrigger("before", "shutdown", tracing_stop)


def tracing_stop() -> None:
    from construct_core import tracing

    tracing.tracing_stop()


def engine_start() -> None:
    """Start the turn engine's approvals watchdog (a timeout fires with no socket open)."""
    import asyncio

    from chat import turns

    _started.add(asyncio.ensure_future(turns.engine_start()))


_started: set = set()  # a reference to the start-up task while it runs


def server_start() -> None:
    """Patch daphne, check REDIS_URL, start tracing if asked, say how the shell tool runs, look
    for a local Ollama when no provider is configured, print a pairing code if needed.

    A failure stops the process with a non-zero status: Twisted would only
    log an exception from a start-up callback and serve on.
    """
    from construct_site import startup

    try:
        daphne_patch()
        daphne_tune()
        drain_on_sigterm()
        if settings.REDIS_URL:
            startup.check_redis(settings.REDIS_URL)
        startup.tracing_begin()
        startup.announce_shell()
        startup.use_local_ollama()
        if os.environ.get("CONSTRUCT_PAIRING_BANNER", "").lower() != "off":  # supervise prints one
            startup.announce_pairing()
        # Start-up's objects, the first turn's imports among them, out of every full
        # collection (construct_core.heap).
        startup.imports_warm()
        heap.freeze_enable()
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
    # Its lines name the client the trusted proxies report, not the proxy.
    daphne_compat.patch_daphne_access_log_client()
    # Refuse new sockets with 503 while draining; know the open ones, to close them with 1012.
    daphne_compat.patch_daphne_drain()


def daphne_tune() -> None:
    """Less memory per socket and less CPU per frame, with no change a client sees (see daphne_tuning)."""
    from construct_site import daphne_tuning

    # Autobahn's debug-line arguments, formatted on every frame even with debug off: lazy.
    daphne_tuning.patch_autobahn_debug_args()
    # Let an open socket's handshake objects go: about 7 KiB a socket.
    daphne_tuning.patch_daphne_handshake_release()
    # A queue per connection that holds nothing while empty: about 3 KiB a socket.
    daphne_tuning.patch_daphne_inbox()
    # A frame is sent at the end of the loop's round, not after watching the socket for room.
    daphne_tuning.patch_twisted_writes()


def drain_on_sigterm() -> None:
    """Drain on SIGTERM instead of stopping at once (Twisted's own handler)."""
    from twisted.internet import reactor

    def on_sigterm(_signum, _frame):
        reactor.callFromThread(drain_start)

    signal.signal(signal.SIGTERM, on_sigterm)


def drain_start() -> None:
    """SIGTERM: /ready answers 503, new sockets and turns are refused; the turns that run end
    (up to CONSTRUCT_DRAIN_SECONDS), then the sockets are closed with 1012 and the process exits."""
    from construct_core.drain import drain_begin

    if not drain_begin():
        logger.warning("SIGTERM again: still draining")
        return
    seconds = settings.CONSTRUCT_DRAIN_SECONDS
    logger.warning("SIGTERM: draining; running turns may finish for up to %g s", seconds)
    _started.add(asyncio.ensure_future(_drain_then_exit(seconds)))


async def _drain_then_exit(seconds: float) -> None:
    from twisted.internet import reactor

    from chat import turns
    from construct_site import daphne_compat

    try:
        cut = await turns.engine_drain(seconds=seconds)
        if cut:
            logger.warning("drain: %d turns still ran after %g s and were interrupted", cut, seconds)
        closed = daphne_compat.websockets_close(daphne_compat.CLOSE_SERVICE_RESTART)
        logger.warning("drain: closing %d sockets with 1012 (service restart), then exiting", closed)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_GRACE_SECONDS
        while daphne_compat.websockets_open() and loop.time() < deadline:
            await asyncio.sleep(0.05)
            # A socket whose handshake was under way when the drain began is open by now.
            daphne_compat.websockets_close(daphne_compat.CLOSE_SERVICE_RESTART)
    except Exception:
        logger.exception("drain failed; exiting")
    reactor.stop()


def _stop(message: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(message)
    sys.stderr.flush()
    os._exit(1)
