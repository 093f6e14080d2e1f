"""schemathesis against /api/schema/: no 500 anywhere, every response as the schema says.

The REST API runs in process (WSGI) on the test database, with a paired
device's bearer token on every request, and a session to find. Requests that
break the schema are sent too (schemathesis' negative mode). Every response is
checked (no 5xx, documented status, content type, body and headers), but not
how strict the API is about requests: it accepts an empty ?state= and refuses
an empty channel event, which the request-side checks would report.
"""


import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.factories import make_device, make_message, make_session

EXAMPLES = 50


@pytest.fixture
def keep_connection():
    """Keep the test's database connection across requests, as Django's test client does.

    The WSGI handler closes old connections when a request starts and ends; on
    PostgreSQL that would close the connection holding the test's transaction.
    """
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(db, keep_connection):
    _device, token = make_device(name="schemathesis")
    session = make_session(session_id="known-session", name="Known")
    make_message(session=session, content="hello")
    return {"Authorization": f"Bearer {token}"}


def _load_schema():
    from django.core.wsgi import get_wsgi_application

    # Read at collection (the schema needs no database); schemathesis'
    # from_fixture does not work with this pytest.
    return schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


schema = _load_schema()


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_api_matches_its_schema(case, bearer):
    response = case.call(headers=bearer)
    case.validate_response(response, headers=bearer, excluded_checks=[
        checks.negative_data_rejection, checks.positive_data_acceptance])


