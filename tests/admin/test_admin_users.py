"""The admin's Users pages: a user's devices, sessions, spend and quota; revoking; pairing a device."""

import logging
import re
from datetime import timedelta
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from sessions_app import budget
from sessions_app.models import AuditEvent, PairedDevice, PairingCode, UsageRecord, UserQuota
from sessions_app.pairing import code_hash
from sessions_app.services import default_owner
from tests.factories import make_device, make_session, make_user

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
USERS = "/admin/auth/user/"


def _page(client, url, **params):
    response = client.get(url, params)
    assert response.status_code == 200, url
    return response.content.decode()


def _usage(user, cost, *, when=None, tokens=(0, 0), session=None):
    record = UsageRecord.objects.create(user=user, session=session, model="m", cost_usd=Decimal(cost),
                                        input_tokens=tokens[0], output_tokens=tokens[1])
    if when is not None:  # created_at is set on insert: move it afterwards
        UsageRecord.objects.filter(pk=record.pk).update(created_at=when)
    return record


class FormFields(HTMLParser):
    """What a browser would submit from one form: its named inputs, selects and textareas."""

    def __init__(self, form_id):
        super().__init__()
        self.form_id, self.inside, self.data = form_id, False, {}
        self.select = self.textarea = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.inside = attrs.get("id") == self.form_id
        if not self.inside or "name" not in attrs and tag != "option":
            return
        if tag == "input" and attrs.get("type") not in ("submit", "button", "checkbox", "radio"):
            self.data[attrs["name"]] = attrs.get("value") or ""
        elif tag == "input" and "checked" in attrs:
            self.data.setdefault(attrs["name"], []).append(attrs.get("value") or "on")
        elif tag == "select":
            self.select = attrs["name"]
            self.data.setdefault(self.select, [])
        elif tag == "option" and self.select and "selected" in attrs:
            self.data[self.select].append(attrs.get("value", ""))
        elif tag == "textarea":
            self.textarea = attrs["name"]
            self.data[self.textarea] = ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None

    def handle_data(self, data):
        if self.textarea:
            self.data[self.textarea] += data


def _form(html, form_id="user_form"):
    parser = FormFields(form_id)
    parser.feed(html)
    return parser.data


# --- the user's page -----------------------------------------------------------------------


def test_user_page_shows_devices_sessions_spend_and_quota(admin_client):
    alice = make_user(username="alice")
    laptop, laptop_token = make_device(name="alice laptop", user=alice)
    make_device(name="alice old phone", user=alice, revoked=True)
    make_device(name="owner tablet")  # the default owner's: not on alice's page
    for n in range(7):
        make_session(session_id=f"alice-{n}", name=f"Alice talk {n}", user=alice)
    make_session(session_id="owner-1", name="Owner talk")
    UserQuota.objects.create(user=alice, daily_budget_usd=Decimal("1.00"), daily_tokens=1000)
    _usage(alice, "0.25", tokens=(100, 50))
    _usage(alice, "7", when=budget.month_start() - timedelta(seconds=1))  # last month: not counted
    month = Decimal("0.25")
    earlier = budget.day_start() - timedelta(seconds=1)
    if earlier >= budget.month_start():  # not the first of the month: a day earlier this month
        _usage(alice, "0.5", when=earlier)
        month += Decimal("0.5")

    html = _page(admin_client, f"{USERS}{alice.pk}/change/")

    # Devices: both of alice's, the active one with a Revoke button; never a token or its hash.
    assert "alice laptop" in html and "alice old phone" in html and "owner tablet" not in html
    assert laptop.token_hint in html
    assert laptop.token_hash not in html and laptop_token[len(laptop.token_hint):] not in html
    assert html.count(">Revoke</button>") == 1
    # Sessions: the count, linked to the session list filtered by alice, and the newest few.
    assert f'href="/admin/sessions_app/chatsession/?user__id__exact={alice.pk}">7 session(s)</a>' in html
    assert "Alice talk 6" in html and "Owner talk" not in html
    # Spend against the quota, and the quota's fields with what an empty one means.
    assert "$0.2500" in html and "$1.00" in html and "25%" in html
    assert "150 tokens" in html and "1,000 tokens" in html and "15%" in html
    assert f"${month:.4f}" in html and "no limit" in html  # this month: no monthly quota
    assert 'name="quota-0-daily_budget_usd" value="1.0000"' in html
    assert "Empty: the gateway's default, CONSTRUCT_USER_MONTHLY_BUDGET_USD (unset: no limit)" in html
    assert "Pair a device" in html


