"""A conversation is a tree: what a turn answers, and the `history` frame of the active branch.

A plain message continues the active branch. An edit of user message N is a
new user message beside N (same parent), and a regenerate answers the last
user message of the active branch again, beside its current answer. Either
way the new branch becomes active, and every socket of the session gets a
`history` frame with the whole active branch before the turn's first event.
A switch to another branch (`switch_branch`, or REST) sends the same frame.
"""

from dataclasses import dataclass

from channels.db import database_sync_to_async

from construct_core.errors import MessageNotFound, NothingToRegenerate, NotEditable
from sessions_app import selectors
from sessions_app.exports import message_document
from sessions_app.models import Message

MESSAGE = "message"
EDIT = "edit"
REGENERATE = "regenerate"


@dataclass(frozen=True, slots=True)
class Ask:
    """What a turn answers: a new message, an edit of user message `message_id`, or a
    regenerate of the active branch's last answer."""

    kind: str = MESSAGE
    message_id: int | None = None


PLAIN = Ask()


def ask_target(session_id: str, ask: Ask) -> Message | None:
    """The message an edit or a regenerate is about (sync; raises what the client is told).

    Edit: the user message edited (MessageNotFound when it is not the
    session's, NotEditable when it is not a user message). Regenerate: the
    last user message of the active branch (NothingToRegenerate without one).
    A plain message: None.
    """
    if ask.kind == EDIT:
        message = selectors.message_get(session_id=session_id, message_id=ask.message_id)
        if message is None:
            raise MessageNotFound(f"No message {ask.message_id} in this session")
        if message.role != Message.Role.USER:
            raise NotEditable(f"Message {ask.message_id} is a {message.role} message: only a user "
                              "message can be edited")
        return message
    if ask.kind == REGENERATE:
        message = selectors.last_user_message(session_id=session_id)
        if message is None:
            raise NothingToRegenerate("There is no user message to answer again")
        return message
    return None


def history_frame_sync(session_id: str, leaf_id: int | None = None) -> dict:
    """The `history` frame: the active branch (or the branch ending at `leaf_id`), in order."""
    messages = selectors.branch_messages(session_id=session_id, leaf_id=leaf_id)
    return {
        "type": "history",
        "leaf_id": messages[-1].pk if messages else None,
        "messages": [message_document(message) for message in messages],
    }


history_frame = database_sync_to_async(history_frame_sync)
