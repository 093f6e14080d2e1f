"""A turn's database work at its start and at its end, each in one call.

A turn made about eight database calls, one after another, each a hop to the
one thread Channels runs database work on: the budget, the session lock, the
session's model, the question, the history, then the usage, the answer and
freeing the session. Under load those hops queue behind every other turn's,
and a message waited up to a second and more for its first delta (bench/,
issue on performance). Here they are folded into two calls: `turn_open`
(budget, lock, model, question, history) and `turn_save` (the usage and the
messages the turn keeps, and, at its end, freeing the session), each one
transaction.

Each step is the same function as before (services, budget, catalogue,
selectors); only the hops are fewer. A step that cannot be folded (a turn
taken over from a dead process keeps that turn's text first) is left to the
caller, which then goes step by step as before.
"""

from dataclasses import dataclass, field

from django.db import transaction

from construct_core.model_choices import ModelChoice
from sessions_app import attachments, budget, catalogue, selectors, services
from sessions_app.models import ChatSession


@dataclass
class TurnOpened:
    """What `turn_open` did: whether the turn holds the session, and what it read and wrote."""

    started: bool
    taken_over: dict | None = None  # the turn of a dead process this one ended, if any
    warnings: list[str] = field(default_factory=list)  # budget warnings (from 80 %)
    choice: ModelChoice | None = None  # the model the turn runs, once it holds the session
    message_saved: bool = False  # the question is stored
    first_question: bool = False  # ... and it is the session's first message
    history: list[dict] | None = None  # what the provider is sent, when asked for
    failure: Exception | None = None  # a step after taking the session failed: the turn ends with it


def turn_model(session_id: str, model: str | None) -> ModelChoice:
    """The model a turn runs: `model`, which becomes the session's from now on, else the session's."""
    if model is not None:
        choice = catalogue.model_get(model_id=model)
        services.session_model_set(session_id=session_id, model=choice.id)
        return choice
    return catalogue.session_model(session_id=session_id)


def turn_open(*, session_id: str, user_id: int, turn_id: str, owner: str, lease_seconds: float,
              waiter_id: int | None = None, budget_first: bool = False, model: str | None = None,
              question: dict | None = None, token_budget: int | None = None) -> TurnOpened:
    """Take the session for a turn and, once taken, do the turn's first steps.

    `budget_first`: check the user's budgets before anything (BudgetExceeded
    raises, nothing is taken). Then the session lock (services.turn_try_start):
    not taken, nothing else happens. Taken from a turn whose process died,
    nothing else happens either (that turn's text is kept first, by the caller).
    Else the model is chosen and `question` ({"content", "page_context",
    "client_id", "attachments"}) is stored, both in the lock's transaction
    (one transaction and one read of the session's row for the lock and the
    question), and with `token_budget` the history is read for the provider.
    A failure after the session is taken is returned (`failure`), never
    raised, so the caller's turn frees the session.
    """
    warnings = budget.budget_check(user_id=user_id) if budget_first else []
    question_row = None
    with transaction.atomic():
        started, taken_over, session = services.turn_try_take(
            session_id=session_id, user_id=user_id, turn_id=turn_id, owner=owner,
            lease_seconds=lease_seconds, waiter_id=waiter_id,
        )
        opened = TurnOpened(started=started, taken_over=taken_over, warnings=warnings)
        if not started or taken_over is not None:
            return opened
        try:
            # In the lock's transaction, behind a savepoint: a step that fails is undone and
            # handed back, and the session stays taken, for the turn to end with the failure.
            with transaction.atomic():
                # The session's own model is in the row the lock was taken on: no second read.
                opened.choice = turn_model(session_id, model) if model is not None else \
                    catalogue.model_of_session(session.model)
                if question is not None:
                    data = attachments.question_data(
                        session_id=session_id, page_context=question.get("page_context"),
                        client_id=question.get("client_id"),
                        attachment_ids=question.get("attachments") or ())
                    # Numbered from the locked row: not read a second time.
                    question_row = services.message_append(
                        session_id=session_id, role="user", content=question["content"], data=data,
                        turn_id=turn_id, locked=session)
        except Exception as exc:  # noqa: BLE001 - handed to the turn, which ends with it
            opened.failure = exc
            return opened
    if question_row is not None:
        opened.message_saved = True
        opened.first_question = question_row.seq == 1
        if token_budget is not None:
            try:
                # From the window the session's last turn kept in memory, when it can be.
                opened.history, _dropped = selectors.history_for_question(
                    session_id=session_id, question=question_row, token_budget=token_budget)
            except Exception as exc:  # noqa: BLE001 - handed to the turn, which ends with it
                opened.failure = exc
    return opened


@dataclass
class TurnSaved:
    """The cost of the usage `turn_save` recorded (USD), and whether it freed the session."""

    cost_usd: float = 0.0
    usage_costs: list[float] = field(default_factory=list)


def turn_save(*, session_id: str, user_id: int, turn_id: str, model: str,
              usages: list[tuple[int, int]], messages: list[dict],
              usage_so_far: tuple[int, int, float] | None = None,
              finish_state: str | None = None) -> TurnSaved:
    """Record the usage of the turn's provider calls since the last save, store its messages,
    and with `finish_state`, free the session in that state: all in one transaction.

    `messages` are {"role", "content", "data"}; one with `"with_usage": True`
    gets the turn's whole usage in its data ("usage": tokens and cost), the
    usage recorded here included, counted from `usage_so_far` (input tokens,
    output tokens, cost before this call). The messages are stored behind a
    savepoint: when that fails, the usage is still recorded (budgets count it),
    the session is freed in the error state and the failure is raised, as a
    failed save always was. When the transaction itself fails, freeing the
    session is tried on its own before raising.
    """
    saved = TurnSaved()
    rows, failure = [], None
    try:
        with transaction.atomic():
            for input_tokens, output_tokens in usages:
                record = services.usage_record(
                    session_id=session_id, user_id=user_id, turn_id=turn_id, model=model,
                    input_tokens=input_tokens, output_tokens=output_tokens,
                )
                cost = float(record.cost_usd)
                saved.usage_costs.append(cost)
                saved.cost_usd += cost
            try:
                # One chain, behind messages_append's own savepoint: a failure undoes the
                # messages only, not the usage above.
                rows = services.messages_append(session_id=session_id, turn_id=turn_id, messages=[
                    {"role": message["role"], "content": message.get("content") or "",
                     "data": _with_usage(message, usages, usage_so_far, saved.cost_usd)}
                    for message in messages
                ])
            except Exception as exc:  # noqa: BLE001 - raised below, once the session is freed
                failure = exc
            if finish_state is not None:
                services.turn_finish(session_id=session_id, turn_id=turn_id,
                                     state=ChatSession.State.ERROR if failure else finish_state)
    except Exception:
        if finish_state is not None:
            services.turn_finish(session_id=session_id, turn_id=turn_id, state=ChatSession.State.ERROR)
        raise
    if failure is not None:
        raise failure
    for row in rows:  # once stored: the next turn's history
        selectors.window_extend(session_id=session_id, row=row)
    return saved


def _with_usage(message: dict, usages, usage_so_far, cost_usd: float) -> dict:
    """A message's data; with `"with_usage"`, the turn's whole usage added to it."""
    data = dict(message.get("data") or {})
    if message.get("with_usage"):
        before_in, before_out, before_cost = usage_so_far or (0, 0, 0.0)
        data["usage"] = {
            "input_tokens": before_in + sum(u[0] for u in usages),
            "output_tokens": before_out + sum(u[1] for u in usages),
            "cost_usd": round(before_cost + cost_usd, 8),
        }
    return data