def test_users_list_shows_sessions_devices_and_spend_against_the_quota(admin_client, settings):
    settings.CONSTRUCT_USER_MONTHLY_BUDGET_USD = 10.0
    alice = make_user(username="alice")
    make_user(username="bob")
    make_device(user=alice)
    make_device(user=alice, revoked=True)
    make_session(session_id="a1", user=alice)
    make_session(session_id="a2", user=alice)
    UserQuota.objects.create(user=alice, daily_budget_usd=Decimal("0.50"))
    _usage(alice, "0.5")

    html = _page(admin_client, USERS)

    for header in ("Sessions", "Active devices", "Spent today", "Spent this month"):
        assert header in html
    row = next(r for r in html.split("<tr") if ">alice<" in r)
    assert f'href="/admin/sessions_app/chatsession/?user__id__exact={alice.pk}">2</a>' in row
    assert ">1<" in row  # one active device
    assert "$0.5000 of $0.50 (100%) · spent" in row  # today: her own quota
    assert "$0.5000 of $10.00 (5%)" in row  # this month: the default
    bob = next(r for r in html.split("<tr") if ">bob<" in r)
    assert "$0.0000 (no limit)" in bob and "$0.0000 of $10.00 (0%)" in bob


def test_the_sessions_link_lists_only_that_users_sessions(admin_client):
    alice = make_user(username="alice")
    make_session(session_id="alice-s", name="Alice only", user=alice, message_count=1)
    make_session(session_id="owner-s", name="Owner only", message_count=1)

    html = _page(admin_client, "/admin/sessions_app/chatsession/", user__id__exact=alice.pk)

    assert "Alice only" in html and "Owner only" not in html
    row = next(r for r in html.split("<tr") if "Alice only" in r)
    assert ">alice<" in row  # the owner column
    everyone = _page(admin_client, "/admin/sessions_app/chatsession/")
    assert "By user" in everyone and f"?user__id__exact={alice.pk}" in everyone
    assert next(r for r in everyone.split("<tr") if "Owner only" in r).count(">owner<") == 1


def test_the_devices_list_shows_whose_device_it_is(admin_client):
    alice = make_user(username="alice")
    make_device(name="alice laptop", user=alice)
    make_device(name="owner phone")

    html = _page(admin_client, "/admin/sessions_app/paireddevice/", user__id__exact=alice.pk)

    assert "alice laptop" in html and "owner phone" not in html
    assert ">alice<" in next(r for r in html.split("<tr") if "alice laptop" in r)


def test_quota_is_edited_inline_and_an_empty_field_takes_the_default(admin_client, settings):
    settings.CONSTRUCT_USER_DAILY_TOKENS = 5000
    alice = make_user(username="alice")
    url = f"{USERS}{alice.pk}/change/"
    form = _form(_page(admin_client, url))
    assert form["quota-TOTAL_FORMS"] == "1" and form["quota-INITIAL_FORMS"] == "0"

    form.update({"quota-0-daily_budget_usd": "2.5", "quota-0-monthly_budget_usd": "20"})
    response = admin_client.post(url, form)

    assert response.status_code == 302, response.content.decode()[:2000]
    quota = UserQuota.objects.get(user=alice)
    assert (quota.daily_budget_usd, quota.monthly_budget_usd, quota.daily_tokens) == (
        Decimal("2.5"), Decimal("20"), None)
    limits = {limit.key: limit.limit for limit in budget.limits(user_id=alice.pk)}
    assert limits == {"daily_usd": 2.5, "monthly_usd": 20.0, "daily_tokens": 5000.0}

    # A negative budget is refused, not stored.
    form = _form(_page(admin_client, url))
    form["quota-0-daily_budget_usd"] = "-1"
    refused = admin_client.post(url, form)
    assert refused.status_code == 200 and "greater than or equal to 0" in refused.content.decode()
    quota.refresh_from_db()
    assert quota.daily_budget_usd == Decimal("2.5")


