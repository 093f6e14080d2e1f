"""Attachments over the wire: real daphne, real HTTP uploads, a real WebSocket client, and
the mock provider process in both wire formats, whose request log shows what the model got.
"""

import base64
import json

import httpx
import pytest
from websockets.asyncio.client import connect

from chat.agent.prompts import page_context_hint
from sessions_app.attachments import session_folder_name
from tests.e2e.conftest import gateway_env, pair
from tests.e2e.test_chat_e2e import frames_until, session_start, ws_url

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG).decode()
NOTES = "line one\nligne deux: é\n"
BINARY = b"\x00\x01\x02\x03\xfe\xff"
LONG = "0123456789" * 20_001  # 200,010 characters


def upload(server, token, session_id, name, data):
    response = httpx.post(f"{server.url}/api/sessions/{session_id}/attachments/",
                          files={"file": (name, data)}, headers={"Authorization": f"Bearer {token}"},
                          timeout=30)
    return response


def uploaded(server, token, session_id, name, data) -> dict:
    response = upload(server, token, session_id, name, data)
    assert response.status_code == 201, response.text
    return response.json()


class MockLog:
    """The mock provider process's request log."""

    def __init__(self, mock):
        self.root = mock.openai_url.removesuffix("/v1")

    def clear(self):
        httpx.delete(self.root + "/_mock/requests", timeout=5).raise_for_status()

    def last(self) -> dict:
        entries = [e for e in httpx.get(self.root + "/_mock/requests", timeout=5).json()
                   if e["_path"].endswith(("/chat/completions", "/messages"))]
        assert entries, "the mock provider received no request"
        return entries[-1]


def image_part(provider):
    if provider == "openai":
        return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG_B64}}
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}


def user_messages(request):
    return [m for m in request["messages"] if m["role"] == "user"]


@pytest.fixture(params=["openai", "anthropic"])
def provider_gateway(request, daphne_factory, mock_llm_process, tmp_path):
    """A gateway on the mock provider in one wire format, with a media folder of its own."""
    media = tmp_path / "media"
    server = daphne_factory(env=gateway_env(
        mock_llm_process, CONSTRUCT_PROVIDER=request.param, CONSTRUCT_MEDIA_ROOT=str(media),
    ))
    return request.param, server, pair(server), MockLog(mock_llm_process), media


async def test_the_dashboards_message_shape_end_to_end(provider_gateway):
    provider, server, token, mock, media = provider_gateway
    notes = uploaded(server, token, "att", "notes.txt", NOTES.encode())
    shot = uploaded(server, token, "att", "screen shot.png", PNG)
    blob = uploaded(server, token, "att", "blob.bin", BINARY)
    long = uploaded(server, token, "att", "long.log", LONG.encode())
    elsewhere = uploaded(server, token, "elsewhere", "other.txt", b"not this session's")
    assert (notes["mime"], shot["mime"], blob["mime"]) == ("text/plain", "image/png",
                                                           "application/octet-stream")
    mock.clear()

    async with connect(ws_url(server, session_id="att", token=token)) as ws:
        await session_start(ws)
        # As the upstream dashboard sends it: attachments beside content and page_context,
        # with an id of another session, one that never existed and junk among them.
        await ws.send(json.dumps({
            "type": "message", "content": "What do these show?", "page_context": "canvas",
            "attachments": [notes["id"], shot["id"], elsewhere["id"], "no-such-id", 42, None,
                            blob["id"], long["id"]],
        }))
        frames = await frames_until(ws)
        assert frames[-1]["type"] == "done", frames[-1]

    sent = user_messages(mock.last())[-1]["content"]
    first_text = (f"[Attached file: notes.txt ({len(NOTES.encode())} bytes, text/plain)]\n"
                  f"{NOTES}\n[End of file: notes.txt]")
    rest = (f"[Attached binary file: blob.bin ({len(BINARY)} bytes, application/octet-stream)"
            " — content not inlined]\n\n"
            f"[Attached file: long.log ({len(LONG)} bytes, text/plain)]\n{LONG[:200_000]}\n"
            "[…truncated at 200000 chars]\n[End of file: long.log]\n\n"
            + page_context_hint("canvas") + "What do these show?")
    assert sent == [{"type": "text", "text": first_text}, image_part(provider),
                    {"type": "text", "text": rest}]

    # The skipped ids are logged, and the message was kept with the three it may carry.
    output = server.output()
    assert f"attachment {elsewhere['id']!r} skipped" in output
    assert "attachment 'no-such-id' skipped" in output
    history = httpx.get(f"{server.url}/api/sessions/att/messages/",
                        headers={"Authorization": f"Bearer {token}"}, timeout=10).json()["messages"]
    assert history[0]["content"] == "What do these show?"
    assert history[0]["data"]["attachments"] == [notes, shot, blob, long]

    # Resumed: the session says it has history, and that history shows the attachments;
    # the next turn sends the model the past message's files again.
    mock.clear()
    async with connect(ws_url(server, session_id="att", token=token)) as ws:
        start = await session_start(ws)
        assert start["resumed"] is True and start["message_count"] == 2
        await ws.send(json.dumps({"type": "message", "content": "And now?"}))
        assert (await frames_until(ws))[-1]["type"] == "done"
    past, now = user_messages(mock.last())[-2:]
    assert past["content"][1] == image_part(provider)
    assert now["content"] == "And now?"
    assert (media / session_folder_name("att") / shot["id"]).read_bytes() == PNG


