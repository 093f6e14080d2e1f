"""POST/GET/DELETE /api/sessions/{id}/attachments/..., through the real URL conf and middleware.

Every answer also passes through the schema check in conftest.py.
"""

import base64
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from sessions_app import attachments
from sessions_app.models import Attachment, ChatSession
from tests.factories import make_device, make_session, make_user

pytestmark = pytest.mark.django_db

# The smallest valid PNG: one transparent pixel.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
HTML = b"<!doctype html><script>alert(document.cookie)</script><h1>hi</h1>\n"


def _upload(api, session_id, name, data, field="file"):
    return api.post(f"/api/sessions/{session_id}/attachments/",
                    {field: SimpleUploadedFile(name, data)}, format="multipart")


def _stored(attachment_id) -> Path:
    return attachments.attachment_path(Attachment.objects.get(pk=attachment_id))


def test_upload_makes_the_session_and_keeps_the_file_under_a_random_name(api, device_and_token, media_root):
    response = _upload(api, "fresh-chat", "../../etc/notes\u202e.txt", "héllo wörld\n".encode())

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "name", "mime", "size"}
    # The name is the last component, without the bidirectional override; never a path.
    assert body["name"] == "notes.txt"
    assert body["mime"] == "text/plain"
    assert body["size"] == len("héllo wörld\n".encode())
    session = ChatSession.objects.get(pk="fresh-chat")
    assert session.user_id == device_and_token[0].user_id
    path = _stored(body["id"])
    assert path.read_bytes() == "héllo wörld\n".encode()
    assert path.name == body["id"] and "notes" not in str(path)
    assert path.is_relative_to(media_root)
    assert path.parent == attachments.session_folder("fresh-chat")


