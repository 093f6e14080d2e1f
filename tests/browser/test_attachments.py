"""Attachments on the chat page, in Chromium, against the real server and the mock provider:
attach by the paperclip and by paste, chips and progress, send, the thumbnail, what the model got,
and the files again after a reload."""

import base64

import httpx

from tests.browser.helpers import open_paired, screenshot, send, session_id_of, wait_for, wait_turn_end

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG).decode()

PASTE_IMAGE = """(b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], "pasted.png", { type: "image/png" }));
  const input = document.querySelector("#input");
  input.focus();
  input.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
}"""


def _mock_requests(mock):
    root = mock.openai_url.removesuffix("/v1")
    return [entry for entry in httpx.get(root + "/_mock/requests", timeout=5).json()
            if entry["_path"].endswith("/chat/completions")]


def _asks(request, question):
    """Whether the last user message of a logged provider request ends with `question`."""
    users = [m for m in request.get("messages", ()) if m.get("role") == "user"]
    content = users[-1]["content"] if users else ""
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    return any(part.get("type") == "text" and part.get("text") == question for part in parts)


def _chips(page):
    return page.locator("#attach-chips li")


def test_attach_by_button_and_paste_send_and_see_the_thumbnail(chat_server, page, token, mock_llm_process,
                                                               tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello from a file\n")
    spare = tmp_path / "spare.txt"
    spare.write_text("not sent")
    open_paired(page, chat_server, token)
    session_id = session_id_of(page)

    # The paperclip opens the file picker; the upload is held back a moment to see its progress bar.
    held = []
    page.route("**/attachments/", lambda route: held.append(route) if route.request.method == "POST"
               else route.continue_())
    with page.expect_file_chooser() as chooser:
        page.click("#attach")
    chooser.value.set_files([str(notes)])
    page.wait_for_selector("#attach-progress:not([hidden])")
    assert _chips(page).first.get_attribute("data-state") == "uploading"
    wait_for(lambda: held, page=page)
    held[0].continue_()
    page.unroute("**/attachments/")
    page.wait_for_selector("#attach-chips li[data-state=ready]")
    page.wait_for_selector("#attach-progress", state="hidden")

    # A pasted screenshot, and one more file removed again before sending.
    page.evaluate(PASTE_IMAGE, PNG_B64)
    with page.expect_file_chooser() as chooser:
        page.click("#attach")
    chooser.value.set_files([str(spare)])
    page.wait_for_function("() => document.querySelectorAll('#attach-chips li[data-state=ready]').length === 3")
    names = _chips(page).locator(".chip-name").all_inner_texts()
    assert names == ["notes.txt", "pasted.png", "spare.txt"]
    assert _chips(page).nth(0).locator(".chip-size").inner_text() == "18 B"
    spare_id = _chips(page).nth(2).get_attribute("data-attachment-id")
    page.click("#attach-chips li:nth-child(3) .chip-remove")
    assert _chips(page).count() == 2
    screenshot(page, "attachments-chips")

    send(page, "What are these?")
    wait_turn_end(page, 1, "done")
    assert page.locator("#attach-tray").is_hidden()

    question = page.locator("article.msg.user").last
    thumb = question.locator("img.attachment-thumb")
    thumb.wait_for()
    page.wait_for_function("(img) => img.complete && img.naturalWidth === 1", arg=thumb.element_handle())
    assert thumb.get_attribute("src").startswith("blob:")
    assert thumb.get_attribute("alt") == "pasted.png"
    assert question.locator("a.attachment.file").inner_text() == "notes.txt (18 B)"
    screenshot(page, "attachments-sent")

    # The model got the image and the file's text, in front of the question.
    # Found by the question, not by position: the mock keeps its last 50 requests only, and
    # it is shared with the worker's earlier tests.
    requests = wait_for(lambda: [r for r in _mock_requests(mock_llm_process) if _asks(r, "What are these?")])
    content = [m for m in requests[-1]["messages"] if m["role"] == "user"][-1]["content"]
    assert content == [
        {"type": "text", "text": "[Attached file: notes.txt (18 bytes, text/plain)]\n"
                                 "hello from a file\n\n[End of file: notes.txt]"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG_B64}},
        {"type": "text", "text": "What are these?"},
    ]
    # The removed file is gone from the server too.
    listed = httpx.get(f"{chat_server.url}/api/sessions/{session_id}/attachments/",
                       headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    assert [a["name"] for a in listed["attachments"]] == ["notes.txt", "pasted.png"]
    assert spare_id not in [a["id"] for a in listed["attachments"]]

    # Resumed: the history shows the attachments again.
    page.reload()
    page.wait_for_selector("#conn[data-state=online]")
    thumb = page.locator("article.msg.user img.attachment-thumb")
    thumb.wait_for()
    page.wait_for_function("(img) => img.complete && img.naturalWidth === 1", arg=thumb.element_handle())
    assert page.locator("article.msg.user a.attachment.file").inner_text() == "notes.txt (18 B)"


def test_dropping_a_file_on_the_conversation_attaches_it(chat_server, page, token):
    open_paired(page, chat_server, token)
    page.evaluate("""() => {
      const data = new DataTransfer();
      data.items.add(new File(["dropped text"], "dropped.txt", { type: "text/plain" }));
      const target = document.querySelector("#messages");
      target.dispatchEvent(new DragEvent("dragover", { dataTransfer: data, bubbles: true, cancelable: true }));
      target.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
    }""")
    page.wait_for_selector("#attach-chips li[data-state=ready]")
    assert _chips(page).locator(".chip-name").all_inner_texts() == ["dropped.txt"]
