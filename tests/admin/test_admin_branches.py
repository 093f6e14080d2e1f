"""The admin shows a conversation as the tree it is, with the active branch marked."""

import re

import pytest

from tests.admin.test_admin_pages import _page
from tests.factories import make_message, make_session

pytestmark = pytest.mark.django_db


def test_the_conversation_tree_indents_versions_and_marks_the_active_branch(admin_client):
    session = make_session(session_id="tree")
    q = make_message(session=session, content="QUESTION one", parent=None)
    a1 = make_message(session=session, role="assistant", content="ANSWER first", parent=q)
    make_message(session=session, role="user", content="QUESTION follow-up", parent=a1)
    make_message(session=session, role="assistant", content="ANSWER regenerated", parent=q)

    html = _page(admin_client, "/admin/sessions_app/chatsession/tree/change/")

    tree = html[html.index('class="conversation-tree"'):html.index("the active branch (what the model")]
    rows = re.findall(r'<div style="margin-left: ([\d.]+)em" class="([\w-]*)">(.) #(\d+)', tree)
    assert rows == [("0", "branch-active", "●", "1"), ("0", "", "○", "2"), ("0", "", "○", "3"),
                    ("1.5", "branch-active", "●", "4")]
    order = [tree.index(text) for text in ("QUESTION one", "ANSWER first", "QUESTION follow-up",
                                           "ANSWER regenerated")]
    assert order == sorted(order)
