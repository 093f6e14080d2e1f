"""Test workers that run side by side (pytest-xdist) never share a Redis database.

Loaded with ``-p`` (pytest.ini), so it runs in each worker before Django reads
its settings. The channel layer's groups (a user's, the operators') and its
queues are per Redis database, and the e2e servers of two workers would
otherwise hear each other's operator events. Worker ``gwN`` uses database
N + 1 of the run's Redis (0 stays for runs without workers). Databases need
nothing like this: each worker's PostgreSQL test database and every e2e
server's database already have names of their own.
"""

import os
from urllib.parse import urlsplit, urlunsplit

from tests.support.services import DEFAULT_REDIS_URL
REDIS_DATABASES = 16  # redis-server's default number of databases


def worker_number():
    """N for xdist worker gwN; None outside a worker."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else None


def on_database(url, index):
    """`url` (redis:// or rediss://) naming Redis database `index`; other URLs unchanged."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return url
    return urlunsplit(parts._replace(path=f"/{index}"))


def _separate_workers():
    number = worker_number()
    if number is None:
        return
    index = number % (REDIS_DATABASES - 1) + 1
    # REDIS_URL only where the run set it: without it the pass runs the embedded defaults.
    if os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = on_database(os.environ["REDIS_URL"], index)
    test_url = os.environ.get("CONSTRUCT_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    os.environ["CONSTRUCT_TEST_REDIS_URL"] = on_database(test_url, index)


_separate_workers()
