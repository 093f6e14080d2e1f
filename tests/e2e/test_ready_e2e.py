"""`GET /ready` of a real server whose PostgreSQL or Redis stops (private instances), and comes back."""

import json
import urllib.error
import urllib.request

import pytest

from tests.e2e.conftest import wait_until
from tests.support.services import private_postgres, private_redis

pytestmark = pytest.mark.services


def get(server, path):
    try:
        with urllib.request.urlopen(server.url + path, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_ready_goes_503_while_postgres_is_stopped(daphne_factory):
    with private_postgres() as database_url:
        env = {"DATABASE_URL": database_url, "REDIS_URL": None, "CONSTRUCT_REQUIRE_PAIRING": "false"}
        server = daphne_factory(env=env)
        assert get(server, "/ready") == (200, {"status": "ok", "ready": True})

        database_url.stop()
        status, body = get(server, "/ready")
        assert status == 503
        assert body == {"status": "unavailable", "ready": False, "failed": ["database"]}

        database_url.start()
        wait_until(lambda: get(server, "/ready")[0] == 200, timeout=20)


def test_ready_goes_503_while_redis_is_stopped(daphne_factory):
    with private_redis() as redis_url:
        server = daphne_factory(env={"REDIS_URL": redis_url, "CONSTRUCT_REQUIRE_PAIRING": "false"})
        assert get(server, "/ready")[0] == 200

        redis_url.kill()
        status, body = get(server, "/ready")
        assert status == 503
        assert body["failed"] == ["redis"]
        assert get(server, "/health")[0] == 200  # /health is liveness only

        redis_url.start()
        wait_until(lambda: get(server, "/ready")[0] == 200, timeout=20)
