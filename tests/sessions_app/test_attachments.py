"""Attachments in the domain: names, references a message keeps (and skips), the history budget,
and what the socket's `attachments` field may hold."""

import logging
from pathlib import Path

import pytest

from sessions_app import attachments, selectors, services
from sessions_app.attachments import IMAGE_TOKENS, attachment_refs, attachment_store, name_clean
from sessions_app.models import Attachment
from tests.factories import make_session, make_user

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("raw", "clean"), [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\shot.png", "shot.png"),
    ("evil\u202egpj.exe", "evilgpj.exe"),
    ("tab\tand\nnewline.txt", "tab and newline.txt"),
    ("..", "attachment"),
    ("", "attachment"),
    ("   ", "attachment"),
    ("nul\x00byte.txt", "nulbyte.txt"),
    ("x" * 300 + ".tar.gz", "x" * (255 - 3) + ".gz"),
])
def test_names_are_cleaned_and_never_paths(raw, clean):
    assert name_clean(raw) == clean
    assert len(name_clean(raw)) <= 255


def _store(tmp_path, session_id, name, data, user=None):
    source = tmp_path / f"upload-{name}"
    source.write_bytes(data)
    user_id = (user or services.default_owner()).pk
    return attachment_store(session_id=session_id, user_id=user_id, source=source, name=name)


def test_refs_keep_the_sessions_own_in_order_and_log_the_rest(tmp_path, caplog):
    mine = [_store(tmp_path, "mine", f"{i}.txt", b"x" * 10) for i in range(3)]
    theirs = _store(tmp_path, "theirs", "t.txt", b"t")
    attachments.attachment_path(mine[1]).unlink()  # its file is gone

    with caplog.at_level(logging.WARNING, logger="sessions_app.attachments"):
        refs = attachment_refs(session_id="mine", ids=[mine[2].id, theirs.id, mine[1].id, mine[0].id,
                                                        mine[2].id, "nope"])

    assert refs == [attachments.attachment_document(mine[2]), attachments.attachment_document(mine[0])]
    assert refs[0] == {"id": mine[2].id, "name": "2.txt", "mime": "text/plain", "size": 10}
    logged = "\n".join(caplog.messages)
    assert f"attachment {theirs.id!r} skipped: not an attachment of this session" in logged
    assert f"attachment {mine[1].id} skipped: its file is gone" in logged
    assert "'nope' skipped" in logged


def test_refs_are_capped_by_count_and_total_size(tmp_path, settings, caplog):
    settings.CONSTRUCT_MAX_ATTACHMENTS_PER_MESSAGE = 2
    settings.CONSTRUCT_MAX_MESSAGE_ATTACHMENT_BYTES = 25
    small = [_store(tmp_path, "caps", f"{i}.txt", b"y" * 10) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="sessions_app.attachments"):
        assert [r["id"] for r in attachment_refs(session_id="caps", ids=[a.id for a in small])] == \
            [small[0].id, small[1].id]
        settings.CONSTRUCT_MAX_ATTACHMENTS_PER_MESSAGE = 10
        assert [r["id"] for r in attachment_refs(session_id="caps", ids=[a.id for a in small])] == \
            [small[0].id, small[1].id]  # the third would make 30 bytes
    assert any("past 2 skipped" in line for line in caplog.messages)
    assert any("would pass 25 bytes" in line for line in caplog.messages)


def test_another_users_session_id_is_refused_by_the_store(tmp_path):
    stranger = make_user()
    make_session(session_id="their", user=stranger)
    with pytest.raises(services.SessionOfAnotherUser):
        _store(tmp_path, "their", "a.txt", b"a")
    assert not Attachment.objects.exists()


def test_the_history_budget_counts_an_image_at_its_fixed_estimate_newest_first(tmp_path):
    shot = _store(tmp_path, "budget", "shot.png", _png())
    ref = attachments.attachment_document(shot)
    services.messages_append(session_id="budget", messages=[
        {"role": "user", "content": "old question", "data": {"attachments": [ref]}},
        {"role": "assistant", "content": "old answer"},
        {"role": "user", "content": "new question"},
    ])
    history, dropped = selectors.history_for_provider(session_id="budget", token_budget=IMAGE_TOKENS)
    # The image does not fit beside the newer messages: its message is left out, not them.
    assert [m["content"] for m in history] == ["new question"]
    assert dropped == 2
    history, dropped = selectors.history_for_provider(session_id="budget", token_budget=IMAGE_TOKENS + 100)
    assert [m["content"] for m in history] == ["old question", "old answer", "new question"]
    assert history[0]["attachments"] == [ref]
    assert "attachments" not in history[2]
    assert selectors.estimate_tokens(history[0]) >= IMAGE_TOKENS


def test_a_text_file_costs_its_text_up_to_the_cut():
    assert attachments.attachments_tokens([{"id": "a", "name": "a", "mime": "text/plain",
                                            "size": 4_000}]) == 1_000 + attachments.MARKER_TOKENS
    huge = attachments.attachments_tokens([{"id": "a", "name": "a", "mime": "text/plain",
                                            "size": 10_000_000}])
    assert huge == 50_000 + attachments.MARKER_TOKENS
    assert attachments.attachments_tokens("junk") == 0


def _png() -> bytes:
    import base64

    return base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    )


def test_files_live_under_the_media_root(tmp_path, media_root):
    stored = _store(tmp_path, "where", "a.txt", b"a")
    path = attachments.attachment_path(stored)
    assert Path(path).is_relative_to(media_root)
    assert path.parent.name == attachments.session_folder_name("where") != "where"
