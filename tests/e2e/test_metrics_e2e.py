"""GET /metrics over the wire: the values after a known run of turns, and who may read them.

Real daphne, the mock LLM as a process, a real socket; the metrics read with
prometheus_client's own parser.
"""

import asyncio
import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.e2e.conftest import gateway_env, pair, wait_until
from tests.e2e.test_chat_e2e import frames_until, session_start, ws_url
from tests.e2e.test_isolation import create_user, pair_for

PRICES = json.dumps({"mock-model": {"input": 1.5, "output": 6.0}})
MODEL = "mock-model"


def fetch(server, token=None, **headers):
    """(status, body text, content type) of GET /metrics."""
    request = urllib.request.Request(server.url + "/metrics", headers=headers)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read().decode(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers["Content-Type"]


def scrape(server, token=None, **headers) -> dict:
    """The metrics as {(sample name, frozenset of labels): value}, read from loopback."""
    status, text, _type = fetch(server, token, **headers)
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_after_a_known_run_of_turns(daphne_factory, mock_llm_process, tmp_path):
    server = daphne_factory(env=gateway_env(mock_llm_process, CONSTRUCT_PRICES=PRICES,
                                            CONSTRUCT_WORKSPACE=str(tmp_path),
                                            CONSTRUCT_TOOL_APPROVAL="file_write=deny,*=auto"))
    token = pair(server)
    before = scrape(server)
    assert value(before, "construct_turns_total", outcome="done") == 0
    assert value(before, "construct_open_sockets") == 0
    chunks = 0
    usage = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}

    async with connect(ws_url(server, session_id="metrics", token=token)) as ws:
        await session_start(ws)
        # Three turns done: one with a tool call, one with a made-up tool and a denied one.
        denied = '[[tool:file_write {"path": "a.txt", "content": "x"}]]'
        for content in ("hello metrics", "[[tool:file_list {}]] look around",
                        f"[[tool:no_such_tool {{}}]] {denied} and then"):
            await ws.send(json.dumps({"type": "message", "content": content}))
            frames = await frames_until(ws)
            assert frames[-1]["type"] == "done", frames[-1]
            chunks += sum(f["type"] == "chunk" for f in frames)
            for key in usage:
                usage[key] += frames[-1]["usage"][key]
        assert [(f["name"], f["is_error"]) for f in frames if f["type"] == "tool_result"] == [
            ("no_such_tool", True), ("file_write", True)]

        # A turn that hangs after its first chunk, and a message queued behind it.
        await ws.send(json.dumps({"type": "message", "content": "[[hang]] wait here"}))
        frames = await frames_until(ws, types=("chunk",))
        chunks += 1
        await ws.send(json.dumps({"type": "message", "content": "[[fail=400]] broken"}))
        frames = await frames_until(ws, types=("operator_status",))
        assert frames[-1]["phase"] == "queued"
        during = await asyncio.to_thread(scrape, server)
        assert value(during, "construct_running_turns") == 1
        assert value(during, "construct_queued_messages") == 1
        assert value(during, "construct_open_sockets") == 1

        # Stopped; then the queued one runs and the provider refuses it.
        await ws.send(json.dumps({"type": "stop"}))
        frames = await frames_until(ws, types=("stopped",))
        chunks += sum(f["type"] == "chunk" for f in frames)
        frames = await frames_until(ws, types=("error",))
        assert frames[-1]["code"] == "PROVIDER_ERROR"
        chunks += sum(f["type"] == "chunk" for f in frames)

        # An error frame of the socket itself.
        await ws.send(json.dumps({"type": "message", "content": "   "}))
        assert (await frames_until(ws, types=("error",)))[-1]["code"] == "EMPTY_CONTENT"

        after = await asyncio.to_thread(scrape, server)

    turns = {outcome: value(after, "construct_turns_total", outcome=outcome)
             for outcome in ("done", "stopped", "error", "interrupted")}
    assert turns == {"done": 3, "stopped": 1, "error": 1, "interrupted": 0}
    assert value(after, "construct_turn_duration_seconds_count") == 5
    assert value(after, "construct_turn_duration_seconds_sum") > 0
    # The failed turn never streamed.
    assert value(after, "construct_time_to_first_chunk_seconds_count") == 4
    assert value(after, "construct_chunks_total") == chunks > 3
    assert value(after, "construct_tokens_total", direction="input", model=MODEL) == usage["input_tokens"] > 0
    assert value(after, "construct_tokens_total", direction="output", model=MODEL) == usage["output_tokens"] > 0
    assert value(after, "construct_cost_usd_total", model=MODEL) == pytest.approx(usage["cost_usd"])
    assert usage["cost_usd"] > 0
    assert value(after, "construct_errors_total", code="PROVIDER_ERROR") == 1
    assert value(after, "construct_errors_total", code="EMPTY_CONTENT") == 1
    assert value(after, "construct_tool_calls_total", tool="file_list", outcome="ok") == 1
    assert value(after, "construct_tool_calls_total", tool="unknown", outcome="error") == 1
    assert value(after, "construct_tool_calls_total", tool="file_write", outcome="denied") == 1
    assert not any(name == "construct_tool_calls_total" and ("tool", "no_such_tool") in labels
                   for name, labels in after)
    assert value(after, "construct_running_turns") == 0
    assert value(after, "construct_queued_messages") == 0
    assert value(after, "construct_open_sockets") == 1
    wait_until(lambda: value(scrape(server), "construct_open_sockets") == 0)


