"""Upgrading a database made before users existed: nothing lost, all of it the default owner's.

The test database is migrated back to 0001 (the schema before users), filled
through the historical models as the old code would have, then migrated
forward again, on SQLite and on PostgreSQL alike.
"""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from sessions_app.pairing import device_authenticate, token_hash
from sessions_app.services import DEFAULT_OWNER

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("sessions_app", "0001_initial")]
OLD_TOKEN = "zc_an-old-token-from-before-users-existed"


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def latest():
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes("sessions_app")


def test_existing_sessions_messages_and_devices_belong_to_the_default_owner():
    old = migrate(BEFORE)
    Session = old.get_model("sessions_app", "ChatSession")
    Message = old.get_model("sessions_app", "Message")
    Device = old.get_model("sessions_app", "PairedDevice")
    Note = old.get_model("sessions_app", "MemoryNote")
    Usage = old.get_model("sessions_app", "UsageRecord")
    session = Session.objects.create(id="from-before", name="old chat", message_count=2)
    Message.objects.create(session=session, seq=1, role="user", content="hello from before")
    Message.objects.create(session=session, seq=2, role="assistant", content="hi")
    Device.objects.create(name="old laptop", token_hash=token_hash(OLD_TOKEN), token_hint=OLD_TOKEN[:6])
    Note.objects.create(session=session, content="remember this")
    Usage.objects.create(session=session, model="m", input_tokens=3, output_tokens=4)

    new = migrate(latest())

    User = new.get_model("auth", "User")
    owner = User.objects.get(username=DEFAULT_OWNER)
    assert owner.is_staff and owner.password.startswith("!")  # staff, with no usable password
    Session = new.get_model("sessions_app", "ChatSession")
    session = Session.objects.get(id="from-before")
    assert (session.user_id, session.name, session.message_count) == (owner.pk, "old chat", 2)
    assert list(new.get_model("sessions_app", "Message").objects.filter(session_id="from-before")
                .order_by("seq").values_list("content", flat=True)) == ["hello from before", "hi"]
    assert new.get_model("sessions_app", "MemoryNote").objects.get().user_id == owner.pk
    assert new.get_model("sessions_app", "UsageRecord").objects.get().user_id == owner.pk
    # The old token still works, as the owner's device.
    device = device_authenticate(token=OLD_TOKEN)
    assert device is not None and device.user.username == DEFAULT_OWNER


def test_an_empty_database_gets_no_owner_until_it_needs_one():
    migrate(BEFORE)
    new = migrate(latest())
    assert not new.get_model("auth", "User").objects.filter(username=DEFAULT_OWNER).exists()
