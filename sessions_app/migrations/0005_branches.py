"""Branches: a conversation is a tree of messages, with an active branch.

Every existing session is a straight line, so each of its messages follows
the one before it (by seq), and its last message is the active leaf. Both
updates are one statement each (window functions, UPDATE ... FROM), fast on
big tables, and the same SQL on SQLite (3.33 or later) and PostgreSQL.
"""

import django.db.models.deletion
from django.db import migrations, models

LINK_MESSAGES = """
UPDATE sessions_app_message
   SET parent_id = ranked.previous_id, depth = ranked.position
  FROM (SELECT id,
               LAG(id) OVER (PARTITION BY session_id ORDER BY seq) AS previous_id,
               ROW_NUMBER() OVER (PARTITION BY session_id ORDER BY seq) AS position
          FROM sessions_app_message) AS ranked
 WHERE sessions_app_message.id = ranked.id
"""

SET_LEAVES = """
UPDATE sessions_app_chatsession
   SET active_leaf_id = last.id, last_seq = last.seq, message_count = last.depth
  FROM (SELECT id, session_id, seq, depth,
               ROW_NUMBER() OVER (PARTITION BY session_id ORDER BY seq DESC) AS newest
          FROM sessions_app_message) AS last
 WHERE last.session_id = sessions_app_chatsession.id AND last.newest = 1
"""


class Migration(migrations.Migration):

    dependencies = [
        ("sessions_app", "0004_attachments"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="parent",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE,
                                    related_name="children", to="sessions_app.message"),
        ),
        migrations.AddField(
            model_name="message",
            name="depth",
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.AddField(
            model_name="chatsession",
            name="active_leaf",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                    related_name="+", to="sessions_app.message"),
        ),
        migrations.AddField(
            model_name="chatsession",
            name="last_seq",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.RunSQL(LINK_MESSAGES, reverse_sql=migrations.RunSQL.noop, elidable=True),
        migrations.RunSQL(SET_LEAVES, reverse_sql=migrations.RunSQL.noop, elidable=True),
    ]
