"""The chat socket's fixtures (a gateway on the loopback mock LLM, a paired token), reused here."""

import pytest

from tests.chat.conftest import fresh_channel_layer, gateway, token  # noqa: F401  (fixtures)
from tests.e2e.conftest import mock_llm_process  # noqa: F401  (a fixture)
from tests.support.fixtures_mock import mock_llm  # noqa: F401  (a fixture)


@pytest.fixture
def fuzz_gateway(gateway):  # noqa: F811
    """The gateway with the per-client limits off: those have their own tests."""
    gateway.CONSTRUCT_MESSAGE_RATE = None
    gateway.CONSTRUCT_SOCKET_RATE = None
    gateway.CONSTRUCT_MAX_SOCKETS_PER_TOKEN = 0
    return gateway
