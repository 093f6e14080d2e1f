"""The scripted mock LLM (chat.devserver.mock_llm) on a loopback port, inside the test process.

Provider and gateway tests talk to it through the real SDKs and real HTTP, so
they exercise the wire formats, retries and disconnects, with nothing mocked.
"""

import asyncio
import contextlib
import threading
import time

import httpx

from chat.devserver.mock_llm import bound_port, make_server

START_TIMEOUT = 10.0


class MockLLM:
    """Where a running mock listens, and its request log.

    `openai_url` is the OpenAI SDK's base_url (".../v1"); `anthropic_url` is the
    Anthropic SDK's (the root: that SDK adds "/v1/messages" itself).
    """

    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.root = f"http://{host}:{port}"
        self.openai_url = self.root + "/v1"
        self.anthropic_url = self.root

    def __str__(self):
        return self.openai_url

    def requests(self, path=None):
        """The request bodies received, oldest first (at most the last 50).

        Each is the JSON body plus `_path`, `_headers` (secret values masked) and
        `_disconnected` (the client went away mid-stream). `path` filters on
        `_path`'s end, e.g. "/chat/completions" or "/messages".
        """
        entries = httpx.get(self.root + "/_mock/requests", timeout=5).json()
        if path:
            entries = [entry for entry in entries if entry["_path"].endswith(path)]
        return entries

    def last_request(self, path=None):
        entries = self.requests(path)
        assert entries, f"the mock LLM received no request{' for ' + path if path else ''}"
        return entries[-1]

    def clear(self):
        """Forget the request log and which bodies already failed once."""
        httpx.delete(self.root + "/_mock/requests", timeout=5).raise_for_status()


@contextlib.contextmanager
def running_mock_llm(host="127.0.0.1"):
    """Run the mock on a free port in a background thread; yield a MockLLM."""
    server = make_server(host, 0)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="mock-llm", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the mock LLM server did not start")
        time.sleep(0.01)
    try:
        yield MockLLM(host, bound_port(server))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
