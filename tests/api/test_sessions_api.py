"""GET/PATCH/DELETE /api/sessions/..., messages and export, through the real URL conf.

Every answer also passes through the schema check in conftest.py.
"""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from sessions_app import exports, selectors
from sessions_app.api.auth import AUTH_REQUIRED_MESSAGE
from sessions_app.api.serializers import MessagesOutputSerializer
from sessions_app.services import default_owner
from sessions_app.models import ChatSession, ClientMessageId, Message, UsageRecord
from tests.factories import make_device, make_message, make_session

pytestmark = pytest.mark.django_db

ODD_ID = "team.alpha:chat-1_b"


def _age(session, minutes):
    """Set a session's last activity `minutes` ago (auto_now_add ignores a value given at create)."""
    when = timezone.now() - timedelta(minutes=minutes)
    ChatSession.objects.filter(pk=session.pk).update(last_activity=when, created_at=when)


def _usage(session, cost, model="m", input_tokens=10, output_tokens=5, **fields):
    return UsageRecord.objects.create(
        session=session, user=session.user if session else default_owner(), model=model,
        input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=Decimal(cost), **fields,
    )


def _call(client, method, path):
    if method == "get":
        return client.get(path)
    return getattr(client, method)(path, {"name": "x"}, format="json")


# --- authentication --------------------------------------------------------------

