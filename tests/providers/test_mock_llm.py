"""The mock LLM's own behaviour over plain HTTP: directives, formats, request log."""

import json
import re
import time

import httpx
import pytest

from chat.devserver.mock_llm import parse_script


def sse_events(body):
    """The JSON of every data line of an SSE body (bar the [DONE] marker)."""
    lines = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def chat(mock, content, **body):
    payload = {"model": "m", "stream": True, "messages": [{"role": "user", "content": content}], **body}
    response = httpx.post(mock.openai_url + "/chat/completions", json=payload, headers={"Authorization": "Bearer k-1"})
    response.raise_for_status()
    return response


def contents(events):
    return [e["choices"][0]["delta"].get("content") for e in events if e["choices"]][1:-1]


def test_parse_script_reads_directives_and_keeps_the_rest():
    script = parse_script(
        'hi [[tool:file_write {"path": "a]]", "content": "x"}]] there [[chunks=3]] [[delay_ms=20]] '
        '[[think]] [[stamp]] [[tool:shell {"command":"ls"}]]'
    )
    assert script.text == "hi there"
    assert script.tools == [("file_write", '{"path": "a]]", "content": "x"}'), ("shell", '{"command":"ls"}')]
    assert (script.chunks, script.delay, script.think, script.stamp) == (3, 0.02, True, True)
    assert (script.fail, script.hang, script.echo_prompt) == (None, False, False)


def test_models_lists_one_model(mock_llm):
    data = httpx.get(mock_llm.openai_url + "/models").json()
    assert data["object"] == "list" and data["data"][0]["object"] == "model"


def test_chunks_directive_streams_numbered_tokens(mock_llm):
    events = sse_events(chat(mock_llm, "[[chunks=5]]").text)
    assert contents(events) == ["tok1 ", "tok2 ", "tok3 ", "tok4 ", "tok5 "]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_delay_and_stamp_mark_each_chunk_when_written(mock_llm):
    started = time.time()
    events = sse_events(chat(mock_llm, "[[chunks=4]] [[delay_ms=50]] [[stamp]]").text)
    stamps = [float(re.fullmatch(r"<t:(\d+\.\d{6})> ", text).group(1)) for text in contents(events)]
    assert len(stamps) == 4
    assert started <= stamps[0] <= stamps[-1] <= time.time()
    gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    assert min(gaps) >= 0.045


def test_echo_prompt_returns_the_user_message_exactly(mock_llm):
    content = "HINT: be brief\n\n  spaced   out [[echo_prompt]] ü"
    events = sse_events(chat(mock_llm, content).text)
    assert "".join(contents(events)) == content
    assert len(contents(events)) > 3


def test_non_streaming_requests_get_a_whole_completion(mock_llm):
    response = chat(mock_llm, "plain please", stream=False)
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Echo: plain please"}
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def test_errors_have_the_openai_shape_and_echo_the_key(mock_llm):
    response = httpx.post(
        mock_llm.openai_url + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "[[fail=401]]"}]},
        headers={"Authorization": "Bearer my-secret-key-123"},
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key" and "my-secret-key-123" in error["message"]


def test_think_key_and_key_in_tool_arguments_leak_the_request_key(mock_llm):
    content = '[[think_key]] [[tool:memory_store {"content": "k=[[key]]", "tags": ["[[key]]"]}]]'
    events = sse_events(chat(mock_llm, content).text)
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    thinking = [d["reasoning_content"] for d in deltas if "reasoning_content" in d]
    assert "".join(thinking) == "Let me think about the key k-1 step by step."
    assert not any("k-1" in piece for piece in thinking)  # the key arrives in two pieces
    arguments = "".join(call["function"]["arguments"] for d in deltas for call in d.get("tool_calls", ()))
    assert json.loads(arguments) == {"content": "k=k-1", "tags": ["k-1"]}


