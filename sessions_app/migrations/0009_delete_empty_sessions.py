"""Sessions without a message: deleted.

A session is stored with its first message now; before, opening a chat stored
one at once, and every page opened and left behind an empty row. A session
with files (an upload never sent) is kept, with them: its files are the
user's. One that runs a turn is kept too: a first turn holds its session a
moment before its message is saved.
"""

from django.db import migrations
from django.db.models import Exists, OuterRef


def empty_sessions_delete(apps, schema_editor):
    """Delete the sessions that have no message (in any branch), no file and no running turn."""
    ChatSession = apps.get_model("sessions_app", "ChatSession")
    Message = apps.get_model("sessions_app", "Message")
    Attachment = apps.get_model("sessions_app", "Attachment")
    ChatSession.objects.using(schema_editor.connection.alias).filter(
        ~Exists(Message.objects.filter(session_id=OuterRef("pk"))),
        ~Exists(Attachment.objects.filter(session_id=OuterRef("pk"))),
    ).exclude(state="running").delete()


class Migration(migrations.Migration):

    dependencies = [
        ("sessions_app", "0008_session_auto_named"),
    ]

    operations = [
        migrations.RunPython(empty_sessions_delete, migrations.RunPython.noop, elidable=True),
    ]
