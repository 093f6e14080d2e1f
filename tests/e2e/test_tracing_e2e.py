"""OpenTelemetry traces over the wire: a real daphne exports OTLP/HTTP to a receiver in the test.

The receiver decodes what it gets with opentelemetry-proto, as a collector
would. A turn whose model calls a tool gives a turn span with two model-call
("chat") spans and one tool span under it; none of the exported bytes holds
the provider key, the device token, the message's text or the tool's arguments.
"""

import asyncio
import http.server
import json
import threading

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse,
)
from websockets.asyncio.client import connect

from tests.e2e.conftest import FAKE_KEY, gateway_env, pair, wait_until
from tests.e2e.test_chat_e2e import frames_until, session_start, ws_url

MESSAGE_MARK = "UNSHAREABLE-question-7f3a"
TOOL_MARK = "UNSHAREABLE-tool-argument-51c2"


class OTLPReceiver:
    """POST /v1/traces on a free loopback port: keeps each request's bytes and decoded spans."""

    def __init__(self):
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.paths.append(self.path)
                    receiver.bodies.append(body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[tuple[dict, object]]:
        """Every span received so far, with its resource's attributes."""
        with self.lock:
            bodies = list(self.bodies)
        found = []
        for body in bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope_spans.spans)
        return found

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def attributes(key_values) -> dict:
    """OTLP KeyValues as a dict of plain values (arrays as lists)."""
    out = {}
    for item in key_values:
        value = item.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            out[item.key] = [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
        else:
            out[item.key] = getattr(value, kind)
    return out


@pytest.fixture
def receiver():
    started = OTLPReceiver()
    yield started
    started.stop()


async def test_a_turn_with_a_tool_call_is_traced_without_secrets(daphne_factory, mock_llm_process,
                                                                  receiver, tmp_path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    server = daphne_factory(env=gateway_env(
        mock_llm_process, CONSTRUCT_WORKSPACE=str(workspace),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_SERVICE_NAME=None, OTEL_RESOURCE_ATTRIBUTES=None,
    ))
    token = pair(server)
    args = json.dumps({"path": "notes/otel.txt", "content": TOOL_MARK})
    async with connect(ws_url(server, "traced", token=token)) as ws:
        await session_start(ws)
        await ws.send(json.dumps({"type": "message",
                                  "content": f"[[tool:file_write {args}]] {MESSAGE_MARK}"}))
        frames = await frames_until(ws)
    assert frames[-1]["type"] == "done", frames
    turn_id = frames[-1]["turn_id"]
    tool_call = next(f for f in frames if f["type"] == "tool_call")
    assert (workspace / "notes" / "otel.txt").read_text() == TOOL_MARK

    def all_there():
        names = [span.name for _, span in receiver.spans()]
        return "turn" in names and names.count("chat mock-model") >= 2 and any(
            name.startswith("execute_tool") for name in names)

    await asyncio.to_thread(wait_until, all_there, 15)
    spans = receiver.spans()
    resource = spans[0][0]
    assert resource["service.name"] == "construct-gateway"
    assert set(receiver.paths) == {"/v1/traces"}

    by_name: dict[str, list] = {}
    for _, span in spans:
        by_name.setdefault(span.name, []).append(span)
    [turn] = by_name["turn"]
    calls = by_name["chat mock-model"]
    [tool] = by_name["execute_tool file_write"]
    turn_attrs = attributes(turn.attributes)
    assert turn_attrs["construct.session_id"] == "traced"
    assert turn_attrs["construct.turn_id"] == turn_id
    assert turn_attrs["construct.model"] == "mock-model"
    assert turn_attrs["construct.turn.outcome"] == "done"
    assert not turn.parent_span_id

    assert len(calls) == 2  # the round that asks for the tool, the round that answers
    for call in [*calls, tool]:
        assert call.trace_id == turn.trace_id
        assert call.parent_span_id == turn.span_id
        assert turn.start_time_unix_nano <= call.start_time_unix_nano
        assert call.end_time_unix_nano <= turn.end_time_unix_nano
    first, second = sorted(calls, key=lambda span: span.start_time_unix_nano)
    assert first.end_time_unix_nano <= tool.start_time_unix_nano
    assert tool.end_time_unix_nano <= second.start_time_unix_nano
    for call, reason in ((first, "tool_calls"), (second, "stop")):
        call_attrs = attributes(call.attributes)
        assert call_attrs["gen_ai.system"] == "openai"
        assert call_attrs["gen_ai.operation.name"] == "chat"
        assert call_attrs["gen_ai.request.model"] == "mock-model"
        assert call_attrs["gen_ai.usage.input_tokens"] > 0
        assert call_attrs["gen_ai.usage.output_tokens"] > 0
        assert call_attrs["gen_ai.response.finish_reasons"] == [reason]
        assert call_attrs["gen_ai.response.model"]
    assert frames[-1]["usage"]["input_tokens"] == sum(
        attributes(call.attributes)["gen_ai.usage.input_tokens"] for call in calls)

    tool_attrs = attributes(tool.attributes)
    assert tool_attrs == {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "file_write",
        "gen_ai.tool.call.id": tool_call["id"], "construct.tool.outcome": "ok",
    }

    exported = b"".join(receiver.bodies)
    for secret in (FAKE_KEY, token, MESSAGE_MARK, TOOL_MARK):
        assert secret.encode() not in exported


async def test_spans_still_queued_are_sent_when_the_server_stops(daphne_factory, mock_llm_process,
                                                                   receiver):
    """A batch delay of a minute: the turn's spans leave only because SIGTERM flushes them."""
    server = daphne_factory(env=gateway_env(
        mock_llm_process, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="60000",
    ))
    token = pair(server)
    async with connect(ws_url(server, "flushed", token=token)) as ws:
        await session_start(ws)
        await ws.send(json.dumps({"type": "message", "content": "hello"}))
        frames = await frames_until(ws)
    assert frames[-1]["type"] == "done"
    await asyncio.sleep(0.5)
    assert receiver.spans() == []
    await asyncio.to_thread(server.stop, 20)
    assert server.process.returncode is not None
    names = sorted(span.name for _, span in receiver.spans())
    assert names == ["chat mock-model", "turn"]


async def test_stopped_and_failed_turns(daphne_factory, mock_llm_process, receiver):
    """A stop ends the spans as stopped, not failed; a provider's refusal marks its span failed."""
    server = daphne_factory(env=gateway_env(
        mock_llm_process, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="100",
    ))
    token = pair(server)
    async with connect(ws_url(server, "stopped", token=token)) as ws:
        await session_start(ws)
        await ws.send(json.dumps({"type": "message", "content": "[[hang]] wait"}))
        await frames_until(ws, types=("chunk",))
        await ws.send(json.dumps({"type": "stop"}))
        stopped = (await frames_until(ws))[-1]
        await ws.send(json.dumps({"type": "message", "content": "[[fail=401]] refused"}))
        failed = (await frames_until(ws))[-1]
    assert (stopped["type"], failed["type"]) == ("stopped", "error")

    def turns():
        return [span for _, span in receiver.spans() if span.name == "turn"]

    await asyncio.to_thread(wait_until, lambda: len(turns()) == 2, 15)
    ends = {}
    for turn in turns():
        attrs = attributes(turn.attributes)
        [call] = [span for _, span in receiver.spans() if span.parent_span_id == turn.span_id]
        ends[attrs["construct.turn_id"]] = (attrs["construct.turn.outcome"], turn.status.code,
                                            attributes(call.attributes).get("error.type"),
                                            call.status.code)
    ok, error = 0, 2  # StatusCode UNSET and ERROR
    assert ends[stopped["turn_id"]] == ("stopped", ok, None, ok)
    assert ends[failed["turn_id"]] == ("error", error, "ProviderAuthError", error)
