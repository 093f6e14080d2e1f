from tests.support.fixtures_mock import clean_mock_llm, mock_llm  # noqa: F401
