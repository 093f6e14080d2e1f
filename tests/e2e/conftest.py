"""End-to-end fixtures: the real server (daphne), the mock LLM as a process, a paired token."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.support.daphne import REPO_ROOT, server_env
from tests.support.services import free_port

FAKE_KEY = "sk-e2e-DISTINCTIVEKEY-4242424242"


class MockLLMProcess:
    """`python manage.py mock_llm --port N`, as a person would start it."""

    def __init__(self):
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "mock_llm", "--port", str(self.port)],
            cwd=REPO_ROOT, env=server_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        line = self.process.stdout.readline()
        if "listening" not in line:
            self.process.kill()
            raise RuntimeError(f"mock_llm did not start: {line}{self.process.stdout.read()}")
        self.openai_url = f"http://127.0.0.1:{self.port}/v1"

    def stop(self):
        self.process.kill()
        self.process.wait(10)


@pytest.fixture(scope="session")
def mock_llm_process():
    mock = MockLLMProcess()
    yield mock
    mock.stop()


def gateway_env(mock, **extra):
    env = {
        "CONSTRUCT_PROVIDER": "openai",
        "CONSTRUCT_BASE_URL": mock.openai_url,
        "CONSTRUCT_API_KEY": FAKE_KEY,
        "CONSTRUCT_MODEL": "mock-model",
        "CONSTRUCT_REQUIRE_PAIRING": "true",
        "OPENAI_API_KEY": None,
        "ANTHROPIC_API_KEY": None,
    }
    env.update(extra)
    return env


def pair(server) -> str:
    """A token, the way a person gets one: `manage.py pairing_code`, then POST /pair."""
    result = subprocess.run(
        [sys.executable, "manage.py", "pairing_code"], cwd=REPO_ROOT, env=server_env(server.env),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=True,
    )
    code = result.stdout.strip().splitlines()[-1]
    request = urllib.request.Request(
        server.url + "/pair", method="POST", headers={"X-Pairing-Code": code}, data=b""
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["token"]


@pytest.fixture
def gateway(daphne_factory, mock_llm_process):
    """A started server pointed at the mock LLM, and a paired token: (server, token)."""
    server = daphne_factory(env=gateway_env(mock_llm_process))
    return server, pair(server)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)
