"""The audit half of ``reports reconcile``: every issued document of the period checked against
its row, its report and the documents it cancels or corrects (``core/audit.py``), a window of
accounts at a time, and every raw reply of the reconciled revision against the digest it was
stored with. Memory holds one window of accounts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter

from accounting.core.audit import Balance, Revision, audit_account
from accounting.core.reconcile import Problem
from accounting.service.queries import card_fingerprint
from accounting.service.reconcile import ISSUED, RECONCILABLE, Target
from accounting.store.replies import body_digest
from accounting.store.repository import ReportStore

WINDOW_ACCOUNTS = 2_000
CHUNK_PAGE = 200


@dataclass(frozen=True)
class AccountAudit:
    account_id: str
    balances: tuple[Balance, ...]
    problems: tuple[Problem, ...]


@dataclass
class ReplyCheck:
    """The raw replies of the reconciled revision, checked against their stored digests."""

    checked: int = 0
    unverifiable: int = 0
    """Stored before digests were kept (schema 0005): nothing to check them against."""


async def audit_documents(
    store: ReportStore, target: Target, *, account: str | None = None
) -> AsyncIterator[AccountAudit]:
    """Each account with a document in the period's issued revisions up to the target's."""
    period = target.record.period
    revisions = {
        record.revision: Revision(record.report_id, record.period, card_fingerprint(record.rate_card))
        for record in await store.list_reports(period.period_id)
        if record.status in (RECONCILABLE if target.draft else ISSUED)
        and record.revision <= target.record.revision
    }
    after = ""
    while True:
        invoices, notes, upto = await store.documents_window(
            period.period_id, target.record.revision, after, WINDOW_ACCOUNTS, account, drafts=target.draft
        )
        notes_of = {name: list(group) for name, group in groupby(notes, key=attrgetter("account_id"))}
        for name, group in groupby(invoices, key=attrgetter("account_id")):
            balances, problems = audit_account(name, list(group), notes_of.pop(name, []), revisions)
            yield AccountAudit(name, tuple(balances), tuple(problems))
        for name, orphans in notes_of.items():  # credit notes of an account with no invoice at all
            balances, problems = audit_account(name, [], orphans, revisions)
            yield AccountAudit(name, tuple(balances), tuple(problems))
        if upto is None:
            return
        after = upto


async def check_replies(store: ReportStore, target: Target, check: ReplyCheck) -> AsyncIterator[Problem]:
    """A problem for each raw reply whose body no longer has the digest it was stored with."""
    after = 0
    while True:
        chunks = await store.stored_chunks(target.gather_id, after, CHUNK_PAGE)
        for chunk in chunks:
            if chunk.sha256 is None:
                check.unverifiable += 1
                continue
            check.checked += 1
            found = body_digest(chunk.body)
            if found != chunk.sha256:
                what = f"raw reply {chunk.id} (chunk {chunk.seq}) differs from the body it was stored with"
                yield Problem(None, chunk.service, None, what, found, chunk.sha256)
        if len(chunks) < CHUNK_PAGE:
            return
        after = chunks[-1].id
