"""Tool approvals in Django admin: pending and past ones, filterable; approve and deny pending ones."""

import pytest

from sessions_app.models import AuditEvent, ToolApproval
from tests.factories import make_approval, make_session, make_user

pytestmark = pytest.mark.django_db

URL = "/admin/sessions_app/toolapproval/"


def test_list_filters_and_detail(admin_client):
    alice = make_user(username="alice")
    pending = make_approval(session=make_session(user=alice, name="Alice's chat"), name="shell",
                            args={"command": "echo SECRETLESS"})
    make_approval(name="file_write", state="denied", decision="deny", by="phone")
    page = admin_client.get(URL).content.decode()
    assert "shell" in page and "file_write" in page and "alice" in page

    def shown(**params):
        return [row.name for row in admin_client.get(URL, params).context["cl"].result_list]

    assert shown(state__exact="pending") == ["shell"]
    assert shown(name="file_write") == ["file_write"]
    assert shown(q="shell") == ["shell"]
    assert shown(session__user__id__exact=str(alice.pk)) == ["shell"]
    detail = admin_client.get(f"{URL}{pending.pk}/change/").content.decode()
    assert "echo SECRETLESS" in detail


def test_approve_and_deny_actions_answer_pending_ones_as_operator(admin_client):
    first, second = make_approval(name="shell"), make_approval(name="file_write")
    done = make_approval(name="file_read", state="approved", decision="approve", by="phone")
    response = admin_client.post(URL, {"action": "approve",
                                       "_selected_action": [first.pk, done.pk]}, follow=True)
    assert "1 approval(s) answered" in response.content.decode()
    assert "no longer pending" in response.content.decode()
    admin_client.post(URL, {"action": "deny", "_selected_action": [second.pk]})
    rows = {row.pk: row for row in ToolApproval.objects.all()}
    assert (rows[first.pk].decision, rows[first.pk].by) == ("approve", "operator")
    assert (rows[second.pk].decision, rows[second.pk].by) == ("deny", "operator")
    assert (rows[done.pk].decision, rows[done.pk].by) == ("approve", "phone")
    assert AuditEvent.objects.filter(kind="approval_decided").count() == 2


def test_nothing_to_add_or_edit(admin_client):
    approval = make_approval()
    assert admin_client.get(f"{URL}add/").status_code == 403
    admin_client.post(f"{URL}{approval.pk}/change/", {"state": "approved"})
    assert ToolApproval.objects.get(pk=approval.pk).state == "pending"
