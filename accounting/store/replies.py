"""What the services answered: one gather per build attempt, each chunk's raw body and its records.

Chunks are written as they arrive, in batches, fenced by the builder's lease; ``usage.py`` reads
the records back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accounting.core.lifecycle import ReportStatus
from accounting.store import schema
from accounting.store.engine import Renewal, fence, insert_rows, renew_at_commit

COLLECTING = (ReportStatus.GATHERING, ReportStatus.ABORTED)
"""A builder stores replies while gathering, and after an abort until the others are all in."""

NOT_ASKED = "not asked"
"""Stored state of a service whose request was never sent."""

WAITING = "waiting"
"""Stored state of a service that was asked and has not (yet) given a complete answer."""

OK = "ok"

RecordRow = tuple[str, str, str, str, str]
"""One record as stored: ``(account_id, resource_id, metric, unit, quantity)``."""

UsageRow = tuple[str, str, str, str, str]
"""One record as pricing reads it: ``(account_id, service, metric, unit, quantity)``."""

_RECORD_COLUMNS = ("gather_id", "account_id", "service", "resource_id", "metric", "unit", "quantity")


@dataclass(frozen=True)
class StoredReply:
    """One service's part of one report: its outcome and how many records it gave."""

    service: str
    request_id: str | None
    state: str
    reason_code: str | None
    reason: str | None
    records: int
    carried_from: UUID | None = None


def body_digest(body: str) -> str:
    """The digest a raw reply is stored with, and checked against by ``reports reconcile``."""
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class ChunkToStore:
    """A reply body as it arrived; for an accepted chunk, its records."""

    service: str
    request_id: str | None
    seq: int | None
    body: str
    records: Sequence[RecordRow] = ()
    accepted: bool = True


@dataclass(frozen=True)
class RejectedChunk:
    """An accepted chunk the store refused: its records repeat ones already in the answer."""

    service: str
    seq: int | None
    message: str