def test_anthropic_tool_arguments_leak_the_request_key_too(mock_llm):
    response = httpx.post(
        mock_llm.anthropic_url + "/v1/messages",
        json={"model": "m", "max_tokens": 50, "messages": [
            {"role": "user", "content": '[[think_key]] [[tool:render_canvas {"content": "[[key]]"}]]'}]},
        headers={"x-api-key": "ak-2-secret"},
    )
    thinking, tool_use = response.json()["content"]
    assert thinking["thinking"] == "Let me think about the key ak-2-secret step by step."
    assert tool_use["input"] == {"content": "ak-2-secret"}


def test_anthropic_stream_has_the_messages_event_sequence(mock_llm):
    response = httpx.post(
        mock_llm.anthropic_url + "/v1/messages",
        json={"model": "m", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "[[think]] hi"}]},
    )
    names = re.findall(r"^event: (\w+)$", response.text, re.M)
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    deltas = [json.loads(line[6:])["delta"]["type"] for line in response.text.splitlines() if '"content_block_delta"' in line]
    assert deltas[0] == "thinking_delta" and "signature_delta" in deltas and deltas[-1] == "text_delta"


def test_the_request_log_masks_keys_and_can_be_cleared(clean_mock_llm):
    chat(clean_mock_llm, "logged")
    [entry] = clean_mock_llm.requests()
    assert entry["_path"] == "/v1/chat/completions"
    assert entry["messages"] == [{"role": "user", "content": "logged"}]
    assert entry["_headers"]["authorization"] == "[MASKED]"
    assert "k-1" not in json.dumps(entry)
    clean_mock_llm.clear()
    assert clean_mock_llm.requests() == []


@pytest.mark.parametrize("code", [429, 503])
def test_fail_once_fails_only_the_first_time(clean_mock_llm, code):
    payload = {"model": "m", "messages": [{"role": "user", "content": f"[[fail_once={code}]] once"}]}
    first = httpx.post(clean_mock_llm.openai_url + "/chat/completions", json=payload)
    second = httpx.post(clean_mock_llm.openai_url + "/chat/completions", json=payload)
    assert (first.status_code, second.status_code) == (code, 200)
    assert first.headers["retry-after-ms"]


def anthropic_post(mock, messages, **body):
    payload = {"model": "m", "max_tokens": 50, "messages": messages, **body}
    return httpx.post(mock.anthropic_url + "/v1/messages", json=payload)


@pytest.mark.parametrize(("name", "events"), [
    ("text", ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
              "content_block_stop", "message_delta", "message_stop"]),
    ("thinking_tool", ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                       "content_block_delta", "content_block_stop", "ping", "content_block_start",
                       "content_block_delta", "content_block_delta", "content_block_stop", "content_block_start"]
     + ["content_block_delta"] * 6 + ["content_block_stop", "message_delta", "message_stop"]),
    ("error", ["message_start", "content_block_start", "ping", "content_block_delta", "error"]),
])
def test_anthropic_replays_the_documented_sequences(mock_llm, name, events):
    response = anthropic_post(mock_llm, [{"role": "user", "content": f"[[replay={name}]]"}], stream=True)
    assert re.findall(r"^event: (\w+)$", response.text, re.M) == events
    data = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert [d["type"] for d in data] == events
    if name == "thinking_tool":
        deltas = [d["delta"]["type"] for d in data if d["type"] == "content_block_delta"]
        assert deltas[:3] == ["thinking_delta", "thinking_delta", "signature_delta"]
        assert set(deltas[5:]) == {"input_json_delta"}


