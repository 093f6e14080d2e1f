"""The history window a session's next turn sends, kept in memory between its turns.

Every turn sends the provider the newest messages of the active branch that
fit the token budget (selectors.history_for_provider). Read from the database
each time, that costs what the window holds: in a long session a turn's
set-up grew with the session (a soak's turns took half as long again as
sessions reached 373 messages). Here the window the last turn read is kept,
with what the turn stored after it, so the next turn reads only its own new
question and trims the window in memory.

When a window is still right. Messages are never changed once stored (the
admin shows them read-only), and a message's parent never changes. So a window
that ends at message L is the window of any new message whose parent is L. A
new question whose parent is not the window's last message (another process
ran a turn meanwhile, a branch was switched or regenerated, a message was
deleted: deleting one deletes what follows it, the window's end with it) is
read from the database again. Each process keeps its own windows; nothing is
shared, so nothing can go stale across processes.

What it costs: the windows of the sessions with a socket open on this process
(chat.turns.session_leave forgets a session's window with its last socket here), at most MAX_BYTES over
all of them (estimated: a message's text, from its token estimate, and about
600 bytes for its dict: a short one takes about 270); the oldest are dropped first. All of it runs on the
database thread; a lock keeps it right on any other.
"""

import threading
from collections import OrderedDict

MAX_BYTES = 64 * 1024 * 1024
_BYTES_PER_TOKEN = 4  # as selectors.estimate_tokens counts
_BYTES_PER_MESSAGE = 600  # a short message: its dict, strings and list slots (about 270, traced), doubled


class _Window:
    __slots__ = ("leaf_id", "budget", "messages", "costs", "tokens")

    def __init__(self, leaf_id: int, budget: int, messages: list[dict], costs: list[int]):
        self.leaf_id = leaf_id
        self.budget = budget
        self.messages = messages
        self.costs = costs
        self.tokens = sum(costs)

    def size(self) -> int:
        """Its estimated memory, in bytes."""
        return self.tokens * _BYTES_PER_TOKEN + len(self.messages) * _BYTES_PER_MESSAGE

    def trim(self) -> None:
        """Drop the oldest messages until the window fits its budget (the newest always stays),
        as reading it newest first and stopping at the first that does not fit would."""
        drop = 0
        while self.tokens > self.budget and len(self.messages) - drop > 1:
            self.tokens -= self.costs[drop]
            drop += 1
        if drop:
            del self.messages[:drop], self.costs[:drop]


_windows: "OrderedDict[str, _Window]" = OrderedDict()
_lock = threading.Lock()
_held = 0  # estimated bytes over all windows (_Window.size)


def window_for(session_id: str, *, parent_id: int | None, budget: int) -> tuple[list[dict], list[int]] | None:
    """The kept window (messages oldest first, and their token estimates) if it ends at
    `parent_id` and was cut to `budget`; None when it must be read again."""
    with _lock:
        window = _windows.get(session_id)
        if window is None or parent_id is None or window.leaf_id != parent_id or window.budget != budget:
            return None
        _windows.move_to_end(session_id)
        return list(window.messages), list(window.costs)


def window_keep(session_id: str, *, leaf_id: int, budget: int, messages: list[dict],
                costs: list[int]) -> list[dict]:
    """Keep the window ending at `leaf_id`, cut to `budget`, for the session's next turn;
    its messages (oldest first), as cut."""
    global _held
    window = _Window(leaf_id, budget, list(messages), list(costs))
    window.trim()
    kept = list(window.messages)
    with _lock:
        old = _windows.pop(session_id, None)
        if old is not None:
            _held -= old.size()
        _windows[session_id] = window
        _held += window.size()
        _evict()
    return kept


def window_extend(session_id: str, *, message_id: int, parent_id: int | None,
                  message: dict | None, cost: int = 0) -> None:
    """A message stored after the window's end (`message` None: one the provider is never
    sent, such as a system message): it ends the window now. Any other message makes the
    window wrong: it is dropped."""
    global _held
    with _lock:
        window = _windows.get(session_id)
        if window is None:
            return
        if parent_id is None or window.leaf_id != parent_id:
            _held -= window.size()
            del _windows[session_id]
            return
        _held -= window.size()
        window.leaf_id = message_id
        if message is not None:
            window.messages.append(message)
            window.costs.append(cost)
            window.tokens += cost
            window.trim()
        _held += window.size()
        _evict()


def window_forget(session_id: str) -> None:
    global _held
    with _lock:
        window = _windows.pop(session_id, None)
        if window is not None:
            _held -= window.size()


def windows_clear() -> None:
    """Forget every window (tests that rebuild the database)."""
    global _held
    with _lock:
        _windows.clear()
        _held = 0


def _evict() -> None:
    global _held
    while _held > MAX_BYTES and len(_windows) > 1:
        _session, oldest = _windows.popitem(last=False)
        _held -= oldest.size()
