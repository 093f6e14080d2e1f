"""Helpers for the tests that run database work in several threads at once."""

import threading
import time

from django.db import OperationalError, connection


def retry_sqlite_locked(fn, attempts=500):
    """Call fn(), retrying while the SQLite test database reports a locked table.

    The SQLite test database lives in shared-cache memory, where a busy table
    fails at once instead of waiting as a file database does (see settings).
    Retrying keeps a test about our code, not that quirk; on PostgreSQL nothing
    is retried and the threads really race.
    """
    for _ in range(attempts):
        try:
            return fn()
        except OperationalError as exc:
            if connection.vendor != "sqlite" or "locked" not in str(exc):
                raise
            time.sleep(0.005)
    raise AssertionError("the SQLite test database stayed locked")


def run_in_threads(target, count, timeout=60):
    """Run target(n) for n in range(count) in threads released together; return their results.

    Each result is ("ok", value) or ("raised", exception).
    """
    barrier = threading.Barrier(count)
    results = [None] * count

    def worker(n):
        try:
            barrier.wait()
            results[n] = ("ok", retry_sqlite_locked(lambda: target(n)))
        except Exception as exc:  # reported to the test, which asserts on it
            results[n] = ("raised", exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return results