@pytest.mark.parametrize(("messages", "body", "message"), [
    ([{"role": "user", "content": "hi", "reasoning_content": "x"}], {},
     "messages.0.reasoning_content: Extra inputs are not permitted"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "t"}]}], {}, "messages.1.content.0.thinking.signature: Field required"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "t", "signature": "made-up"}]}], {},
     "messages.1.content.0: Invalid `signature` in `thinking` block"),
    ([{"role": "user", "content": "hi"}], {"thinking": {"type": "enabled", "budget_tokens": 2048}},
     "`max_tokens` must be greater than `thinking.budget_tokens`."),
    ([{"role": "user", "content": "hi"}],
     {"max_tokens": 5000, "temperature": 0.5, "thinking": {"type": "enabled", "budget_tokens": 2048}},
     "`temperature` may only be set to 1 when thinking is enabled."),
])
def test_anthropic_requests_the_real_api_refuses_get_400(mock_llm, messages, body, message):
    response = anthropic_post(mock_llm, messages, **body)
    assert response.status_code == 400
    assert response.json()["error"] == {"type": "invalid_request_error", "message": message}


def test_anthropic_thinking_enabled_makes_the_mock_think_with_a_signature_it_accepts_back(mock_llm):
    thinking = {"type": "enabled", "budget_tokens": 1024}
    first = anthropic_post(mock_llm, [{"role": "user", "content": "hi"}], max_tokens=2000, thinking=thinking).json()
    block, text = first["content"]
    assert block["type"] == "thinking" and block["signature"] and text["type"] == "text"
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": first["content"]},
               {"role": "user", "content": "again"}]
    assert anthropic_post(mock_llm, history, max_tokens=2000, thinking=thinking).status_code == 200


SOME_TOOL = [{"type": "function", "function": {"name": "t", "parameters": {"type": "object"}}}]


def test_side_directives_answer_only_a_request_that_offers_no_tools(mock_llm):
    text = "Plan it [[side_reply=Party plans]] [[side_fail=503]]"
    # A turn's request offers tools: the side directives are taken out, and it answers as usual.
    assert "".join(contents(sse_events(chat(mock_llm, text, tools=SOME_TOOL).text))) == "Echo: Plan it"
    # A side call (no tools) fails with the code, or, without side_fail, gets the side reply.
    payload = {"model": "m", "stream": True, "messages": [{"role": "user", "content": text}]}
    response = httpx.post(mock_llm.openai_url + "/chat/completions", json=payload,
                          headers={"Authorization": "Bearer k-1"})
    assert response.status_code == 503
    reply = chat(mock_llm, "Plan it [[side_reply=Party plans]]").text
    assert "".join(contents(sse_events(reply))) == "Party plans"


def test_title_reply_answers_only_an_instructed_side_call(mock_llm):
    """The load benchmark's message carries [[title_reply=...]]: the gateway's title call
    (a system instruction, no tools) gets the few words; the bare relays' requests (no
    system message, no tools) and a turn's request (tools) answer as usual."""
    text = "[[chunks=3]] [[title_reply=Bench chat title]]"
    assert contents(sse_events(chat(mock_llm, text).text)) == ["tok1 ", "tok2 ", "tok3 "]
    assert contents(sse_events(chat(mock_llm, text, tools=SOME_TOOL).text)) == ["tok1 ", "tok2 ", "tok3 "]
    titled = [{"role": "system", "content": "You name conversations."}, {"role": "user", "content": text}]
    reply = chat(mock_llm, "", messages=titled).text
    assert "".join(contents(sse_events(reply))) == "Bench chat title"
    # Stamped, each of its pieces is a stamp, at the round's pace like the rest.
    stamped = [titled[0], {"role": "user", "content": "[[chunks=50]] [[stamp]] " + text}]
    assert len(contents(sse_events(chat(mock_llm, "", messages=stamped).text))) == len(
        contents(sse_events(chat(mock_llm, "", messages=titled).text)))
    # Anthropic: the instruction is the request's `system`.
    plain = anthropic_post(mock_llm, [{"role": "user", "content": text}])
    named = anthropic_post(mock_llm, [{"role": "user", "content": text}], system="You name conversations.")
    assert [b["text"] for b in plain.json()["content"]] == ["tok1 tok2 tok3 "]
    assert [b["text"] for b in named.json()["content"]] == ["Bench chat title"]
