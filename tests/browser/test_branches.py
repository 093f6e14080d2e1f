"""Edit, regenerate and versions on the chat page, in Chromium against real daphne and the mock LLM:
a question edited in place, an answer regenerated, ◀ ▶ between versions, and a second tab that
follows every switch live.
"""

from playwright.sync_api import expect

from tests.browser.conftest import PageErrors
from tests.browser.helpers import api, open_paired, send, session_id_of

def question(page):
    return page.locator("article.msg.user").last


def answer(page):
    return page.locator("article.msg.assistant").last


def answer_is(page, text):
    expect(answer(page).locator(".answer")).to_have_text(text, timeout=20_000)
    expect(answer(page)).to_have_attribute("aria-busy", "false", timeout=20_000)


def test_edit_regenerate_and_step_between_versions_in_two_tabs(context, chat_server, token):
    one = context.new_page()
    errors_one = PageErrors(one)
    open_paired(one, chat_server, token)  # a new chat: stored with its first message
    send(one, "first question")
    session = session_id_of(one)
    answer_is(one, "Echo: first question")

    two = context.new_page()
    errors_two = PageErrors(two)
    open_paired(two, chat_server, token, f"/?session={session}")
    answer_is(two, "Echo: first question")

    # Edit the question in place: Save & send makes a second version of it.
    question(one).locator(".edit-btn").click()
    one.locator(".edit-box").fill("second question")
    one.locator(".edit-save").click()
    answer_is(one, "Echo: second question")
    expect(question(one).locator(".branch-pos")).to_have_text("2/2")
    expect(question(one).locator(".md")).to_have_text("second question")
    answer_is(two, "Echo: second question")
    expect(question(two).locator(".branch-pos")).to_have_text("2/2")
    expect(one.locator("article.msg.user")).to_have_count(1)
    expect(two.locator("article.msg.user")).to_have_count(1)

    # Regenerate the answer: two versions of it, the new one shown.
    status, body = api(chat_server, token, "GET", f"/api/sessions/{session}/messages/")
    first_answer = body["messages"][-1]["id"]
    answer(one).locator(".regen-btn").click()
    expect(answer(one).locator(".branch-pos")).to_have_text("2/2", timeout=20_000)
    expect(answer(two).locator(".branch-pos")).to_have_text("2/2", timeout=20_000)
    status, body = api(chat_server, token, "GET", f"/api/sessions/{session}/messages/")
    assert status == 200 and body["messages"][-1]["id"] != first_answer
    assert body["messages"][-1]["sibling_ids"] == [first_answer, body["messages"][-1]["id"]]

    # ◀ on the answer: its first version, in both tabs.
    answer(one).locator(".branch-prev").click()
    for page in (one, two):
        expect(answer(page).locator(".branch-pos")).to_have_text("1/2")
        answer_is(page, "Echo: second question")
    status, body = api(chat_server, token, "GET", f"/api/sessions/{session}/messages/")
    assert body["messages"][-1]["id"] == first_answer

    # ◀ on the question: the first question and its answer, in both tabs; ▶ from the other tab.
    question(one).locator(".branch-prev").click()
    for page in (one, two):
        expect(question(page).locator(".md")).to_have_text("first question")
        expect(question(page).locator(".branch-pos")).to_have_text("1/2")
        answer_is(page, "Echo: first question")
    question(two).locator(".branch-next").click()
    for page in (one, two):
        expect(question(page).locator(".md")).to_have_text("second question")
        expect(question(page).locator(".branch-pos")).to_have_text("2/2")
        # The newest leaf under that question: the regenerated answer.
        expect(answer(page).locator(".branch-pos")).to_have_text("2/2")

    # Cancel leaves the question as it was.
    question(two).locator(".edit-btn").click()
    two.locator(".edit-box").fill("never sent")
    two.locator(".edit-cancel").click()
    expect(two.locator(".edit-box")).to_have_count(0)
    expect(question(two).locator(".md")).to_have_text("second question")

    # And a plain message continues the branch on the page.
    send(one, "third question")
    answer_is(one, "Echo: third question")
    status, body = api(chat_server, token, "GET", f"/api/sessions/{session}/messages/")
    assert [m["content"] for m in body["messages"]][::2] == ["second question", "third question"]
    assert errors_one.errors == [] and errors_two.errors == []
