"""The admin's page of a session in Chromium: a long conversation fits a 1366 px screen."""

import secrets

from tests.browser.helpers import (
    axe_violations, create_user, open_paired, screenshot, send, session_id_of, wait_turn_end,
)

WIDTH = 1366
LONG_WORD = "https://example.com/" + "x" * 1500  # no space to break at
LONG_TEXT = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 30 for i in range(40))


def sign_in_to_admin(page, server):
    username, password = f"op{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    create_user(server, username, password, superuser=True)
    page.goto(server.url + "/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_load_state()


def test_a_long_conversation_fits_the_admin_page_at_1366(chat_server, token, page, context):
    page.set_viewport_size({"width": WIDTH, "height": 860})
    open_paired(page, chat_server, token)
    send(page, f"[[echo_prompt]] {LONG_WORD}\n\n```python\nprint('{'y' * 400}')\n```")
    wait_turn_end(page, 1, "done")
    session = session_id_of(page)
    send(page, '[[tool:shell {"command": "echo ' + "z" * 600 + '"}]] ran it')
    wait_turn_end(page, 2, "done")
    send(page, "[[chunks=3]] " + LONG_TEXT)
    wait_turn_end(page, 3, "done")
    for n in range(4, 9):
        send(page, f"short question {n}")
        wait_turn_end(page, n, "done")

    admin = context.new_page()
    admin.set_viewport_size({"width": WIDTH, "height": 860})
    sign_in_to_admin(admin, chat_server)
    admin.goto(f"{chat_server.url}/admin/sessions_app/chatsession/{session}/change/")
    rows = admin.locator(".inline-group tbody tr.has_original, .inline-group tbody tr.form-row")
    assert rows.count() >= 18  # 8 questions, 8 answers, a tool call's result
    for scheme in ("light", "dark"):
        admin.emulate_media(color_scheme=scheme)
        assert admin.evaluate("document.documentElement.scrollWidth") <= WIDTH
        violations = axe_violations(admin)
        assert violations == [], (scheme, violations)
        screenshot(admin, f"admin-conversation-{scheme}", full_page=True)
        admin.locator(".inline-group tbody tr", has_text="short question 5").first.scroll_into_view_if_needed()
        screenshot(admin, f"admin-conversation-rows-{scheme}")
    # No tall empty rows: each row is as tall as its tallest cell's content and its padding.
    slack = admin.locator(".inline-group tbody tr.has_original").evaluate_all(
        "rows => rows.map(r => r.getBoundingClientRect().height - Math.max(...[...r.cells].map("
        "td => [...td.children].reduce((h, c) => h + c.getBoundingClientRect().height, 0))))")
    assert len(slack) >= 18 and max(slack) <= 24, slack
    # The content column has the room: wider than the details one.
    assert (admin.locator("th.column-text").bounding_box()["width"]
            > admin.locator("th.column-details").bounding_box()["width"])
    # A very long message is folded, all of it a click away.
    cell = admin.locator("td.field-text", has_text="Paragraph 0: lorem").first
    assert "Paragraph 39" not in cell.inner_text()
    cell.get_by_text(f"Show all {len('[[chunks=3]] ' + LONG_TEXT):,} characters").click()
    assert "Paragraph 39" in cell.inner_text()
    assert cell.locator(".content-preview").is_hidden()
    assert admin.evaluate("document.documentElement.scrollWidth") <= WIDTH
    admin.close()
