"""Users on the chat page in Chromium: sign in with a password, who is signed in, sign out,
one user's sessions hidden from another, the refusals in words, and an admin's pairing code."""

import re
import secrets

import pytest

from tests.browser.helpers import (
    TOKEN_KEY,
    api,
    create_user,
    last_answer,
    screenshot,
    send,
    session_id_of,
    sign_in,
    wait_for,
    wait_online,
    wait_turn_end,
)
from tests.browser.conftest import browser_server
from tests.e2e.conftest import gateway_env


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory, mock_llm_process):
    """The chat server, believing X-Forwarded-For from loopback: a test that needs its own
    lockout counts as a client of its own address, and locks no other test out."""
    env = gateway_env(mock_llm_process, CONSTRUCT_TRUSTED_PROXIES="127.0.0.1")
    with browser_server(tmp_path_factory, "browser-users", env) as server:
        yield server


def _account(prefix):
    return f"{prefix}{secrets.token_hex(3)}", secrets.token_urlsafe(12)


def _listed(page):
    return page.locator(".session-item").evaluate_all("items => items.map(i => i.dataset.sessionId)")


def _token(page):
    return page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')")


def test_sign_in_with_a_password_see_who_and_sign_out(chat_server, page):
    username, password = _account("alice")
    create_user(chat_server, username, password)
    page.goto(chat_server.url + "/")
    page.wait_for_selector("#login-username", state="visible")
    assert page.locator("#pairing-code").is_visible()  # a code still works beside it
    # Every input has a label that names it.
    assert page.get_by_label("Username").get_attribute("autocomplete") == "username"
    assert page.get_by_label("Password").get_attribute("type") == "password"
    screenshot(page, "sign-in-card")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "sign-in-card-dark")
    page.emulate_media(color_scheme="light")

    sign_in(page, username, "not the password")
    page.locator("#login-error").filter(has_text="Wrong username or password.").wait_for()
    assert page.locator("#app").is_hidden() and _token(page) is None
    page.locator("#login-submit:not([disabled])").wait_for()

    sign_in(page, username, password)
    wait_online(page)
    page.locator("#account-name").filter(has_text=username).wait_for()
    assert page.locator("#account-staff").is_hidden()
    assert page.locator("#sign-out").is_visible()
    token = _token(page)
    assert token.startswith("zc_")
    status, me = api(chat_server, token, "GET", "/api/me/")
    assert status == 200 and me["username"] == username and me["is_staff"] is False
    send(page, "a question from alice")
    wait_turn_end(page, 1, "done")
    session_id = session_id_of(page)
    item = page.locator(f'.session-item[data-session-id="{session_id}"]')
    wait_for(lambda: item.locator(".session-name").inner_text() == "a question from alice")
    screenshot(page, "signed-in")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "signed-in-dark")
    page.emulate_media(color_scheme="light")

    page.click("#sign-out")
    page.wait_for_selector("#pairing-code", state="visible")
    assert "signed out" in page.locator("#pairing-notice").inner_text()
    assert page.locator("#app").is_hidden()
    assert _token(page) is None
    assert "session=" not in page.url
    # The token is revoked on the server, not only forgotten here.
    assert api(chat_server, token, "GET", "/api/sessions/")[0] == 401
    assert api(chat_server, token, "GET", "/api/me/")[0] == 401
    # Nothing of alice is left on the page for whoever comes next.
    assert page.locator(".session-item").count() == 0 and page.locator("article.msg").count() == 0


def test_a_second_user_sees_none_of_the_first_users_sessions(chat_server, page, context, chromium):
    alice, alice_password = _account("alice")
    bob, bob_password = _account("bob")
    carol, carol_password = _account("carol")
    create_user(chat_server, alice, alice_password)
    create_user(chat_server, bob, bob_password)
    create_user(chat_server, carol, carol_password, staff=True)

    page.goto(chat_server.url + "/")
    sign_in(page, alice, alice_password)
    wait_online(page)
    send(page, "alice's secret plans")
    wait_turn_end(page, 1, "done")
    alice_session = session_id_of(page)
    wait_for(lambda: alice_session in _listed(page))

    # One after the other in the same tab: alice signs out, bob signs in.
    page.click("#sign-out")
    page.wait_for_selector("#login-username", state="visible")
    sign_in(page, bob, bob_password)
    wait_online(page)
    page.locator("#account-name").filter(has_text=bob).wait_for()
    assert session_id_of(page) != alice_session
    assert page.locator("article.msg").count() == 0
    send(page, "bob's own question")
    wait_turn_end(page, 1, "done")
    bob_session = session_id_of(page)
    wait_for(lambda: _listed(page) == [bob_session])
    # An idle chat wears no state badge; only running, error and interrupted ones do.
    wait_for(lambda: page.locator(".session-item .badge[class*='state-']").count() == 0)
    page.fill("#session-search", "secret")
    empty = page.locator("#session-empty")
    wait_for(lambda: empty.is_visible() and empty.inner_text() == "No session matches.")
    assert _listed(page) == []
    page.fill("#session-search", "")
    bob_token = _token(page)
    listed = api(chat_server, bob_token, "GET", "/api/sessions/")[1]["results"]
    assert [s["id"] for s in listed] == [bob_session]
    assert api(chat_server, bob_token, "GET", f"/api/sessions/{alice_session}/")[0] == 404

    # At the same time, in a browser of her own, a staff user: marked, and still only her own list.
    other = chromium.new_context(viewport={"width": 1280, "height": 820})
    try:
        staff_page = other.new_page()
        staff_page.goto(chat_server.url + "/")
        sign_in(staff_page, carol, carol_password)
        wait_online(staff_page)
        staff_page.locator("#account-name").filter(has_text=carol).wait_for()
        assert staff_page.locator("#account-staff").is_visible()
        send(staff_page, "carol asks")
        wait_turn_end(staff_page, 1, "done")
        carol_session = session_id_of(staff_page)
        wait_for(lambda: _listed(staff_page) == [carol_session])
        item = staff_page.locator(f'.session-item[data-session-id="{carol_session}"]')
        wait_for(lambda: item.locator(".session-name").inner_text() == "carol asks")
        screenshot(staff_page, "signed-in-staff")
    finally:
        other.close()
    # Bob's page never heard of carol's session either.
    assert carol_session not in _listed(page) and alice_session not in _listed(page)


