"""A conversation is a tree: the migration of linear sessions, appends, switches, and reads
that follow the active branch and cost what the window costs, however many branches there are.
"""

import re

import pytest

from construct_core.errors import MessageNotFound, SessionBusy
from sessions_app import exports, selectors, services
from sessions_app.models import ChatSession, Message
from tests.factories import make_message, make_session
from tests.sessions_app.test_users_migration import latest, migrate

FILLER = "x" * 396  # about 100 tokens a message


def test_a_migrated_linear_session_reads_as_before(transactional_db):
    old = migrate([("sessions_app", "0004_attachments")])
    User = old.get_model("auth", "User")
    Session = old.get_model("sessions_app", "ChatSession")
    OldMessage = old.get_model("sessions_app", "Message")
    owner = User.objects.create(username="owner-before")
    line = Session.objects.create(id="line", user=owner, message_count=4)
    for seq, role, content in ((1, "user", "q1"), (2, "assistant", "a1"), (3, "user", "q2"),
                               (4, "assistant", "a2")):
        OldMessage.objects.create(session=line, seq=seq, role=role, content=content)
    other = Session.objects.create(id="other", user=owner, message_count=1)
    OldMessage.objects.create(session=other, seq=1, role="user", content="alone")
    Session.objects.create(id="empty", user=owner)

    migrate(latest())

    rows = list(Message.objects.filter(session_id="line").order_by("seq"))
    assert [row.parent_id for row in rows] == [None, rows[0].pk, rows[1].pk, rows[2].pk]
    assert [row.depth for row in rows] == [1, 2, 3, 4]
    session = ChatSession.objects.get(pk="line")
    assert (session.active_leaf_id, session.message_count, session.last_seq) == (rows[-1].pk, 4, 4)
    assert [(m.role, m.content) for m in selectors.branch_messages(session_id="line")] == [
        ("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2")]
    history, dropped = selectors.history_for_provider(session_id="line", token_budget=10_000)
    assert history == [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                       {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    assert dropped == 0
    assert ChatSession.objects.get(pk="other").message_count == 1
    # The branches migration went over the empty session too; a later one (0009) deletes
    # sessions that never had a message.
    assert not ChatSession.objects.filter(pk="empty").exists()
    # And it goes on as a chain.
    new = services.message_append(session_id="line", role="user", content="q3")
    assert (new.parent_id, new.depth, new.seq) == (rows[-1].pk, 5, 5)


def test_appends_chain_and_move_the_active_leaf(db):
    session = make_session()
    rows = services.messages_append(session_id=session.pk, messages=[
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
        {"role": "user", "content": "q2"}])
    stored = list(Message.objects.filter(session=session).order_by("seq"))
    assert [m.parent_id for m in stored] == [None, stored[0].pk, stored[1].pk]
    assert [m.parent_id for m in rows] == [m.parent_id for m in stored]
    session.refresh_from_db()
    assert (session.active_leaf_id, session.message_count, session.last_seq) == (stored[2].pk, 3, 3)

    # A new first message (an edit of the first question) and an answer beside another.
    root = services.message_append(session_id=session.pk, role="user", content="q again", parent_id=None)
    assert (root.parent_id, root.depth) == (None, 1)
    session.refresh_from_db()
    assert session.message_count == 1
    beside = services.message_append(session_id=session.pk, role="assistant", content="a again",
                                     parent_id=stored[0].pk)
    assert beside.depth == 2
    with pytest.raises(MessageNotFound):
        services.message_append(session_id=session.pk, role="user", content="x",
                                parent_id=make_message(session=make_session()).pk)


def test_switching_takes_the_newest_leaf_under_any_message(db):
    session = make_session()
    q = make_message(session=session, content="q")
    a1 = make_message(session=session, role="assistant", content="a1", parent=q)
    q2 = make_message(session=session, content="q2", parent=a1)
    a2 = make_message(session=session, role="assistant", content="a2", parent=q)
    assert selectors.active_leaf(session_id=session.pk) == (a2.pk, 2)

    assert services.branch_switch(session_id=session.pk, message_id=a1.pk).pk == q2.pk
    assert [m.content for m in selectors.branch_messages(session_id=session.pk)] == ["q", "a1", "q2"]
    assert services.branch_switch(session_id=session.pk, message_id=q.pk).pk == a2.pk
    assert selectors.active_leaf(session_id=session.pk) == (a2.pk, 2)
    branch = selectors.branch_messages(session_id=session.pk)
    assert [m.sibling_ids for m in branch] == [[q.pk], [a1.pk, a2.pk]]
    assert selectors.last_user_message(session_id=session.pk).pk == q.pk
    with pytest.raises(MessageNotFound):
        services.branch_switch(session_id=session.pk, message_id=make_message(session=make_session()).pk)
    ChatSession.objects.filter(pk=session.pk).update(state=ChatSession.State.RUNNING)
    with pytest.raises(SessionBusy):
        services.branch_switch(session_id=session.pk, message_id=a1.pk)
    # The JSON export has every message with its parent; Markdown the active branch.
    document = exports.messages_document(session, branch="all")
    assert [(m["content"], m["parent_id"]) for m in document["messages"]] == [
        ("q", None), ("a1", q.pk), ("q2", a1.pk), ("a2", q.pk)]
    markdown = exports.session_markdown(ChatSession.objects.get(pk=session.pk))
    assert "\n\na2\n" in markdown and "\n\na1\n" not in markdown and "- Messages: 2" in markdown


def fill_branches(session_id, rounds, branches):
    """`rounds` exchanges on a straight line, then `branches` regenerated answers (each with a
    follow-up exchange) at points spread along it; the active branch is the original line."""
    services.session_open(session_id=session_id, user_id=services.default_owner().pk)
    items = []
    for i in range(rounds):
        items += [{"role": "user", "content": f"question {i} {FILLER}"},
                  {"role": "assistant", "content": f"answer {i} {FILLER}"}]
    line = services.messages_append(session_id=session_id, messages=items)
    leaf = line[-1]
    for b in range(branches):
        question = line[(len(line) // branches) * b // 2 * 2]
        services.messages_append(session_id=session_id, parent_id=question.pk, messages=[
            {"role": "assistant", "content": f"other answer {b}"},
            {"role": "user", "content": f"other question {b}"},
            {"role": "assistant", "content": f"other follow-up {b}"}])
    services.branch_switch(session_id=session_id, message_id=leaf.pk)
    return line


def test_the_read_follows_the_active_branch_and_costs_the_window(db, django_assert_max_num_queries):
    line = fill_branches("tree", 500, 50)  # 1,000 on the line, 150 on other branches
    with django_assert_max_num_queries(3) as queries:  # the leaf, then a page or two of the branch
        history, dropped = selectors.history_for_provider(session_id="tree", token_budget=2000)
    reads = [q["sql"] for q in queries.captured_queries if "sessions_app_message" in q["sql"]]
    assert reads and all(re.search(r"LIMIT \d+$", sql) for sql in reads)
    assert history[-1]["content"] == f"answer 499 {FILLER}"
    assert not any("other" in m["content"] for m in history)
    assert dropped == 1000 - len(history) > 900

    # The whole branch too: three queries whatever the number of branches.
    with django_assert_max_num_queries(3):
        branch = selectors.branch_messages(session_id="tree")
    assert [m.pk for m in branch] == [m.pk for m in line]
    forked = [m for m in branch if len(m.sibling_ids) > 1]
    assert len(forked) == 50 and all(m.role == "assistant" for m in forked)
