"""Operator events in Chromium: readable lines (what, which chat, when) for a turn's start, its
end and a provider error, kept across a reload, and by the server for a new browser."""

from tests.browser.helpers import api, open_paired, screenshot, send, session_id_of, wait_for, wait_turn_end


def rows(page):
    return page.locator("#event-list .event").evaluate_all(
        "items => items.map(i => ({type: i.dataset.type,"
        " word: i.querySelector('.event-word').textContent,"
        " session: i.querySelector('.event-session')?.textContent || '',"
        " what: i.querySelector('.event-what').textContent,"
        " time: i.querySelector('time').textContent}))")


def without_time(events):
    """The lines as a page that got them from the server shows them: the time is the server's,
    which may be a second off the one a live page noted."""
    return [{key: value for key, value in event.items() if key != "time"} for event in events]


def test_turns_and_errors_are_readable_lines_kept_across_a_reload(chat_server, token, page, chromium):
    page.set_viewport_size({"width": 1366, "height": 860})
    open_paired(page, chat_server, token)
    send(page, "Plan the **garden** party")
    wait_turn_end(page, 1, "done")
    session_id = session_id_of(page)
    send(page, "[[fail=500]] this one fails")
    wait_turn_end(page, 2, "error")
    status, _ = api(chat_server, token, "POST", "/api/channel-events/", {"type": "deploy", "note": "from ops"})
    assert status == 202

    page.click("#toggle-events")
    wait_for(lambda: len(rows(page)) >= 5)
    # A line names its chat once the list of chats (reloaded after the turn) knows the title.
    wait_for(lambda: {e["session"] for e in rows(page)[1:5]} == {"Plan the garden party"})
    events = rows(page)  # newest first
    assert [e["type"] for e in events[:5]] == ["deploy", "error", "agent_start", "agent_end", "agent_start"]
    deploy, error, _, end, start = events[:5]
    assert (start["word"], end["word"], error["word"]) == ("Started", "Finished", "Error")
    # Which chat, by its name (a link to it), and when.
    assert start["session"] == end["session"] == error["session"] == "Plan the garden party"
    assert all(e["time"].count(":") == 2 for e in events[:5])
    assert start["what"].startswith("Answering with") and end["what"].startswith("Answered in")
    assert error["what"] and "{" not in error["what"]
    assert deploy["word"] == "Event" and "from ops" in deploy["what"] and deploy["session"] == ""
    # The raw event is there for the curious, folded.
    assert page.locator("#event-list .event").first.locator("pre").is_hidden()
    screenshot(page, "operator-events-light")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "operator-events-dark")
    page.emulate_media(color_scheme="light")

    page.reload()
    page.wait_for_selector("#conn[data-state=online]")
    page.click("#toggle-events")
    wait_for(lambda: without_time(rows(page)[:5]) == without_time(events[:5]))

    # Another browser (a context of its own: no storage of this tab's): the server's list, in
    # the same order.
    other = chromium.new_context(viewport={"width": 1366, "height": 860})
    try:
        fresh = other.new_page()
        open_paired(fresh, chat_server, token)
        fresh.click("#toggle-events")
        wait_for(lambda: without_time(rows(fresh)[:5]) == without_time(events[:5]))
        assert all(e["time"].count(":") == 2 for e in rows(fresh)[:5])
    finally:
        other.close()

    # A line's chat link opens that chat.
    page.goto(chat_server.url + "/")
    page.wait_for_selector("#conn[data-state=online]")
    page.click("#toggle-events")
    page.locator("#event-list .event-session").first.click()
    wait_for(lambda: session_id_of(page) == session_id)
    page.locator("article.msg.assistant").first.wait_for()