def test_revoke_from_the_user_page(admin_client):
    alice = make_user(username="alice")
    laptop, laptop_token = make_device(name="alice laptop", user=alice)
    phone, phone_token = make_device(name="alice phone", user=alice)
    url = f"{USERS}{alice.pk}/change/"
    html = _page(admin_client, url)
    # The button the browser would press: it posts the user's form to its own formaction.
    action = re.search(r'formaction="([^"]+)"[^>]*aria-label="Revoke alice laptop"', html).group(1)
    assert admin_client.get(f"/api/me/", HTTP_AUTHORIZATION=f"Bearer {laptop_token}").status_code == 200

    response = admin_client.post(action, _form(html))

    assert response.status_code == 302 and response["Location"] == url
    laptop.refresh_from_db()
    phone.refresh_from_db()
    assert laptop.revoked_at is not None and phone.revoked_at is None
    api = Client()
    assert api.get("/api/me/", HTTP_AUTHORIZATION=f"Bearer {laptop_token}").status_code == 401
    assert api.get("/api/me/", HTTP_AUTHORIZATION=f"Bearer {phone_token}").status_code == 200
    audit = AuditEvent.objects.get(kind=AuditEvent.Kind.DEVICE_REVOKED)
    assert audit.detail == {"device_id": laptop.pk}
    after = _page(admin_client, url)
    assert "Device “alice laptop” revoked" in after
    assert after.count(">Revoke</button>") == 1  # the phone's

    # Another user's device is not revoked through alice's page; a GET revokes nothing.
    other, _ = make_device(name="owner phone")
    assert admin_client.post(f"{USERS}{alice.pk}/devices/{other.pk}/revoke/").status_code == 404
    assert admin_client.get(f"{USERS}{alice.pk}/devices/{phone.pk}/revoke/").status_code == 302
    other.refresh_from_db()
    phone.refresh_from_db()
    assert other.revoked_at is None and phone.revoked_at is None


def test_revoking_needs_the_permission_to_change_devices(fast_hashes):
    staff = make_user(username="helper", password=PASSWORD, is_staff=True)
    staff.user_permissions.add(*_permissions("auth.view_user", "auth.change_user"))
    alice = make_user(username="alice")
    device, _ = make_device(user=alice)
    client = Client()
    assert client.login(username="helper", password=PASSWORD)

    response = client.post(f"{USERS}{alice.pk}/devices/{device.pk}/revoke/")

    assert response.status_code == 403
    device.refresh_from_db()
    assert device.revoked_at is None


def _permissions(*names):
    from django.contrib.auth.models import Permission

    found = []
    for name in names:
        app_label, codename = name.split(".")
        found.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return found


# --- pairing a device for a user -------------------------------------------------------


def _code_on(html, username):
    return re.search(rf'data-user="{username}">(\d{{6}})</code>', html).group(1)


