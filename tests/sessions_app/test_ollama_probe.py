"""With no provider configured, start-up looks for a local Ollama and uses it.

A real HTTP server on loopback plays Ollama (GET /api/tags); the probe is
pointed at it instead of 127.0.0.1:11434.
"""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chat.agent.providers import NOT_CONFIGURED, build_provider
from chat.turns.setup import provider_config
from construct_core.errors import AgentInitFailed
from construct_site.startup import OLLAMA_URL, ollama_models, use_local_ollama
from tests.support.services import free_port

TAGS = {"models": [{"name": "qwen2.5:0.5b", "model": "qwen2.5:0.5b", "size": 1},
                   {"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 2}]}


class FakeOllama:
    """GET /api/tags answers `body` (JSON) with `status`; every request path is kept."""

    def __init__(self, body=TAGS, status=200):
        self.requests = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake.requests.append(self.path)
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status if self.path == "/api/tags" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def unconfigured(settings):
    settings.CONSTRUCT_PROVIDER = "openai"
    settings.CONSTRUCT_MODELS = ()
    settings.CONSTRUCT_API_KEY = None
    settings.CONSTRUCT_BASE_URL = None
    settings.CONSTRUCT_MODEL = "gpt-4o-mini"
    return settings


@pytest.fixture
def ollama():
    fake = FakeOllama()
    yield fake
    fake.close()


def test_the_default_address_is_ollamas():
    assert OLLAMA_URL == "http://127.0.0.1:11434"


def test_an_answering_ollama_is_used_with_its_first_model(unconfigured, ollama, caplog):
    with caplog.at_level(logging.INFO, logger="construct_site.startup"):
        model = use_local_ollama(ollama.url)

    assert model == "qwen2.5:0.5b"
    assert ollama.requests == ["/api/tags"]
    config = provider_config()
    assert config.provider == "openai" and config.model == "qwen2.5:0.5b"
    assert config.base_url == f"{ollama.url}/v1"
    build_provider(config)  # a turn can now be set up: no AGENT_INIT_FAILED
    assert f"using the local Ollama at {ollama.url}, model qwen2.5:0.5b" in caplog.text


def test_construct_model_is_kept_when_ollama_has_it(unconfigured, ollama):
    unconfigured.CONSTRUCT_MODEL = "llama3.2:latest"
    assert use_local_ollama(ollama.url) == "llama3.2:latest"
    assert provider_config().model == "llama3.2:latest"


def test_nothing_listening_leaves_agent_init_failed(unconfigured):
    nobody = f"http://127.0.0.1:{free_port()}"

    assert use_local_ollama(nobody) is None

    assert unconfigured.CONSTRUCT_BASE_URL is None
    with pytest.raises(AgentInitFailed) as failed:
        build_provider(provider_config())
    assert str(failed.value) == NOT_CONFIGURED


@pytest.mark.parametrize("body, status", [({"models": []}, 200), (b"<html>", 200),
                                          ({"error": "x"}, 500), ({"models": "x"}, 200)])
def test_an_ollama_without_models_or_a_stranger_is_not_used(unconfigured, body, status):
    fake = FakeOllama(body=body, status=status)
    try:
        assert use_local_ollama(fake.url) is None
    finally:
        fake.close()
    assert unconfigured.CONSTRUCT_BASE_URL is None
    assert ollama_models(f"http://127.0.0.1:{free_port()}") is None


@pytest.mark.parametrize("configure", [
    {"CONSTRUCT_API_KEY": "sk-configured"},
    {"CONSTRUCT_BASE_URL": "http://127.0.0.1:9/v1"},
    {"CONSTRUCT_PROVIDER": "anthropic"},
])
def test_a_configured_provider_is_not_replaced_nor_probed(unconfigured, ollama, configure):
    for name, value in configure.items():
        setattr(unconfigured, name, value)

    assert use_local_ollama(ollama.url) is None

    assert ollama.requests == []
    assert unconfigured.CONSTRUCT_BASE_URL == configure.get("CONSTRUCT_BASE_URL")