async def test_a_turn_whose_process_died_counts_as_interrupted(daphne_factory, mock_llm_process):
    env = gateway_env(mock_llm_process, CONSTRUCT_TURN_LEASE_SECONDS="1")
    server = daphne_factory(env=env)
    token = pair(server)
    async with connect(ws_url(server, session_id="crash", token=token)) as ws:
        await session_start(ws)
        await ws.send(json.dumps({"type": "message", "content": "[[chunks=300]] [[delay_ms=20]]"}))
        await frames_until(ws, types=("chunk",))
        server.kill()
    restarted = daphne_factory(env=env)
    assert value(scrape(restarted), "construct_turns_total", outcome="interrupted") == 0
    await asyncio.sleep(1.5)  # the dead process's lease runs out
    async with connect(ws_url(restarted, session_id="crash", token=token)) as ws:
        assert (await session_start(ws))["state"] == "interrupted"
    samples = scrape(restarted)
    assert value(samples, "construct_turns_total", outcome="interrupted") == 1
    assert value(samples, "construct_errors_total", code="AGENT_ERROR") == 1
    assert value(samples, "construct_running_turns") == 0


def test_who_may_read_the_metrics(daphne_factory, mock_llm_process):
    server = daphne_factory(env=gateway_env(mock_llm_process, CONSTRUCT_TRUSTED_PROXIES="127.0.0.1"))
    staff = pair(server)
    create_user(server, "reader")
    other = pair_for(server, "reader")
    outside = {"X-Forwarded-For": "203.0.113.5"}

    status, body, content_type = fetch(server, **outside)
    assert (status, content_type) == (401, "application/json")
    assert set(json.loads(body)) == {"error", "code"} and json.loads(body)["code"] == "AUTH_ERROR"
    assert fetch(server, other, **outside)[0] == 401
    assert fetch(server, "zc_not-a-token", **outside)[0] == 401
    status, body, content_type = fetch(server, staff, **outside)
    assert status == 200 and content_type.startswith("text/plain")
    assert "construct_turns_total" in body
    assert fetch(server)[0] == 200  # loopback itself

    listed = daphne_factory(env=gateway_env(mock_llm_process, CONSTRUCT_TRUSTED_PROXIES="127.0.0.1",
                                            CONSTRUCT_METRICS_ALLOWED="203.0.113.0/24"))
    assert fetch(listed, **outside)[0] == 200
    assert fetch(listed, **{"X-Forwarded-For": "198.51.100.7"})[0] == 401
