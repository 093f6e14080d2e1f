"""Pytest fixtures for the mock LLM; import them into a conftest.py:

    from tests.support.fixtures_mock import mock_llm, clean_mock_llm  # noqa: F401
"""

import pytest

from tests.support.mock_server import running_mock_llm


@pytest.fixture(scope="session")
def mock_llm():
    """One mock LLM server for the whole run: .openai_url, .anthropic_url, .root, .requests()."""
    with running_mock_llm() as mock:
        yield mock


@pytest.fixture
def clean_mock_llm(mock_llm):
    """The session's mock LLM with an empty request log, for tests that inspect it."""
    mock_llm.clear()
    return mock_llm