def test_pair_a_device_action_shows_a_code_that_pairs_a_device_of_that_user(admin_client, caplog):
    alice = make_user(username="alice")
    caplog.set_level(logging.DEBUG)

    response = admin_client.post(USERS, {"action": "pair_device", "_selected_action": [str(alice.pk)]})

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    code = _code_on(html, "alice")
    assert f'curl -X POST -H "X-Pairing-Code: {code}" http://testserver/pair' in html
    assert "http://testserver/" in html and "expires in 60 minutes" in html
    # Kept only as its hash, never in a log or the admin's history.
    stored = PairingCode.objects.get()
    assert stored.user_id == alice.pk and stored.code_hash == code_hash(code) != code
    assert code not in caplog.text
    entry = LogEntry.objects.get(object_id=str(alice.pk))
    assert entry.get_change_message() == "Issued a one-time pairing code." and code not in str(entry)

    paired = Client().post("/pair", HTTP_X_PAIRING_CODE=code, HTTP_X_DEVICE_NAME="alice tablet")
    assert paired.status_code == 200
    token = paired.json()["token"]
    me = Client().get("/api/me/", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert me["username"] == "alice" and me["is_staff"] is False
    assert me["device"]["name"] == "alice tablet"
    assert PairedDevice.objects.get(name="alice tablet").user_id == alice.pk
    assert code not in caplog.text
    # Once only.
    assert Client().post("/pair", HTTP_X_PAIRING_CODE=code).status_code == 403


def test_pair_a_device_button_on_the_user_page(admin_client):
    alice = make_user(username="alice")
    url = f"{USERS}{alice.pk}/pair-device/"
    assert f'action="{url}"' in _page(admin_client, f"{USERS}{alice.pk}/change/")

    assert admin_client.get(url).status_code == 302  # only a POST issues a code
    assert not PairingCode.objects.exists()
    response = admin_client.post(url)

    assert response.status_code == 200
    code = _code_on(response.content.decode(), "alice")
    token = Client().post("/pair", HTTP_X_PAIRING_CODE=code).json()["token"]
    assert Client().get("/api/me/", HTTP_AUTHORIZATION=f"Bearer {token}").json()["username"] == "alice"


def test_pair_a_device_for_several_users_and_none_for_an_inactive_one(admin_client):
    alice, bob = make_user(username="alice"), make_user(username="bob")
    gone = make_user(username="gone")
    gone.is_active = False
    gone.save()

    response = admin_client.post(USERS, {"action": "pair_device",
                                         "_selected_action": [str(u.pk) for u in (alice, bob, gone)]})

    html = response.content.decode()
    codes = {name: _code_on(html, name) for name in ("alice", "bob")}
    assert 'data-user="gone"' not in html
    assert 'curl -X POST -H "X-Pairing-Code: CODE" http://testserver/pair' in html
    assert PairingCode.objects.count() == 2
    for name, code in codes.items():
        token = Client().post("/pair", HTTP_X_PAIRING_CODE=code).json()["token"]
        assert Client().get("/api/me/", HTTP_AUTHORIZATION=f"Bearer {token}").json()["username"] == name
    only_gone = admin_client.post(USERS, {"action": "pair_device", "_selected_action": [str(gone.pk)]},
                                  follow=True)
    assert "No code for gone: the user is inactive." in only_gone.content.decode()
    assert PairingCode.objects.count() == 2


def test_only_a_superuser_pairs_a_device_for_a_superuser(fast_hashes):
    staff = make_user(username="helper", password=PASSWORD, is_staff=True)
    staff.user_permissions.add(*_permissions("auth.view_user", "auth.change_user"))
    alice = make_user(username="alice")
    client = Client()
    assert client.login(username="helper", password=PASSWORD)

    refused = client.post(f"{USERS}{default_owner().pk}/pair-device/", follow=True)
    allowed = client.post(f"{USERS}{alice.pk}/pair-device/")

    assert "only a superuser may pair a device for one" in refused.content.decode()
    assert _code_on(allowed.content.decode(), "alice")
    assert list(PairingCode.objects.values_list("user_id", flat=True)) == [alice.pk]


# --- who may use the admin -----------------------------------------------------------------


def test_a_user_who_is_not_staff_cannot_log_into_admin(fast_hashes):
    make_user(username="alice", password=PASSWORD)
    client = Client()

    response = client.post("/admin/login/?next=/admin/", {"username": "alice", "password": PASSWORD,
                                                          "next": "/admin/"})

    assert response.status_code == 200  # the form again, not a redirect into admin
    assert "staff account" in response.content.decode()
    assert client.get("/admin/").status_code == 302
    # Even with a Django login session of their own, admin sends them to its login.
    assert client.login(username="alice", password=PASSWORD)
    refused = client.get(USERS)
    assert refused.status_code == 302 and refused["Location"].startswith("/admin/login/")
    # Their password still signs them in on the chat page: that is what it is for.
    assert Client().post("/login", {"username": "alice", "password": PASSWORD},
                         content_type="application/json").status_code == 200
