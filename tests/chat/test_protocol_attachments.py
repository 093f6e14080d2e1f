"""The `attachments` field of a `message` frame, read as upstream does: never a reason to refuse."""

import pytest

from chat.protocol import parse_attachments


@pytest.mark.parametrize(("field", "ids"), [
    (None, []),
    ("abc", []),
    ({"a": 1}, []),
    (["a", 1, None, ["b"], {"c": 1}, "", "a", "b", "x" * 65, "nul\x00", "\ud800"], ["a", "b"]),
    ([f"id{i}" for i in range(30)], [f"id{i}" for i in range(10)]),
])
def test_the_socket_field_is_read_defensively(field, ids):
    frame = {"type": "message", "content": "hi"}
    if field is not None:
        frame["attachments"] = field
    assert parse_attachments(frame, 10) == ids
