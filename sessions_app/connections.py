"""An HTTP request's database connections end with the request.

The settings keep connections open (CONN_MAX_AGE None): the one thread Channels
runs the sockets' database work on reuses its connection for every call. Django's
ASGI handler, though, runs each HTTP request's view in a thread of its own that
ends with the request; a connection kept open there is never used again, and with
PostgreSQL it held a server slot until the garbage collector happened to free it
(60 requests, 60 connections: the server's limit of clients was reached under a
test run's load, and requests failed with "too many clients already"). So at each
request's end its thread's connections are closed, as Django does when connections
are not kept. One inside a transaction (the tests' client) is left alone; Django
does not close an in-memory SQLite database either.
"""

from django.core.signals import request_finished
from django.db import connections


def _request_connections_close(**kwargs) -> None:
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


def connect_signals() -> None:
    request_finished.connect(_request_connections_close, dispatch_uid="request_connections_close")