@pytest.mark.parametrize(("name", "data", "mime"), [
    ("shot.txt", PNG, "image/png"),  # the content decides, not the name
    ("page.html", HTML, "text/plain"),
    ("data.bin", b"\x00\x01\x02\xffabc", "application/octet-stream"),
    ("latin1.txt", "café".encode("latin-1"), "application/octet-stream"),
    ("doc.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "application/pdf"),
])
def test_the_type_comes_from_the_content(api, name, data, mime):
    response = _upload(api, "types", name, data)
    assert response.status_code == 201
    assert response.json()["mime"] == mime


def test_list_download_and_delete(api):
    png = _upload(api, "s1", "shot.png", PNG).json()
    page = _upload(api, "s1", "page.html", HTML).json()

    listed = api.get("/api/sessions/s1/attachments/")
    assert listed.status_code == 200
    assert listed.json() == {"session_id": "s1", "attachments": [png, page]}

    download = api.get(f"/api/sessions/s1/attachments/{page['id']}/")
    assert download.status_code == 200
    assert download["Content-Disposition"] == 'attachment; filename="page.html"'
    assert download["X-Content-Type-Options"] == "nosniff"
    assert download["Content-Type"] == "application/octet-stream"
    assert "sandbox" in download["Content-Security-Policy"]
    assert b"".join(download.streaming_content) == HTML

    assert api.delete(f"/api/sessions/s1/attachments/{png['id']}/").status_code == 204
    assert not Attachment.objects.filter(pk=png["id"]).exists()
    assert api.get(f"/api/sessions/s1/attachments/{png['id']}/").status_code == 404
    assert [a["id"] for a in api.get("/api/sessions/s1/attachments/").json()["attachments"]] == [page["id"]]


@pytest.mark.django_db(transaction=True)
def test_deleting_an_attachment_or_its_session_removes_the_files(api):
    first = _upload(api, "doomed", "a.txt", b"first").json()
    second = _upload(api, "doomed", "b.txt", b"second").json()
    first_path, second_path = _stored(first["id"]), _stored(second["id"])
    folder = attachments.session_folder("doomed")

    assert api.delete(f"/api/sessions/doomed/attachments/{first['id']}/").status_code == 204
    assert not first_path.exists() and second_path.exists()

    assert api.delete("/api/sessions/doomed/").status_code == 204
    assert not second_path.exists()
    assert not folder.exists()


def test_a_non_ascii_name_downloads_under_its_own_name(api):
    uploaded = _upload(api, "names", "résumé 2026.txt", b"cv").json()
    download = api.get(f"/api/sessions/names/attachments/{uploaded['id']}/")
    assert download["Content-Disposition"] == "attachment; filename*=utf-8''r%C3%A9sum%C3%A9%202026.txt"
    assert b"".join(download.streaming_content) == b"cv"  # read to the end: the file is closed


def test_no_file_or_an_empty_one_is_400(api):
    missing = api.post("/api/sessions/s/attachments/", {"other": "x"}, format="multipart")
    assert missing.status_code == 400
    assert "file" in missing.json()["error"]
    wrong_field = _upload(api, "s", "a.txt", b"data", field="upload")
    assert wrong_field.status_code == 400
    empty = _upload(api, "s", "empty.txt", b"")
    assert empty.status_code == 400
    assert empty.json()["error"] == "The file is empty"
    assert not Attachment.objects.exists()


def test_over_the_limit_is_413_and_nothing_is_kept(api, settings, media_root):
    settings.CONSTRUCT_MAX_ATTACHMENT_BYTES = 1000
    at_limit = _upload(api, "big", "ok.bin", b"\x01" * 1000)
    assert at_limit.status_code == 201

    # Counted while it streams: the body is within the middleware's allowance.
    over = _upload(api, "big", "big.bin", b"\x01" * 1001)
    assert over.status_code == 413
    assert "1000 bytes" in over.json()["error"]

    # Declared too large: refused before anything reads it.
    huge = _upload(api, "big", "huge.bin", b"\x01" * 200_000)
    assert huge.status_code == 413
    assert "error" in huge.json()

    assert Attachment.objects.count() == 1
    assert len(list(attachments.session_folder("big").iterdir())) == 1


def test_other_endpoints_keep_their_1_mib_body_limit(api):
    response = api.post("/api/channel-events/", {"big": "x" * (1024 * 1024 + 10)}, format="json")
    assert response.status_code == 413
    # The same size as an upload passes the middleware (and is a fine file).
    upload = _upload(api, "roomy", "big.txt", b"y" * (1024 * 1024 + 10))
    assert upload.status_code == 201


def test_another_users_session_is_404_everywhere_and_nothing_is_stored(api, anonymous_client):
    stranger = make_user()
    theirs = make_session(session_id="their-chat", user=stranger)
    _device, their_token = make_device(user=stranger)
    anonymous_client.credentials(HTTP_AUTHORIZATION=f"Bearer {their_token}")
    their_file = _upload(anonymous_client, theirs.pk, "secret.txt", b"theirs").json()

    assert _upload(api, "their-chat", "mine.txt", b"mine").status_code == 404
    assert api.get("/api/sessions/their-chat/attachments/").status_code == 404
    assert api.get(f"/api/sessions/their-chat/attachments/{their_file['id']}/").status_code == 404
    assert api.delete(f"/api/sessions/their-chat/attachments/{their_file['id']}/").status_code == 404
    assert list(Attachment.objects.values_list("id", flat=True)) == [their_file["id"]]
    assert ChatSession.objects.get(pk="their-chat").user_id == stranger.pk

    # An attachment id of another session, under one's own session, is not found either.
    _upload(api, "mine", "mine.txt", b"mine")
    assert api.get(f"/api/sessions/mine/attachments/{their_file['id']}/").status_code == 404


def test_staff_may_read_everyones_with_user_all(api, device_and_token, anonymous_client):
    stranger = make_user()
    make_session(session_id="their-chat", user=stranger)
    _device, their_token = make_device(user=stranger)
    anonymous_client.credentials(HTTP_AUTHORIZATION=f"Bearer {their_token}")
    their_file = _upload(anonymous_client, "their-chat", "t.txt", b"theirs").json()
    assert device_and_token[0].user.is_staff  # the default owner

    listed = api.get("/api/sessions/their-chat/attachments/?user=all")
    assert [a["id"] for a in listed.json()["attachments"]] == [their_file["id"]]
    # Never to write: a staff user's delete of someone else's attachment is a 404.
    assert api.delete(f"/api/sessions/their-chat/attachments/{their_file['id']}/?user=all").status_code == 404


def test_without_a_token_nothing_is_stored(anonymous_client):
    response = _upload(anonymous_client, "s", "a.txt", b"data")
    assert response.status_code == 401
    assert not Attachment.objects.exists() and not ChatSession.objects.filter(pk="s").exists()


def test_a_file_gone_from_disk_downloads_as_404(api):
    uploaded = _upload(api, "gone", "a.txt", b"data").json()
    _stored(uploaded["id"]).unlink()
    response = api.get(f"/api/sessions/gone/attachments/{uploaded['id']}/")
    assert response.status_code == 404
    assert "gone" in response.json()["error"]


def test_the_messages_and_the_export_say_what_a_message_carried(api):
    from sessions_app import services

    note = _upload(api, "exported", "plan `v2`.txt", b"plan").json()
    services.message_append(session_id="exported", role="user", content="see the plan",
                            data={"attachments": [note]})
    messages = api.get("/api/sessions/exported/messages/").json()["messages"]
    assert messages[0]["data"]["attachments"] == [note]
    markdown = api.get("/api/sessions/exported/export/?format=md").content.decode()
    assert f"*Attached:* `plan 'v2'.txt` ({note['size']} bytes, text/plain)" in markdown
