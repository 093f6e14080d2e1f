"""The tree of a session's messages: walks along it, one recursive query each.

A session's messages form a tree (Message.parent). Each walk is one
WITH RECURSIVE query (SQLite and PostgreSQL alike), every step an index
lookup by primary key or by parent. Reads only; services and selectors use them.
"""

from django.db.models.expressions import RawSQL

from sessions_app.models import Message

MESSAGE_TABLE = Message._meta.db_table


def branch_up(leaf_id: int, limit: int) -> RawSQL:
    """The ids of `leaf_id` and its ancestors, at most `limit` of them (a subquery)."""
    table = MESSAGE_TABLE
    return RawSQL(
        f"WITH RECURSIVE up(id, parent_id, n) AS ("
        f"SELECT id, parent_id, 1 FROM {table} WHERE id = %s "
        f"UNION ALL SELECT m.id, m.parent_id, up.n + 1 FROM {table} m "
        f"JOIN up ON m.id = up.parent_id WHERE up.n < %s) SELECT id FROM up",
        (leaf_id, limit),
    )


def subtree(session_id: str, message_id: int) -> RawSQL:
    """The ids of `message_id` (if it is the session's) and of every message under it."""
    table = MESSAGE_TABLE
    return RawSQL(
        f"WITH RECURSIVE down(id) AS ("
        f"SELECT id FROM {table} WHERE id = %s AND session_id = %s "
        f"UNION ALL SELECT m.id FROM {table} m JOIN down ON m.parent_id = down.id) "
        f"SELECT id FROM down",
        (message_id, session_id),
    )


def up_to_role(leaf_id: int, role: str) -> RawSQL:
    """The ids of `leaf_id` and its ancestors up to the nearest with `role` (included)."""
    table = MESSAGE_TABLE
    return RawSQL(
        f"WITH RECURSIVE up(id, parent_id, role) AS ("
        f"SELECT id, parent_id, role FROM {table} WHERE id = %s "
        f"UNION ALL SELECT m.id, m.parent_id, m.role FROM {table} m "
        f"JOIN up ON m.id = up.parent_id WHERE up.role <> %s) SELECT id FROM up",
        (leaf_id, role),
    )


def newest_leaf_under(*, session_id: str, message_id: int) -> Message | None:
    """The newest message of the subtree under `message_id` (itself included), or None when
    the message is not the session's. A message is newer than its parent, so the newest
    message of a subtree has no child: it is the newest leaf."""
    return (Message.objects.filter(pk__in=subtree(session_id, message_id)).order_by("-seq")
            .only("pk", "depth").first())
