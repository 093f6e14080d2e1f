"""A chat's title from its first message: cleaned of Markdown, cut to a short line at a word."""

import pytest

from sessions_app import services
from sessions_app.models import ChatSession
from sessions_app.services import TITLE_MAX_CHARS, title_of
from tests.factories import make_session


@pytest.mark.parametrize("text, title", [
    ("  # Hello   **world**\n\nhow are _you_?", "Hello world how are you?"),
    ("What does this [code](https://example.com/x) do?", "What does this code do?"),
    ("```python\nprint(1)\n```\nexplain", "print(1) explain"),
    ("- item one\n- item two", "item one item two"),
    ("> quoted `inline` text", "quoted inline text"),
    ("3 * 4 = 12", "3 * 4 = 12"),
    ("", ""),
])
def test_markdown_and_whitespace_are_taken_out(text, title):
    assert title_of(text) == title


def test_a_long_message_is_cut_at_a_word():
    text = "Please summarise " + "the quarterly report " * 10
    title = title_of(text)
    assert len(title) <= TITLE_MAX_CHARS and title.endswith("…")
    assert text.startswith(title[:-1]) and text[len(title) - 1] == " "
    assert title_of("x" * 100) == "x" * (TITLE_MAX_CHARS - 1) + "…"


@pytest.mark.django_db
def test_the_first_user_message_names_an_unnamed_chat_once():
    make_session(session_id="s")
    services.message_append(session_id="s", role="user", content="## Plan a **trip** to Lisbon")
    services.message_append(session_id="s", role="assistant", content="Sure.")
    services.message_append(session_id="s", role="user", content="second question")
    assert ChatSession.objects.get(pk="s").name == "Plan a trip to Lisbon"


@pytest.mark.django_db
def test_a_named_chat_keeps_its_name():
    make_session(session_id="s", name="Mine")
    services.message_append(session_id="s", role="user", content="hello")
    assert ChatSession.objects.get(pk="s").name == "Mine"


# --- a title the model proposes -------------------------------------------------------


@pytest.mark.parametrize("reply, name", [
    ('"Garden Party Plans"', "Garden Party Plans"),
    ("Title: **Lisbon trip**.\nThis title sums it up.", "Lisbon trip"),
    ("\n\n  “Quarterly report summary”  \n", "Quarterly report summary"),
    ("# A `heading` title", "A heading title"),
    ("word " * 40, title_of("word " * 40)),
    ("''", ""),
    ("", ""),
])
def test_a_proposed_title_is_one_clean_short_line(reply, name):
    cleaned = services.title_clean(reply)
    assert cleaned == name
    assert len(cleaned) <= TITLE_MAX_CHARS and "\n" not in cleaned


@pytest.mark.django_db
def test_the_models_title_replaces_the_first_messages_until_a_person_renames():
    make_session(session_id="s")
    services.message_append(session_id="s", role="user", content="plan a trip")
    assert ChatSession.objects.get(pk="s").auto_named

    assert services.session_title_set(session_id="s", title="Trip planning") == "Trip planning"
    assert ChatSession.objects.get(pk="s").name == "Trip planning"

    services.session_rename(session_id="s", name="Mine")
    assert services.session_title_set(session_id="s", title="Another title") is None
    assert ChatSession.objects.get(pk="s").name == "Mine"


@pytest.mark.django_db
def test_a_chat_named_by_its_client_gets_no_title_from_the_model():
    make_session(session_id="s")
    services.session_open(session_id="s", user_id=ChatSession.objects.get(pk="s").user_id, name="Given")
    services.message_append(session_id="s", role="user", content="plan a trip")

    assert services.session_title_set(session_id="s", title="Trip planning") is None
    assert ChatSession.objects.get(pk="s").name == "Given"


def test_a_proposed_title_never_holds_a_registered_secret():
    from construct_core.redaction import register_secret

    key = "sk-unit-TITLE-Jq8Ww2Pz5"
    register_secret(key)
    assert key not in services.title_clean(f"Title: {key} leak")
