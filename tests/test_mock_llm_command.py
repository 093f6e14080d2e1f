"""`python manage.py mock_llm` as a user runs it: a subprocess on a real port."""

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.services import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def mock_llm_process():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "mock_llm", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        assert line == f"mock_llm listening on http://127.0.0.1:{port}/v1", (line, process.poll())
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def test_mock_llm_command_streams_openai_sse(mock_llm_process):
    body = {
        "model": "mock",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "[[chunks=3]] go"}],
    }
    with httpx.stream("POST", mock_llm_process + "/chat/completions", json=body, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = "".join(response.iter_text())

    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert all(event.startswith("data: {") for event in events[:-2])
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    texts = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert texts == ["tok1 ", "tok2 ", "tok3 "]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks[-1]["usage"]["total_tokens"] == chunks[-1]["usage"]["prompt_tokens"] + 3


def test_mock_llm_command_exits_promptly_on_sigterm():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "mock_llm", "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout.readline().startswith("mock_llm listening on ")
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 200
        started = time.monotonic()
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert time.monotonic() - started < 5.0
    assert "Traceback" not in stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
