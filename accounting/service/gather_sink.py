"""The store as a gather's sink: each batch of replies is one fenced transaction."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from uuid import UUID

from accounting.core.gather_events import Action, DropAnswer, KeepBody, StoreChunk
from accounting.store.engine import Renewal
from accounting.store.repository import ChunkToStore, ReportStore


class StoreSink:
    """Writes accepted chunks (raw body and records) and kept bodies of failed replies; each batch
    renews the builder's lease as it commits, given ``renewal``."""

    def __init__(
        self,
        store: ReportStore,
        report_id: UUID,
        owner: str,
        gather_id: int,
        clock: Callable[[], datetime],
        renewal: Renewal | None = None,
    ) -> None:
        self._store = store
        self._renewal = renewal
        self._report_id = report_id
        self._owner = owner
        self._gather_id = gather_id
        self._clock = clock

    async def asked(self, requests: Mapping[str, str]) -> None:
        await self._store.mark_asked(self._report_id, self._owner, self._gather_id, requests, self._clock())

    async def write(self, actions: Sequence[Action]) -> list[tuple[str, str]]:
        """Store the batch in order; a service that answered again has its earlier answer dropped
        before the chunks that follow are stored."""
        refused: list[tuple[str, str]] = []
        pending: list[ChunkToStore] = []
        for action in actions:
            if isinstance(action, DropAnswer):
                refused += await self._append(pending)
                pending = []
                await self._store.drop_answer(self._report_id, self._owner, self._gather_id, action.service)
            else:
                pending.append(_chunk(action))
        return refused + await self._append(pending)

    async def _append(self, chunks: list[ChunkToStore]) -> list[tuple[str, str]]:
        if not chunks:
            return []
        rejected = await self._store.append_chunks(
            self._report_id, self._owner, self._gather_id, chunks, self._clock(), self._renewal
        )
        return [(chunk.service, chunk.message) for chunk in rejected]


def _chunk(action: StoreChunk | KeepBody) -> ChunkToStore:
    body = action.body.decode("utf-8", errors="replace")
    if not isinstance(action, StoreChunk):
        return ChunkToStore(action.service, action.request_id, None, body, accepted=False)
    return ChunkToStore(
        action.service,
        action.request_id,
        action.reply.chunk.seq,
        body,
        [
            (record.account_id, record.resource_id, record.metric, record.unit, str(record.quantity))
            for record in action.reply.records
        ],
    )
