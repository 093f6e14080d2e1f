"""A short title for a conversation, asked of its model: one plain call, no tools.

What to do with the title (clean it, keep it, tell the sockets) is the caller's job.
"""

import asyncio

from chat.agent.events import Chunk, UsageInfo

TITLE_PROMPT = (
    "You name conversations. Reply with a title of three to six words for the conversation "
    "below, in its language: the title alone, on one line, with no quotes, no Markdown and no "
    "full stop."
)
# What the model is shown of the first question and the first answer, each.
EXCERPT_CHARS = 300
# What is read of its reply: a title is one short line.
REPLY_MAX_CHARS = 400


def _excerpt(text: str) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS - 1] + "…"


def title_messages(question: str, answer: str) -> list[dict]:
    """The call's history: the instruction, then the conversation's start, cut short."""
    return [
        {"role": "system", "content": TITLE_PROMPT},
        {"role": "user", "content": f"Question: {_excerpt(question)}\n\nAnswer: {_excerpt(answer)}"},
    ]


async def title_ask(provider, question: str, answer: str, *,
                    timeout: float) -> tuple[str, UsageInfo | None]:
    """(what the model replied, cut to REPLY_MAX_CHARS; its usage if reported).

    Raises what the provider raises (ProviderError ...), TimeoutError after `timeout` seconds.
    """
    async with asyncio.timeout(timeout):
        return await _read(provider.stream(title_messages(question, answer)))


async def _read(stream) -> tuple[str, UsageInfo | None]:
    parts: list[str] = []
    size = 0
    usage = None
    try:
        async for event in stream:
            if isinstance(event, Chunk):
                parts.append(event.text)
                size += len(event.text)
                if size >= REPLY_MAX_CHARS:
                    break  # enough for a title; usage, if it would come, is not waited for
            elif isinstance(event, UsageInfo):
                usage = event
    finally:
        await stream.aclose()
    return "".join(parts)[:REPLY_MAX_CHARS], usage
