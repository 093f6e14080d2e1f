"""The `approval` frame's checks: whatever a client sends is APPROVAL_INVALID, never a crash."""

import pytest

from chat.protocol import parse_approval
from construct_core.errors import ApprovalInvalid


def test_a_well_formed_answer_is_taken_as_sent():
    frame = {"type": "approval", "approval_id": "ap_1", "decision": "approve",
             "args": {"command": "ls -la", "nested": [{"k": "v"}]}}
    assert parse_approval(frame) == ("ap_1", "approve", frame["args"])
    assert parse_approval({"approval_id": "ap_1", "decision": "deny"}) == ("ap_1", "deny", None)


@pytest.mark.parametrize("args", [
    {"command": "ls\x00 /etc"},                 # jsonb refuses NUL (it was a database error)
    {"k\x00": "v"},
    {"deep": [{"x": ["\x00"]}]},
    {"command": "\ud800"},                     # a lone surrogate is not UTF-8
])
def test_args_a_database_cannot_keep_are_approval_invalid(args):
    with pytest.raises(ApprovalInvalid) as caught:
        parse_approval({"approval_id": "ap_1", "decision": "approve", "args": args})
    assert caught.value.code == "APPROVAL_INVALID"

