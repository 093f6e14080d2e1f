"""What the agent's tools keep, kept in the database (the agent itself knows no database)."""

from channels.db import database_sync_to_async

from chat.agent.tools.memory import Note
from sessions_app import selectors, services


def _note(row) -> Note:
    return Note(id=str(row.id), content=row.content, tags=list(row.tags), created_at=row.created_at)


class DatabaseMemory:
    """One user's memory notes in the MemoryNote table: any of their sessions may recall them."""

    def __init__(self, user_id: int):
        self.user_id = user_id

    async def store(self, *, session_id: str, content: str, tags: list[str]) -> Note:
        row = await database_sync_to_async(services.note_store)(
            user_id=self.user_id, session_id=session_id, content=content, tags=tags
        )
        return _note(row)

    async def search(self, *, query: str, limit: int) -> list[Note]:
        rows = await database_sync_to_async(selectors.note_search)(
            user_id=self.user_id, query=query, limit=limit
        )
        return [_note(row) for row in rows]