class RepliesRepository:
    engine: AsyncEngine

    async def begin_gather(
        self,
        report_id: UUID,
        owner: str,
        *,
        attempt: str,
        at: datetime,
        requested: Sequence[str],
        carried: Sequence[str] = (),
        carried_from: UUID | None = None,
    ) -> int:
        """Start a gather attempt and return its id: earlier attempts' replies are dropped (a
        resumed report gathers again from scratch), each requested service is 'not asked' yet,
        and each ``carried`` service's good answer is copied from ``carried_from`` (a replay)."""
        async with self.engine.begin() as connection:
            await fence(connection, report_id, owner, (ReportStatus.GATHERING,))
            reports = schema.reports
            await connection.execute(
                update(reports)
                .where(reports.c.report_id == str(report_id))
                .values(build_attempts=reports.c.build_attempts + 1)
            )
            await _drop_gathers(connection, report_id)
            created = await connection.execute(
                insert(schema.gathers).values(
                    report_id=str(report_id), attempt=attempt, owner=owner, started_at=at
                )
            )
            assert created.inserted_primary_key is not None
            gather_id = int(created.inserted_primary_key[0])
            for service in requested:
                await connection.execute(
                    schema.service_replies.insert().values(
                        report_id=str(report_id),
                        service=service,
                        request_id=None,
                        state=NOT_ASKED,
                        records=0,
                        stored_at=at,
                        gather_id=gather_id,
                    )
                )
            if carried:
                if carried_from is None:
                    raise ValueError("carried services need the report they are carried from")
                await _copy_answers(connection, carried_from, report_id, gather_id, carried, at)
        return gather_id

    async def mark_asked(
        self, report_id: UUID, owner: str, gather_id: int, asked: Mapping[str, str], at: datetime
    ) -> None:
        """The broker accepted these services' requests (service → request id)."""
        table = schema.service_replies
        async with self.engine.begin() as connection:
            await fence(connection, report_id, owner, COLLECTING)
            for service, request_id in asked.items():
                await connection.execute(
                    update(table)
                    .where(table.c.gather_id == gather_id, table.c.service == service)
                    .values(request_id=request_id, state=WAITING, stored_at=at)
                )

    async def append_chunks(
        self,
        report_id: UUID,
        owner: str,
        gather_id: int,
        chunks: Sequence[ChunkToStore],
        at: datetime,
        renewal: Renewal | None = None,
    ) -> list[RejectedChunk]:
        """Store a batch of reply bodies and their records in one transaction, fenced by the lease
        (and renewing it as it commits, given ``renewal``).

        A chunk whose records repeat an (account, resource, metric) of its service's answer is
        refused (its body is still kept, not accepted) and returned; the others are stored.
        """
        try:
            async with self.engine.begin() as connection:
                await fence(connection, report_id, owner, COLLECTING)
                await _insert_chunks(connection, gather_id, chunks, at)
                await renew_at_commit(connection, report_id, owner, COLLECTING, renewal)
            return []
        except IntegrityError:
            pass
        rejected: list[RejectedChunk] = []
        for chunk in chunks:  # find the offending chunk(s): one transaction each
            try:
                async with self.engine.begin() as connection:
                    await fence(connection, report_id, owner, COLLECTING)
                    await _insert_chunks(connection, gather_id, [chunk], at)
            except IntegrityError:
                rejected.append(RejectedChunk(chunk.service, chunk.seq, _repeated(chunk)))
                async with self.engine.begin() as connection:
                    await fence(connection, report_id, owner, COLLECTING)
                    await _insert_chunks(connection, gather_id, [replace(chunk, accepted=False)], at)
        return rejected

    async def drop_answer(self, report_id: UUID, owner: str, gather_id: int, service: str) -> None:
        """A service answered again from scratch (a new answer id): its earlier answer's records
        go, and its chunks stay for the audit, no longer accepted."""
        chunks, records = schema.reply_chunks, schema.usage_records
        async with self.engine.begin() as connection:
            await fence(connection, report_id, owner, COLLECTING)
            await connection.execute(
                delete(records).where(records.c.gather_id == gather_id, records.c.service == service)
            )
            await connection.execute(
                update(chunks)
                .where(chunks.c.gather_id == gather_id, chunks.c.service == service)
                .values(accepted=False)
            )

    async def save_outcomes(
        self, report_id: UUID, owner: str, gather_id: int, outcomes: Sequence[StoredReply], at: datetime
    ) -> None:
        """Each asked service's final state, reason and record count."""
        table = schema.service_replies
        async with self.engine.begin() as connection:
            await fence(connection, report_id, owner, COLLECTING)
            for outcome in outcomes:
                await connection.execute(
                    update(table)
                    .where(table.c.gather_id == gather_id, table.c.service == outcome.service)
                    .values(
                        request_id=outcome.request_id,
                        state=outcome.state,
                        reason_code=outcome.reason_code,
                        reason=outcome.reason,
                        records=outcome.records,
                        stored_at=at,
                    )
                )

    async def replies(self, report_id: UUID) -> dict[str, StoredReply]:
        table = schema.service_replies
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(table).where(table.c.report_id == str(report_id)).order_by(table.c.service)
                )
            ).all()
        return {
            row.service: StoredReply(
                service=row.service,
                request_id=row.request_id,
                state=row.state,
                reason_code=row.reason_code,
                reason=row.reason,
                records=row.records,
                carried_from=None if row.carried_from is None else UUID(row.carried_from),
            )
            for row in rows
        }

    async def reply_bodies(self, report_id: UUID, service: str) -> list[str]:
        """Every raw body stored for ``service`` in the report's gather, accepted or not, as received."""
        chunks = schema.reply_chunks
        async with self.engine.connect() as connection:
            gather_id = await _gather_of(connection, report_id)
            rows = (
                await connection.execute(
                    select(chunks.c.body)
                    .where(chunks.c.gather_id == gather_id, chunks.c.service == service)
                    .order_by(chunks.c.id)
                )
            ).all()
        return [row.body for row in rows]

    async def gather_of(self, report_id: UUID) -> int | None:
        """The report's current gather (its latest attempt), if it has one."""
        async with self.engine.connect() as connection:
            return await _gather_of(connection, report_id)


