"""`GET /ready` in process: ready, draining, Redis away. A stopped PostgreSQL and Redis
under a real server are in tests/e2e/test_ready_e2e.py."""

import pytest
from django.test import override_settings

from construct_core.drain import drain_begin, drain_reset
from tests.support.services import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def drained():
    drain_begin()
    yield
    drain_reset()


@override_settings(REDIS_URL=None)
def test_ready_when_the_database_answers(client):
    response = client.get("/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "ready": True}


@override_settings(REDIS_URL=None)
def test_ready_is_503_while_draining_and_health_stays_ok(client, drained):
    response = client.get("/ready")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "ready": False, "failed": ["draining"]}
    assert client.get("/health").json()["status"] == "ok"


def test_ready_names_redis_when_it_does_not_answer(client):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        response = client.get("/ready")

    assert response.status_code == 503
    assert response.json()["failed"] == ["redis"]


def test_ready_refuses_post(client):
    assert client.post("/ready").status_code == 405
