"""What the agent's tools keep, kept in the database (the agent itself knows no database)."""

from channels.db import database_sync_to_async

from chat.agent.tools.memory import Note
from sessions_app import selectors, services


def _note(row) -> Note:
    return Note(id=str(row.id), content=row.content, tags=list(row.tags), created_at=row.created_at)


class DatabaseMemory:
    """Memory notes in the MemoryNote table; any session may recall them."""

    async def store(self, *, session_id: str, content: str, tags: list[str]) -> Note:
        row = await database_sync_to_async(services.note_store)(
            session_id=session_id, content=content, tags=tags
        )
        return _note(row)

    async def search(self, *, query: str, limit: int) -> list[Note]:
        rows = await database_sync_to_async(selectors.note_search)(query=query, limit=limit)
        return [_note(row) for row in rows]