async def _gather_of(connection: AsyncConnection, report_id: UUID) -> int | None:
    found = (
        await connection.execute(
            select(func.max(schema.gathers.c.id)).where(schema.gathers.c.report_id == str(report_id))
        )
    ).scalar_one_or_none()
    return None if found is None else int(found)


async def _insert_chunks(
    connection: AsyncConnection, gather_id: int, chunks: Sequence[ChunkToStore], at: datetime
) -> None:
    await connection.execute(
        schema.reply_chunks.insert(),
        [
            {
                "gather_id": gather_id,
                "service": chunk.service,
                "seq": chunk.seq,
                "request_id": chunk.request_id,
                "records": len(chunk.records),
                "accepted": chunk.accepted,
                "body": chunk.body,
                "sha256": body_digest(chunk.body),
                "received_at": at,
            }
            for chunk in chunks
        ],
    )
    rows = [
        (gather_id, account, chunk.service, resource, metric, unit, quantity)
        for chunk in chunks
        if chunk.accepted
        for account, resource, metric, unit, quantity in chunk.records
    ]
    await insert_rows(connection, schema.usage_records, _RECORD_COLUMNS, rows)


def _repeated(chunk: ChunkToStore) -> str:
    seen: set[tuple[str, str, str]] = set()
    for account, resource, metric, _unit, _quantity in chunk.records:
        key = (account, resource, metric)
        if key in seen:
            return (
                f"chunk {chunk.seq} lists account {account!r} resource {resource!r} metric {metric!r} "
                "twice: each resource's metric must appear once in an answer"
            )
        seen.add(key)
    return (
        f"chunk {chunk.seq} repeats an (account, resource, metric) already given in an earlier chunk "
        "of this answer: each resource's metric must appear once"
    )


async def _drop_gathers(connection: AsyncConnection, report_id: UUID) -> None:
    earlier = select(schema.gathers.c.id).where(schema.gathers.c.report_id == str(report_id))
    await connection.execute(
        delete(schema.usage_records).where(schema.usage_records.c.gather_id.in_(earlier))
    )
    await connection.execute(delete(schema.reply_chunks).where(schema.reply_chunks.c.gather_id.in_(earlier)))
    await connection.execute(
        delete(schema.service_replies).where(schema.service_replies.c.report_id == str(report_id))
    )
    await connection.execute(delete(schema.gathers).where(schema.gathers.c.report_id == str(report_id)))


async def _copy_answers(
    connection: AsyncConnection,
    source_report: UUID,
    report_id: UUID,
    gather_id: int,
    services: Sequence[str],
    at: datetime,
) -> None:
    """Copy the good answers of ``services`` from ``source_report`` into this report's gather."""
    replies = schema.service_replies
    source_gather = await _gather_of(connection, source_report)
    found = {
        row.service: row
        for row in (
            await connection.execute(
                select(replies).where(
                    replies.c.report_id == str(source_report), replies.c.service.in_(list(services))
                )
            )
        ).all()
    }
    missing = sorted(service for service in services if service not in found or found[service].state != OK)
    if missing or source_gather is None:
        raise ValueError(f"report {source_report} has no good answer of {', '.join(missing)} to carry over")
    for service in services:
        row = found[service]
        await connection.execute(
            replies.insert().values(
                report_id=str(report_id),
                service=service,
                request_id=row.request_id,
                state=OK,
                reason_code=None,
                reason=None,
                records=row.records,
                carried_from=str(source_report),
                stored_at=at,
                gather_id=gather_id,
            )
        )
    chunks, records = schema.reply_chunks, schema.usage_records
    chunk_columns = ["service", "seq", "request_id", "records", "accepted", "body", "received_at"]
    await connection.execute(
        insert(chunks).from_select(
            ["gather_id", *chunk_columns],
            select(literal(gather_id), *(chunks.c[name] for name in chunk_columns)).where(
                chunks.c.gather_id == source_gather, chunks.c.service.in_(list(services))
            ),
        )
    )
    record_columns = list(_RECORD_COLUMNS[1:])
    await connection.execute(
        insert(records).from_select(
            ["gather_id", *record_columns],
            select(literal(gather_id), *(records.c[name] for name in record_columns)).where(
                records.c.gather_id == source_gather, records.c.service.in_(list(services))
            ),
        )
    )
