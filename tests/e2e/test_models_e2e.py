"""Two models over the wire: real daphne started with CONSTRUCT_MODELS, a real WebSocket client,
the mock LLM process speaking both wire formats."""

import json
import urllib.request

from websockets.asyncio.client import connect

from tests.e2e.conftest import FAKE_KEY, gateway_env, pair
from tests.e2e.test_chat_e2e import frames_until, session_start, ws_url


def _get(server, token, path):
    request = urllib.request.Request(server.url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


async def test_a_session_moves_between_models_and_says_who_answered(daphne_factory, mock_llm_process):
    root = mock_llm_process.openai_url.removesuffix("/v1")
    models = [
        {"id": "e2e-gpt", "provider": "openai", "label": "E2E GPT", "base_url": mock_llm_process.openai_url},
        {"id": "e2e-claude", "provider": "anthropic", "base_url": root, "thinking": True},
    ]
    server = daphne_factory(env=gateway_env(mock_llm_process, CONSTRUCT_MODELS=json.dumps(models),
                                            CONSTRUCT_REASONING_DEFAULT="low"))
    token = pair(server)

    listed = _get(server, token, "/api/models/")
    assert json.loads(listed)["models"][1] == {"id": "e2e-claude", "label": "e2e-claude",
                                               "provider": "anthropic", "thinking": True}
    assert json.loads(listed)["reasoning_default"] == "low"
    assert root not in listed and "127.0.0.1" not in listed and FAKE_KEY not in listed

    async with connect(ws_url(server, session_id="two-models", token=token)) as ws:
        assert (await session_start(ws))["model"] == "e2e-gpt"
        await ws.send(json.dumps({"type": "message", "content": "hi", "model": "nope"}))
        refused = (await frames_until(ws, types=("error",)))[-1]
        assert refused["code"] == "MODEL_NOT_FOUND"
        await ws.send(json.dumps({"type": "message", "content": "hi", "model": "e2e-claude"}))
        done = (await frames_until(ws))[-1]
        assert done["type"] == "done" and done["model"] == "e2e-claude"
        assert set(done["usage"]) == {"input_tokens", "output_tokens", "cost_usd"}
        await ws.send(json.dumps({"type": "message", "content": "and you?", "model": "e2e-gpt"}))
        done = (await frames_until(ws))[-1]
        assert done["type"] == "done" and done["model"] == "e2e-gpt"

    messages = json.loads(_get(server, token, "/api/sessions/two-models/messages/"))["messages"]
    assert [(m["role"], m["data"].get("model")) for m in messages] == [
        ("user", None), ("assistant", "e2e-claude"), ("user", None), ("assistant", "e2e-gpt")]
    assert messages[1]["data"]["reasoning"] == "low"
