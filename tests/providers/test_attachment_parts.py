"""What the model gets for attachments: the agent's neutral parts (no Django), and each
provider's wire shape of them, through the official SDKs to the mock provider."""

import base64

import pytest

from chat.agent.attachments import (
    TEXT_CHAR_LIMIT, TEXT_READ_BYTES, AttachedFile, bytes_to_read, content_with_attachments,
)
from tests.providers.helpers import collect, make_provider, text_of

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG).decode()


def test_a_text_file_is_inlined_between_its_markers():
    content = content_with_attachments(
        [AttachedFile("a.txt", "text/plain", 6, b"hello\n")], "Summarise it")
    assert content == "[Attached file: a.txt (6 bytes, text/plain)]\nhello\n\n[End of file: a.txt]\n\nSummarise it"


def test_a_long_text_is_cut_at_200000_characters_even_when_multibyte():
    text = "é" * (TEXT_CHAR_LIMIT + 5)
    data = text.encode()[:TEXT_READ_BYTES]  # what the turn reads of it
    content = content_with_attachments([AttachedFile("big.txt", "text/plain", len(text.encode()), data)], "q")
    assert content == (f"[Attached file: big.txt ({len(text.encode())} bytes, text/plain)]\n"
                       + "é" * TEXT_CHAR_LIMIT + "\n[…truncated at 200000 chars]\n[End of file: big.txt]\n\nq")
    exact = "x" * TEXT_CHAR_LIMIT
    content = content_with_attachments([AttachedFile("f.txt", "text/plain", TEXT_CHAR_LIMIT, exact.encode())], "q")
    assert "truncated" not in content


def test_binary_unavailable_and_image_parts_in_order():
    content = content_with_attachments([
        AttachedFile("x.bin", "application/zip", 10, b""),
        AttachedFile("shot.png", "image/png", len(PNG), PNG),
        AttachedFile("gone.txt", "text/plain", 3, None),
        AttachedFile("gone.png", "image/png", 3, None),
    ], "look")
    assert content == [
        {"type": "text", "text": "[Attached binary file: x.bin (10 bytes, application/zip) — content not inlined]"},
        {"type": "image", "media_type": "image/png", "data": PNG_B64},
        {"type": "text", "text": "[Attached file unavailable: gone.txt (text/plain)]\n\n"
                                 "[Attached file unavailable: gone.png (image/png)]\n\nlook"},
    ]


def test_what_the_turn_reads_of_each_kind():
    assert bytes_to_read("image/webp") is None
    assert bytes_to_read("text/plain") == TEXT_READ_BYTES
    assert bytes_to_read("application/pdf") == 0
    # An image type no model is shown is a binary file to it.
    assert content_with_attachments([AttachedFile("i.bmp", "image/bmp", 4, b"")], "q").startswith(
        "[Attached binary file: i.bmp (4 bytes, image/bmp)")


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_an_image_reaches_the_provider_in_its_own_shape(kind, clean_mock_llm):
    provider = make_provider(kind, clean_mock_llm)
    content = content_with_attachments([AttachedFile("shot.png", "image/png", len(PNG), PNG)], "What is this?")
    try:
        events = await collect(provider, [
            {"role": "user", "content": content},
            {"role": "assistant", "content": "A pixel."},
            {"role": "user", "content": "Sure?"},
        ])
    finally:
        await provider.aclose()
    assert text_of(events) == "Echo: Sure?"
    sent = clean_mock_llm.last_request()["messages"][0]
    if kind == "openai":
        image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}
    else:
        image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
    assert sent == {"role": "user", "content": [image, {"type": "text", "text": "What is this?"}]}


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_text_only_attachments_stay_a_plain_string(kind, clean_mock_llm):
    provider = make_provider(kind, clean_mock_llm)
    content = content_with_attachments([AttachedFile("a.txt", "text/plain", 2, b"hi")], "[[echo_prompt]]")
    try:
        events = await collect(provider, [{"role": "user", "content": content}])
    finally:
        await provider.aclose()
    assert clean_mock_llm.last_request()["messages"][-1]["content"] == content
    assert text_of(events) == content