ENDPOINTS = [
    ("get", "/api/sessions/"),
    ("get", f"/api/sessions/{ODD_ID}/"),
    ("patch", f"/api/sessions/{ODD_ID}/"),
    ("delete", f"/api/sessions/{ODD_ID}/"),
    ("get", f"/api/sessions/{ODD_ID}/messages/"),
    ("get", f"/api/sessions/{ODD_ID}/export/?format=md"),
    ("get", "/api/cost/"),
    ("post", "/api/channel-events/"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("credential", ["missing", "invalid", "revoked"])
def test_every_endpoint_refuses_without_a_valid_token(anonymous_client, method, path, credential):
    make_session(session_id=ODD_ID, name="kept")
    if credential == "invalid":
        anonymous_client.credentials(HTTP_AUTHORIZATION="Bearer zc_not-a-real-token")
    elif credential == "revoked":
        _, token = make_device(revoked=True)
        anonymous_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    response = _call(anonymous_client, method, path)

    assert response.status_code == 401
    assert response.json() == {"error": AUTH_REQUIRED_MESSAGE}
    assert "POST /pair" in response.json()["error"]
    # Nothing was done on the refused call.
    assert ChatSession.objects.get(pk=ODD_ID).name == "kept"


def test_a_browser_gets_json_too(anonymous_client, api):
    browser = {"HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8"}

    refused = anonymous_client.get("/api/sessions/", **browser)
    listed = api.get("/api/sessions/", **browser)

    assert refused.status_code == 401 and refused["Content-Type"] == "application/json"
    assert refused.json() == {"error": AUTH_REQUIRED_MESSAGE}
    assert listed.status_code == 200 and listed["Content-Type"] == "application/json"


def test_without_pairing_the_api_is_open(anonymous_client, settings):
    settings.CONSTRUCT_REQUIRE_PAIRING = False
    make_session(session_id="s1", message_count=1)

    response = anonymous_client.get("/api/sessions/")

    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == ["s1"]


# --- list ------------------------------------------------------------------------


def test_list_items_newest_activity_first_with_their_fields(api):
    old = make_session(session_id="old", name="Old one")
    new = make_session(session_id="new", name="New one", state=ChatSession.State.RUNNING,
                       turn_id="t-1")
    _age(old, 30)
    _age(new, 5)
    make_message(session=old, content="hi")
    _usage(new, "0.25")
    _usage(new, "0.5")

    body = api.get("/api/sessions/").json()

    assert body["count"] == 2 and body["next"] is None and body["previous"] is None
    assert [item["id"] for item in body["results"]] == ["new", "old"]
    first, second = body["results"]
    assert set(first) == {"id", "name", "state", "message_count", "chat_message_count", "created_at",
                          "last_activity", "turn_id", "cost_usd", "model"}
    assert (first["name"], first["state"], first["turn_id"], first["cost_usd"]) == (
        "New one", "running", "t-1", 0.75)
    assert (second["message_count"], second["cost_usd"], second["turn_id"]) == (1, 0.0, None)


def test_pagination_of_sixty_sessions(api):
    base = timezone.now()
    ChatSession.objects.bulk_create(ChatSession(id=f"s{n:03d}", user=default_owner(), message_count=1)
                                for n in range(60))
    for n in range(60):  # s000 is the newest
        ChatSession.objects.filter(pk=f"s{n:03d}").update(last_activity=base - timedelta(seconds=n))

    first = api.get("/api/sessions/").json()
    second = api.get(first["next"]).json()
    small = api.get("/api/sessions/?page_size=7&page=3").json()

    assert first["count"] == 60
    assert [i["id"] for i in first["results"]] == [f"s{n:03d}" for n in range(50)]
    assert [i["id"] for i in second["results"]] == [f"s{n:03d}" for n in range(50, 60)]
    assert second["next"] is None and second["previous"] is not None
    assert [i["id"] for i in small["results"]] == [f"s{n:03d}" for n in range(14, 21)]


def test_page_size_is_capped_at_200(api):
    ChatSession.objects.bulk_create(ChatSession(id=f"s{n:03d}", user=default_owner(), message_count=1)
                                for n in range(205))

    body = api.get("/api/sessions/?page_size=1000").json()

    assert body["count"] == 205
    assert len(body["results"]) == 200


def test_a_page_costs_the_same_queries_however_many_rows(api, django_assert_num_queries):
    def fill(count):
        for n in range(count):
            session = make_session()
            make_message(session=session, content="matching text")
            _usage(session, "0.01")

    fill(2)
    api.get("/api/sessions/")  # the device's last_seen write happens once, here
    with django_assert_num_queries(3) as small:  # device, count, page
        api.get("/api/sessions/?search=matching")
    fill(30)
    with django_assert_num_queries(3):
        body = api.get("/api/sessions/?search=matching").json()

    assert body["count"] == 32 and len(small.captured_queries) == 3


def test_a_page_past_the_end_is_a_json_404(api):
    make_session()

    response = api.get("/api/sessions/?page=9")

    assert response.status_code == 404
    assert "error" in response.json()


def test_filter_by_state(api):
    make_session(session_id="a", state=ChatSession.State.IDLE, message_count=1)
    make_session(session_id="b", state=ChatSession.State.ERROR, message_count=1)
    make_session(session_id="c", state=ChatSession.State.ERROR, message_count=1)

    body = api.get("/api/sessions/?state=error").json()

    assert sorted(item["id"] for item in body["results"]) == ["b", "c"]
    assert body["count"] == 2


def test_an_unknown_state_is_a_400(api):
    response = api.get("/api/sessions/?state=sleeping")

    assert response.status_code == 400
    assert response.json()["error"].startswith("state:")


def test_search_covers_names_and_message_text_once_per_session(api):
    by_name = make_session(session_id="n", name="Holiday PLANS")
    by_text = make_session(session_id="t", name="misc")
    other = make_session(session_id="o", name="other")
    for _ in range(3):  # several matching messages must not repeat the session
        make_message(session=by_text, content="our travel plans for june")
    make_message(session=other, content="nothing to see")
    _usage(by_text, "1.5")
    make_message(session=by_name, content="unrelated")

    body = api.get("/api/sessions/", {"search": "plans"}).json()

    assert sorted(item["id"] for item in body["results"]) == ["n", "t"]
    assert body["count"] == 2
    # The join behind the search must not multiply the cost either.
    assert {i["id"]: i["cost_usd"] for i in body["results"]}["t"] == 1.5


def test_search_and_state_combine(api):
    make_session(session_id="a", name="report", state=ChatSession.State.IDLE, message_count=1)
    make_session(session_id="b", name="report", state=ChatSession.State.ERROR, message_count=1)

    body = api.get("/api/sessions/", {"search": "REPORT", "state": "error"}).json()

    assert [item["id"] for item in body["results"]] == ["b"]


def test_a_session_without_messages_is_not_listed_but_still_answers(api):
    used = make_session(session_id="used", name="report")
    make_message(session=used, content="a report")
    make_session(session_id="empty", name="report")  # an upload never sent, a refused first message
    make_session(session_id="starting", name="report", state=ChatSession.State.RUNNING, turn_id="t")

    listed = api.get("/api/sessions/").json()
    searched = api.get("/api/sessions/", {"search": "report"}).json()

    assert sorted(item["id"] for item in listed["results"]) == ["starting", "used"]
    assert listed["count"] == 2
    assert sorted(item["id"] for item in searched["results"]) == ["starting", "used"]
    assert api.get("/api/sessions/empty/").status_code == 200


def test_counts_name_questions_and_answers_not_tool_rows(api):
    session = make_session(session_id="tools", name="with tools")
    make_message(session=session, role=Message.Role.USER, content="list the files")
    make_message(session=session, role=Message.Role.ASSISTANT, content="",
                 data={"tool_calls": [{"id": "c1", "name": "file_list", "arguments": "{}"}]})
    make_message(session=session, role=Message.Role.TOOL, content="a.txt", data={"tool_call_id": "c1"})
    make_message(session=session, role=Message.Role.ASSISTANT, content="There is a.txt.")

    item = api.get("/api/sessions/").json()["results"][0]

    assert (item["message_count"], item["chat_message_count"]) == (4, 2)
    assert api.get("/api/sessions/tools/").json()["chat_message_count"] == 2


# --- one session -----------------------------------------------------------------


@pytest.mark.parametrize("session_id", [ODD_ID, "a", "x" * 128, "1.2.3", "a:b:c"])
def test_session_ids_with_dots_colons_dashes_underscores(api, session_id):
    make_session(session_id=session_id, name="odd")
    make_message(session=ChatSession.objects.get(pk=session_id), content="hello")

    assert api.get(f"/api/sessions/{session_id}/").json()["id"] == session_id
    assert api.get(f"/api/sessions/{session_id}/messages/").json()["session_id"] == session_id
    assert api.get(f"/api/sessions/{session_id}/export/?format=json").status_code == 200
    assert api.delete(f"/api/sessions/{session_id}/").status_code == 204


def test_get_one_session(api):
    session = make_session(session_id=ODD_ID, name="Mine")
    make_message(session=session)
    _usage(session, "0.125")

    body = api.get(f"/api/sessions/{ODD_ID}/").json()

    assert body["id"] == ODD_ID and body["name"] == "Mine" and body["state"] == "idle"
    assert body["message_count"] == 1 and body["cost_usd"] == 0.125


@pytest.mark.parametrize(("method", "suffix"), [
    ("get", ""), ("patch", ""), ("delete", ""), ("get", "messages/"), ("get", "export/"),
])
def test_unknown_session_is_a_json_404(api, method, suffix):
    response = _call(api, method, f"/api/sessions/nope/{suffix}")

    assert response.status_code == 404
    assert response.json()["error"] == "Session not found"


@pytest.mark.parametrize("path", [
    "/api/sessions/-starts-with-dash/", "/api/sessions/has%20space/", "/api/nothing-here/",
    "/api/sessions",
])
def test_other_api_paths_are_json_404s_too(path):
    _, token = make_device()

    response = Client().get(path, HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "error" in response.json()


def test_rename(api):
    make_session(session_id=ODD_ID, name="before")

    response = api.patch(f"/api/sessions/{ODD_ID}/", {"name": "  after  "}, format="json")

    assert response.status_code == 200
    assert response.json()["name"] == "after"
    assert ChatSession.objects.get(pk=ODD_ID).name == "after"


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x" * 201}, "name"), ({"name": ""}, "name"), ({"name": "   "}, "name"),
    ({"name": 12}, None), ({"name": None}, "name"),
])
def test_rename_validates_the_name(api, body, field):
    make_session(session_id="s", name="before")

    response = api.patch("/api/sessions/s/", body, format="json")

    if field is None:  # DRF coerces a number to its text: a legal name
        assert response.status_code == 200 and response.json()["name"] == "12"
        return
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{field}:")
    assert ChatSession.objects.get(pk="s").name == "before"


def test_rename_with_200_characters_is_accepted(api):
    make_session(session_id="s")

    assert api.patch("/api/sessions/s/", {"name": "y" * 200}, format="json").json()["name"] == "y" * 200


def test_patch_without_a_name_changes_nothing(api):
    make_session(session_id="s", name="same")

    response = api.patch("/api/sessions/s/", {}, format="json")

    assert response.status_code == 200 and response.json()["name"] == "same"


def test_patch_bodies_that_are_not_json(api):
    make_session(session_id="s", name="same")

    not_json = api.patch("/api/sessions/s/", "name=x", content_type="application/x-www-form-urlencoded")
    broken = api.patch("/api/sessions/s/", '{"name": ', content_type="application/json")

    assert not_json.status_code == 415 and "error" in not_json.json()
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]
    assert ChatSession.objects.get(pk="s").name == "same"


