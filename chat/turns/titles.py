"""A chat's title from its model: asked after the first answer, in the background.

A chat is named after its first message as soon as it is sent (sessions_app
services). Once the first answer is done, its model is asked for a short
title; the title replaces that name unless a person named the chat meanwhile,
and every socket of the session hears `session_name`. The turn is over by
then: nothing here delays `done` or fails the turn; a failure is logged only.
"""

import logging

from channels.db import database_sync_to_async
from django.conf import settings

from chat.agent.titles import title_ask
from chat.turns import setup
from construct_core import metrics
from construct_core.model_choices import ModelChoice
from construct_core.redaction import sanitize
from sessions_app import selectors, services

logger = logging.getLogger(__name__)

# Seconds the title call may take in all; a title that comes later is not waited for.
TITLE_TIMEOUT_SECONDS = 30.0


def wanted() -> bool:
    return settings.CONSTRUCT_AUTO_TITLE


async def title_propose(fanout, *, session_id: str, user_id: int, turn_id: str, choice: ModelChoice,
                        question: str, answer: str) -> None:
    """Ask `choice` for the session's title and name the session with it (see the module)."""
    try:
        if not await database_sync_to_async(selectors.session_auto_named)(session_id=session_id):
            return  # a person named it already: no call
        provider = setup.get_provider(choice)
        text, usage = await title_ask(provider, question, answer,
                                      timeout=min(TITLE_TIMEOUT_SECONDS, settings.CONSTRUCT_PROVIDER_TIMEOUT))
        if usage is not None:
            # The turn's spend, priced under the listed id like its other calls (run.py).
            record = await database_sync_to_async(services.usage_record)(
                session_id=session_id, user_id=user_id, turn_id=turn_id, model=choice.id,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            )
            metrics.tokens_used(choice.id, usage.input_tokens, usage.output_tokens, float(record.cost_usd))
        name = await database_sync_to_async(services.session_title_set)(session_id=session_id, title=text)
        if name is None:
            return
        await fanout.publish(session_id, {"type": "session_name", "session_id": session_id, "name": name})
    except Exception as exc:  # the chat keeps the title of its first message
        logger.warning("session %s: no title from model %s: %s", session_id, choice.id,
                       sanitize(f"{type(exc).__name__}: {exc}"))
