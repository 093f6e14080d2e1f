"""The session list in Chromium: names from the first message, counts of questions and answers,
groups by day in the browser's time zone, and message times with their date when not today."""

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from tests.browser.helpers import (api, open_paired, screenshot, send, session_id_of, wait_for,
                                   wait_online, wait_turn_end)
from tests.support.daphne import REPO_ROOT, server_env

AGE_SESSION = (
    "import os; from datetime import datetime; from sessions_app.models import ChatSession, Message; "
    "when = datetime.fromisoformat(os.environ['AGE_WHEN']); "
    "ChatSession.objects.filter(pk=os.environ['AGE_ID']).update(last_activity=when, created_at=when); "
    "Message.objects.filter(session_id=os.environ['AGE_ID']).update(created_at=when)"
)


def age(server, session_id, when):
    """Move a session and its messages back in time, in the server's database."""
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", AGE_SESSION], cwd=REPO_ROOT,
        env=server_env({**server.env, "AGE_ID": session_id, "AGE_WHEN": when.isoformat()}),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=True,
    )


@pytest.fixture
def context(chromium):
    # A time zone far from UTC: the groups follow the browser's calendar day, not the server's.
    context = chromium.new_context(viewport={"width": 1366, "height": 860}, timezone_id="Pacific/Kiritimati")
    context.set_default_timeout(15_000)
    yield context
    context.close()


def new_chat(page):
    page.keyboard.press("Control+Shift+O")
    page.locator("#welcome").wait_for(state="visible")
    wait_online(page)


def test_names_counts_groups_and_dates(chat_server, token, page):
    open_paired(page, chat_server, token)
    send(page, "## Plan a **trip** to   [Lisbon](https://example.com)\n\nfor five days")
    wait_turn_end(page, 1, "done")
    named = session_id_of(page)
    item = page.locator(f'.session-item[data-session-id="{named}"]')
    wait_for(lambda: item.locator(".session-name").inner_text() == "Plan a trip to Lisbon for five days")
    wait_for(lambda: page.locator("#session-title").inner_text() == "Plan a trip to Lisbon for five days")
    # The list reloads once the turn ended (150 ms after `done`): the answer counts then.
    wait_for(lambda: item.locator(".session-count").inner_text() == "2 messages")
    assert item.locator(".badge").count() == 0  # idle: no badge

    new_chat(page)
    send(page, '[[tool:file_list {}]] the files are listed ' + "and described at length " * 6)
    wait_turn_end(page, 1, "done")
    tools = session_id_of(page)
    assert tools != named
    item = page.locator(f'.session-item[data-session-id="{tools}"]')
    wait_for(lambda: item.locator(".session-name").inner_text().endswith("…"))
    name = item.locator(".session-name").inner_text()
    assert len(name) <= 60 and name.startswith("[[tool:file_list {}]] the files are listed")
    status, session = api(chat_server, token, "GET", f"/api/sessions/{tools}/")
    assert status == 200 and session["message_count"] > 2  # the tool call and its result are rows
    wait_for(lambda: item.locator(".session-count").inner_text() == "2 messages")

    # Three more chats, moved back to yesterday, four days ago and a month ago (browser's day).
    ids = {}
    for label in ("yesterday", "four days ago", "last month"):
        new_chat(page)
        send(page, f"a chat from {label}")
        wait_turn_end(page, 1, "done")
        ids[label] = session_id_of(page)
    local = datetime.now(timezone(timedelta(hours=14)))  # Kiritimati: UTC+14, no daylight saving
    noon = local.replace(hour=12, minute=0, second=0, microsecond=0)
    age(chat_server, ids["yesterday"], noon - timedelta(days=1))
    age(chat_server, ids["four days ago"], noon - timedelta(days=4))
    age(chat_server, ids["last month"], noon - timedelta(days=31))

    page.goto(chat_server.url + f"/?session={ids['four days ago']}")
    wait_online(page)
    page.locator("article.msg.assistant").first.wait_for()
    groups = page.locator("#session-list .session-group-title").all_inner_texts()
    assert [g.lower() for g in groups] == ["today", "yesterday", "previous 7 days", "older"]
    order = page.locator("#session-list > li").evaluate_all(
        "items => items.map(i => i.dataset.sessionId || i.textContent.trim().toLowerCase())")
    assert order == ["today", tools, named, "yesterday", ids["yesterday"], "previous 7 days",
                     ids["four days ago"], "older", ids["last month"]]
    # Four days ago: the messages say which day, not only the time.
    stamp = page.locator("article.msg.user time").first.inner_text()
    day = (noon - timedelta(days=4)).strftime("%b")
    assert day in stamp and ":" in stamp, stamp
    screenshot(page, "session-list-groups-light")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "session-list-groups-dark")
