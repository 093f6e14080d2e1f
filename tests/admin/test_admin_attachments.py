"""A session's attachments in the admin: listed with size and type, downloadable, and gone from
disk with their session."""

import pytest
from django.test import Client

from sessions_app import attachments, services
from sessions_app.models import Attachment, ChatSession
from tests.factories import make_message, make_session

pytestmark = pytest.mark.django_db


def _attached(tmp_path, session, name, data):
    source = tmp_path / "upload"
    source.write_bytes(data)
    return attachments.attachment_store(session_id=session.pk, user_id=session.user_id,
                                        source=source, name=name)


def test_the_session_page_lists_its_attachments_and_each_downloads(admin_client, tmp_path):
    session = make_session(session_id="with-files", name="Files")
    page = _attached(tmp_path, session, "<b>page<i>.html", b"<script>alert(1)</script>")
    make_message(session=session, content="see attached",
                 data={"attachments": [attachments.attachment_document(page)]})

    html = admin_client.get(f"/admin/sessions_app/chatsession/{session.pk}/change/").content.decode()
    assert "&lt;b&gt;page&lt;i&gt;.html" in html and "<b>page<i>" not in html
    assert "text/plain" in html and "25 bytes" in html  # type and size
    assert f"/admin/sessions_app/attachment/{page.pk}/download/" in html
    assert "attached" in html  # the message says what it carried

    listed = admin_client.get("/admin/sessions_app/attachment/").content.decode()
    assert f"/admin/sessions_app/attachment/{page.pk}/download/" in listed

    download = admin_client.get(f"/admin/sessions_app/attachment/{page.pk}/download/")
    assert download.status_code == 200
    assert download["Content-Disposition"] == 'attachment; filename="<b>page<i>.html"'
    assert download["X-Content-Type-Options"] == "nosniff"
    assert download["Content-Type"] == "application/octet-stream"
    assert b"".join(download.streaming_content) == b"<script>alert(1)</script>"


def test_downloads_need_a_staff_login(tmp_path):
    session = make_session(session_id="private")
    file = _attached(tmp_path, session, "a.txt", b"private")
    response = Client().get(f"/admin/sessions_app/attachment/{file.pk}/download/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.django_db(transaction=True)
def test_deleting_a_session_in_the_admin_deletes_its_files(admin_client, tmp_path):
    session = make_session(session_id="doomed-admin")
    file = _attached(tmp_path, session, "a.txt", b"bye")
    path = attachments.attachment_path(file)
    assert path.is_file()

    response = admin_client.post(f"/admin/sessions_app/chatsession/{session.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not ChatSession.objects.filter(pk=session.pk).exists()
    assert not Attachment.objects.exists()
    assert not path.exists() and not attachments.session_folder(session.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_deletion_that_rolls_back_keeps_the_files(tmp_path):
    from django.db import transaction

    session = make_session(session_id="kept")
    file = _attached(tmp_path, session, "a.txt", b"kept")
    with pytest.raises(RuntimeError), transaction.atomic():
        services.session_delete(session_id="kept")
        raise RuntimeError("rolled back")
    assert attachments.attachment_path(file).read_bytes() == b"kept"
