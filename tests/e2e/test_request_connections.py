"""An HTTP request's database connection ends with the request (sessions_app/connections.py).

Django's ASGI handler runs each request's view in a thread of its own; with connections
kept open (CONN_MAX_AGE None) each request left one behind, and a PostgreSQL server ran
out of client slots. A real server on PostgreSQL, counted from pg_stat_activity.
"""

import urllib.error
import urllib.request

import psycopg

from tests.support.daphne import DaphneServer, migrated_database_url
from tests.support.services import require_postgres


def connections_to(base_url, database):
    with psycopg.connect(base_url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                            (database,)).fetchone()[0]


def test_sixty_requests_leave_no_connection_behind(tmp_path):
    base_url = require_postgres()
    with migrated_database_url(tmp_path, base_url) as url:
        database = url.rsplit("/", 1)[1]
        server = DaphneServer(env={"DATABASE_URL": url, "REDIS_URL": None,
                                   "CONSTRUCT_REQUIRE_PAIRING": "true"},
                              run_migrate=False, log_path=tmp_path / "daphne.log")
        with server:
            before = connections_to(base_url, database)
            for _ in range(30):
                with urllib.request.urlopen(server.url + "/health", timeout=10) as response:
                    assert response.status == 200
                try:  # a view that reads the database (no token: 401, after the lookup)
                    urllib.request.urlopen(server.url + "/api/sessions/", timeout=10).read()
                except urllib.error.HTTPError as error:
                    assert error.code == 401
            after = connections_to(base_url, database)
        # The serving thread's own connection, and at most one request's on its way out.
        assert after <= before + 1, (before, after)