def test_a_link_to_another_users_session_opens_a_new_chat(chat_server, page, chromium):
    alice, alice_password = _account("alice")
    bob, bob_password = _account("bob")
    create_user(chat_server, alice, alice_password)
    create_user(chat_server, bob, bob_password)
    page.goto(chat_server.url + "/")
    sign_in(page, alice, alice_password)
    wait_online(page)
    send(page, "only for alice")
    wait_turn_end(page, 1, "done")
    alice_session = session_id_of(page)

    other = chromium.new_context(viewport={"width": 1280, "height": 820})
    try:
        bob_page = other.new_page()
        bob_page.goto(f"{chat_server.url}/?session={alice_session}")
        sign_in(bob_page, bob, bob_password)
        # Refused on the socket and unknown to the REST API: a new chat, and a word why.
        bob_page.locator("#banner-text").filter(has_text="not one of yours").wait_for()
        wait_online(bob_page)
        assert session_id_of(bob_page) != alice_session
        assert bob_page.locator("article.msg").count() == 0
        assert "only for alice" not in bob_page.locator("body").inner_text()
    finally:
        other.close()
    status, session = api(chat_server, _token(page), "GET", f"/api/sessions/{alice_session}/")
    assert status == 200 and session["message_count"] == 2


def test_refusals_in_plain_words(chat_server, page, context):
    username, password = _account("dave")
    create_user(chat_server, username, password)
    # A client address of its own (the server believes loopback's X-Forwarded-For).
    context.set_extra_http_headers({"X-Forwarded-For": f"10.77.{secrets.randbelow(250)}.{secrets.randbelow(250)}"})
    page.goto(chat_server.url + "/")
    page.wait_for_selector("#login-username", state="visible")

    page.click("#login-submit")
    assert page.locator("#login-error").inner_text() == "Enter your username and your password."

    for attempt in range(5):  # the fifth failure locks this client out
        sign_in(page, username, f"wrong {attempt}")
        page.locator("#login-error").filter(has_text="Wrong username or password.").wait_for()
        page.locator("#login-submit:not([disabled])").wait_for()
        page.evaluate("document.querySelector('#login-error').textContent = ''")
    sign_in(page, username, password)  # the right password, but locked out
    error = page.locator("#login-error")
    error.filter(has_text="Too many wrong codes or passwords").wait_for()
    assert re.search(r"Try again in [1-5] min\.$", error.inner_text()), error.inner_text()
    # The lockout is shared with pairing codes.
    page.fill("#pairing-code", "123456")
    page.click("#pairing-submit")
    page.locator("#pairing-error").filter(has_text="Too many wrong codes or passwords").wait_for()
    screenshot(page, "sign-in-locked-out")

    context.set_offline(True)
    page.locator("#login-submit:not([disabled])").wait_for()
    sign_in(page, username, password)
    error.filter(has_text="The gateway did not answer").wait_for()
    context.set_offline(False)
    assert _token(page) is None and page.locator("#app").is_hidden()


def test_an_admin_pairs_a_device_for_a_user(chat_server, page, context, chromium):
    operator, operator_password = _account("op")
    erin, erin_password = _account("erin")
    create_user(chat_server, operator, operator_password, superuser=True)
    create_user(chat_server, erin, erin_password)

    page.goto(chat_server.url + "/admin/")
    page.fill("#id_username", operator)
    page.fill("#id_password", operator_password)
    page.click("input[type=submit]")
    page.goto(chat_server.url + "/admin/auth/user/")
    page.get_by_role("link", name=erin, exact=True).click()
    page.wait_for_load_state()
    assert "Spend and quota" in page.locator("body").inner_text()
    page.get_by_role("button", name="Pair a device").click()
    page.wait_for_load_state()
    code = page.locator(f'code.pairing-code[data-user="{erin}"]').inner_text()
    assert re.fullmatch(r"\d{6}", code)
    screenshot(page, "admin-pairing-code")

    other = chromium.new_context(viewport={"width": 1280, "height": 820})
    try:
        chat = other.new_page()
        chat.goto(chat_server.url + "/")
        chat.fill("#pairing-code", code)
        chat.click("#pairing-submit")
        wait_online(chat)
        chat.locator("#account-name").filter(has_text=erin).wait_for()
        send(chat, "paired by the admin")
        wait_turn_end(chat, 1, "done")
        assert "Echo: paired by the admin" in last_answer(chat).inner_text()
    finally:
        other.close()

    # The list counts erin's session and device; her page shows the device, with a Revoke button.
    page.goto(chat_server.url + "/admin/auth/user/")
    row = page.locator("#result_list tr", has=page.get_by_role("link", name=erin, exact=True))
    assert row.locator("td.field-session_count").inner_text() == "1"
    assert row.locator("td.field-device_count").inner_text() == "1"
    screenshot(page, "admin-users")
    page.get_by_role("link", name=erin, exact=True).click()
    page.wait_for_load_state()
    assert page.get_by_role("button", name=re.compile(r"^Revoke ")).count() == 1
    screenshot(page, "admin-user", full_page=True)