def test_a_body_over_one_mebibyte_is_a_json_413(api):
    make_session(session_id="s", name="same")
    body = json.dumps({"name": "x" * (1024 * 1024)})

    response = api.patch("/api/sessions/s/", body, content_type="application/json")

    assert response.status_code == 413
    assert "too large" in response.json()["error"]
    assert ChatSession.objects.get(pk="s").name == "same"


def test_the_api_itself_answers_an_oversized_body_with_a_json_413(api, settings):
    # Without any body-limit middleware in front: the view must not fall back
    # to Django's HTML 400 page.
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m.startswith("django.")]
    make_session(session_id="s", name="same")
    body = json.dumps({"name": "x" * (1024 * 1024)})

    response = api.patch("/api/sessions/s/", body, content_type="application/json")

    assert response.status_code == 413
    assert response.json()["error"] == "Request body too large: at most 1048576 bytes"


def test_delete_removes_the_session_and_its_messages_but_keeps_usage(api):
    session = make_session(session_id=ODD_ID)
    for n in range(3):
        make_message(session=session, content=f"m{n}")
    ClientMessageId.objects.create(session=session, client_id="c1")
    record = _usage(session, "0.3")
    keep = make_session(session_id="keep")
    make_message(session=keep)

    response = api.delete(f"/api/sessions/{ODD_ID}/")

    assert response.status_code == 204 and response.content == b""
    assert not ChatSession.objects.filter(pk=ODD_ID).exists()
    assert not Message.objects.filter(session_id=ODD_ID).exists()
    assert not ClientMessageId.objects.filter(session_id=ODD_ID).exists()
    record.refresh_from_db()
    assert record.session_id is None  # the cost still counts in /api/cost/
    assert Message.objects.filter(session_id="keep").count() == 1
    assert api.get(f"/api/sessions/{ODD_ID}/").status_code == 404