async def test_a_file_gone_is_marked_unavailable_and_deleting_the_session_removes_its_files(
        provider_gateway):
    provider, server, token, mock, media = provider_gateway
    auth = {"Authorization": f"Bearer {token}"}
    notes = uploaded(server, token, "gone", "notes.txt", b"soon gone")
    async with connect(ws_url(server, session_id="gone", token=token)) as ws:
        await session_start(ws)
        await ws.send(json.dumps({"type": "message", "content": "first", "attachments": [notes["id"]]}))
        assert (await frames_until(ws))[-1]["type"] == "done"
        folder = media / session_folder_name("gone")
        assert (folder / notes["id"]).is_file()

        deleted = httpx.delete(f"{server.url}/api/sessions/gone/attachments/{notes['id']}/",
                               headers=auth, timeout=10)
        assert deleted.status_code == 204
        assert not (folder / notes["id"]).exists()
        mock.clear()
        await ws.send(json.dumps({"type": "message", "content": "second", "attachments": [notes["id"]]}))
        assert (await frames_until(ws))[-1]["type"] == "done"
    first, second = user_messages(mock.last())[-2:]
    assert first["content"] == "[Attached file unavailable: notes.txt (text/plain)]\n\nfirst"
    assert second["content"] == "second"  # its id is gone: skipped, the message kept
    assert f"attachment {notes['id']!r} skipped" in server.output()

    kept = uploaded(server, token, "gone", "kept.txt", b"on disk")
    assert (folder / kept["id"]).is_file()
    assert httpx.delete(f"{server.url}/api/sessions/gone/", headers=auth, timeout=10).status_code == 204
    assert not folder.exists()


async def test_upload_answers_over_daphne(daphne_factory, mock_llm_process):
    server = daphne_factory(env=gateway_env(mock_llm_process, CONSTRUCT_MAX_ATTACHMENT_BYTES="4096"))
    token = pair(server)
    auth = {"Authorization": f"Bearer {token}"}

    over = upload(server, token, "limits", "big.bin", b"\x01" * 4097)
    assert over.status_code == 413
    assert over.headers["content-type"] == "application/json"
    assert "4096 bytes" in over.json()["error"]
    declared = upload(server, token, "limits", "huge.bin", b"\x01" * 200_000)
    assert declared.status_code == 413 and "error" in declared.json()

    empty = upload(server, token, "limits", "empty.txt", b"")
    assert empty.status_code == 400 and empty.json()["error"] == "The file is empty"
    no_file = httpx.post(f"{server.url}/api/sessions/limits/attachments/", data={"x": "1"},
                         files={"other": ("a.txt", b"a")}, headers=auth, timeout=10)
    assert no_file.status_code == 400 and "file" in no_file.json()["error"]

    page = uploaded(server, token, "limits", "evil.html", b"<script>alert(1)</script>")
    assert page["mime"] == "text/plain" and page["name"] == "evil.html"
    download = httpx.get(f"{server.url}/api/sessions/limits/attachments/{page['id']}/", headers=auth,
                         timeout=10)
    assert download.status_code == 200
    assert download.headers["content-disposition"] == 'attachment; filename="evil.html"'
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.content == b"<script>alert(1)</script>"
    listed = httpx.get(f"{server.url}/api/sessions/limits/attachments/", headers=auth, timeout=10)
    assert listed.json()["attachments"] == [page]
