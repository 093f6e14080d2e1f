"""The private Redis and PostgreSQL that failure tests stop and kill.

Checked here once so that a test about reconnecting after an outage fails
for its own reason, never because its throw-away service did not start.
Likewise the fresh database every e2e server gets.
"""

import os
import sqlite3

import psycopg
import redis

from tests.support.daphne import fresh_database_url, migrate
from tests.support.services import private_postgres, private_redis


def test_private_redis_stops_and_starts_again():
    with private_redis() as url:
        client = redis.Redis.from_url(url, socket_timeout=2)
        client.set("k", "v")
        url.kill()
        url.start()
        assert client.ping()
        client.close()


def test_private_postgres_is_private_and_restartable():
    with private_postgres() as url:
        assert url.port != 5432
        with psycopg.connect(url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        url.stop()
        url.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("select current_user").fetchone() == ("postgres",)


def test_fresh_database_is_new_migratable_and_dropped(tmp_path):
    run_url = os.environ.get("DATABASE_URL", "")
    with fresh_database_url(tmp_path) as url:
        assert url != run_url
        migrate({"DATABASE_URL": url})
        if url.startswith("sqlite:///"):
            tables = sqlite3.connect(url.removeprefix("sqlite:///")).execute(
                "select name from sqlite_master where name = 'django_migrations'"
            ).fetchall()
            assert tables
        else:
            with psycopg.connect(url) as conn:
                assert conn.execute("select to_regclass('django_migrations')").fetchone()[0]
    if not url.startswith("sqlite:///"):
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(run_url) as conn:
            row = conn.execute("select 1 from pg_database where datname = %s", [name]).fetchone()
        assert row is None