def test_delete_refuses_a_session_with_a_live_turn(api):
    make_session(session_id="busy", state=ChatSession.State.RUNNING, turn_id="t",
                 lease_expires_at=timezone.now() + timedelta(seconds=30))

    response = api.delete("/api/sessions/busy/")

    assert response.status_code == 409
    assert "stop" in response.json()["error"]
    assert ChatSession.objects.filter(pk="busy").exists()


def test_delete_takes_a_session_whose_turn_died(api):
    make_session(session_id="dead", state=ChatSession.State.RUNNING, turn_id="t",
                 lease_expires_at=timezone.now() - timedelta(seconds=1))

    assert api.delete("/api/sessions/dead/").status_code == 204
    assert not ChatSession.objects.filter(pk="dead").exists()


# --- messages --------------------------------------------------------------------


def test_messages_in_order_with_their_data(api):
    session = make_session(session_id=ODD_ID)
    # Written out of order: the answer follows seq, not insertion.
    make_message(session=session, seq=3, role="tool", content="hello\n",
                 data={"tool_call_id": "c1", "name": "shell"}, turn_id="t1")
    make_message(session=session, seq=1, role="user", content="run echo", turn_id="t1")
    make_message(session=session, seq=2, role="assistant", content="",
                 data={"tool_calls": [{"id": "c1", "name": "shell",
                                       "arguments": '{"command": "echo hello"}'}]}, turn_id="t1")
    make_message(session=session, seq=4, role="assistant", content="It printed hello.",
                 turn_id="t1")

    body = api.get(f"/api/sessions/{ODD_ID}/messages/").json()

    assert body["session_id"] == ODD_ID
    assert [(m["seq"], m["role"], m["content"]) for m in body["messages"]] == [
        (1, "user", "run echo"), (2, "assistant", ""), (3, "tool", "hello\n"),
        (4, "assistant", "It printed hello."),
    ]
    assert body["messages"][1]["data"]["tool_calls"][0]["name"] == "shell"
    assert body["messages"][2]["data"] == {"tool_call_id": "c1", "name": "shell"}
    assert all(m["turn_id"] == "t1" and m["created_at"] for m in body["messages"])


