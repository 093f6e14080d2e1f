"""Upgrading a database that still holds the empty sessions opening a chat used to store.

The test database is migrated back to 0008, filled through the historical
models, then migrated forward again: only the sessions with nothing in them go.
"""

import pytest

from sessions_app.services import default_owner
from tests.sessions_app.test_users_migration import latest, migrate  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("sessions_app", "0008_session_auto_named")]
AFTER = [("sessions_app", "0009_delete_empty_sessions")]


def test_sessions_with_no_message_and_no_file_are_deleted_and_the_rest_kept():
    owner_id = default_owner().pk
    old = migrate(BEFORE)
    Session = old.get_model("sessions_app", "ChatSession")
    Message = old.get_model("sessions_app", "Message")
    Attachment = old.get_model("sessions_app", "Attachment")
    Client = old.get_model("sessions_app", "ClientMessageId")

    def session(session_id, **fields):
        return Session.objects.create(id=session_id, user_id=owner_id, **fields)

    talked = session("talked", message_count=1)
    Message.objects.create(session=talked, seq=1, role="user", content="hello")
    session("opened-and-left")
    failed = session("failed-before-a-message", state="error")
    Client.objects.create(session=failed, client_id="c1")
    uploaded = session("upload-never-sent")
    Attachment.objects.create(id="a1", session=uploaded, name="notes.txt", mime="text/plain", size=3,
                              path="x/y.txt")
    session("first-turn-starting", state="running", turn_id="t1")
    # No message on its active branch (message_count 0), but one in the tree: kept.
    odd = session("count-out-of-step")
    Message.objects.create(session=odd, seq=1, role="user", content="kept")

    new = migrate(AFTER)

    Session = new.get_model("sessions_app", "ChatSession")
    assert sorted(Session.objects.values_list("id", flat=True)) == [
        "count-out-of-step", "first-turn-starting", "talked", "upload-never-sent"]
    assert not new.get_model("sessions_app", "ClientMessageId").objects.exists()
    assert new.get_model("sessions_app", "Attachment").objects.get().session_id == "upload-never-sent"
    assert new.get_model("sessions_app", "Message").objects.count() == 2
    migrate(latest())  # the schema the next tests expect
