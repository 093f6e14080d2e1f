"""The chat socket's fixtures (a gateway on the loopback mock LLM, a paired token), reused here."""

from tests.chat.conftest import fresh_channel_layer, gateway, token  # noqa: F401  (fixtures)
from tests.support.fixtures_mock import clean_mock_llm, mock_llm  # noqa: F401  (fixtures)
from tests.e2e.conftest import mock_llm_process  # noqa: E402,F401  (a fixture)