def test_messages_of_an_empty_session(api):
    make_session(session_id="empty")

    assert api.get("/api/sessions/empty/messages/").json() == {"session_id": "empty", "messages": []}


# --- export ----------------------------------------------------------------------


def _conversation(session_id=ODD_ID, name="Trip: plans/2025"):
    session = make_session(session_id=session_id, name=name)
    make_message(session=session, role="user", content="What is in notes?")
    make_message(session=session, role="assistant", content="Let me look.",
                 data={"thinking": "I should list the folder.",
                       "tool_calls": [{"id": "c1", "name": "file_list",
                                       "arguments": '{"path": "notes"}'}]})
    make_message(session=session, role="tool", content="a.txt\n```weird```\n",
                 data={"tool_call_id": "c1", "name": "file_list"})
    make_message(session=session, role="tool", content="no such file",
                 data={"tool_call_id": "c2", "name": "file_read", "is_error": True})
    make_message(session=session, role="assistant", content="You have **a.txt**.",
                 data={"stopped": True})
    return session


def test_export_markdown(api):
    _conversation()

    response = api.get(f"/api/sessions/{ODD_ID}/export/?format=md")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="construct-team.alpha_chat-1_b.md"'
    text = response.content.decode()
    assert text.startswith("# Trip: plans/2025\n")
    order = [text.index(part) for part in (
        "## User", "What is in notes?", "## Assistant", "**Thinking**", "Let me look.",
        "**Tool call** `file_list`", '"path": "notes"', "### Tool result: `file_list`",
        "a.txt", "### Tool result: `file_read` (error)", "You have **a.txt**.", "stopped",
    )]
    assert order == sorted(order)
    # A fence longer than the backtick run inside the tool output keeps it whole.
    assert "````\na.txt\n```weird```\n\n````" in text


@pytest.mark.parametrize("query", ["", "?format="])
def test_export_defaults_to_markdown(api, query):
    _conversation()

    response = api.get(f"/api/sessions/{ODD_ID}/export/{query}")

    assert response["Content-Type"].startswith("text/markdown")
    assert response["Content-Disposition"].endswith('.md"')


def test_export_json_is_the_messages_document(api):
    _conversation()

    response = api.get(f"/api/sessions/{ODD_ID}/export/?format=json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="construct-team.alpha_chat-1_b.json"'
    document = json.loads(response.content)
    assert document == api.get(f"/api/sessions/{ODD_ID}/messages/").json()
    assert len(document["messages"]) == 5


def test_the_messages_document_has_the_shape_its_serializer_documents(api):
    """exports.messages_document builds the answer by hand; its schema's serializer must agree."""
    session = _conversation()
    message = Message.objects.filter(session=session).order_by("seq").first()
    Message.objects.filter(pk=message.pk).update(created_at=message.created_at.replace(microsecond=0))

    by_serializer = MessagesOutputSerializer(
        {"session_id": session.pk, "messages": selectors.branch_messages(session_id=session.pk)}
    ).data

    assert exports.messages_document(session) == by_serializer
    assert api.get(f"/api/sessions/{ODD_ID}/messages/").content == JSONRenderer().render(by_serializer)


@pytest.mark.parametrize("session_id", ["a:b:c", "x.", "x" * 128])
def test_export_filenames_are_safe(api, session_id):
    make_session(session_id=session_id)

    disposition = api.get(f"/api/sessions/{session_id}/export/?format=md")["Content-Disposition"]

    filename = disposition.split('filename="', 1)[1].rstrip('"')
    assert filename.startswith("construct-") and filename.endswith(".md")
    assert all(c.isalnum() or c in "._-" for c in filename)
    assert len(filename) <= 100


@pytest.mark.parametrize("fmt", ["pdf", "MD", "md "])
def test_export_with_a_bad_format_is_a_json_400(api, fmt):
    make_session(session_id="s")

    response = api.get(f"/api/sessions/s/export/?format={fmt}")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"].startswith("format:")
