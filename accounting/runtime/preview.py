"""Preview: a period's invoices before it closes, as the real report would issue them.

A preview is built by the very code that builds a report (gather from every configured service,
store the replies, normalize and price from the store) in a store of previews of its own
(``preview_store_url``), so it never counts as one of the period's revisions. It is never
published: no relay runs on the preview store, and its invoices stay there for inspection. Its
report and invoice ids are a preview's own (``preview_report_id``, ``preview_invoice_id``): a
preview's invoice can never share its id with an issued one, whatever revision either has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from accounting.amqp.gatherer import ProgressCallback
from accounting.core.corrections import PlannedCorrection, planned_corrections
from accounting.core.rate_card import RateCard
from accounting.core.report import Aborted
from accounting.infra.clock import utc_now
from accounting.runtime.app import open_store, start_coordinator
from accounting.runtime.settings import Settings, load_rate_card
from accounting.service.coordinator import ReportRun
from accounting.service.replay import ReplayRefused, replay_card
from contracts import InvoiceIssued, Period, preview_report_id


class NoPreviewStore(ValueError):
    """No place to keep previews: the store is not SQLite and ``preview_store_url`` is unset."""


@dataclass(frozen=True)
class Preview:
    run: ReportRun
    invoices: tuple[InvoiceIssued, ...]
    """The invoices the report would issue (only the named account's, if one was named)."""
    rate_card: str
    """The fingerprint of the card that priced them."""


def preview_store_url(settings: Settings) -> str:
    """``preview_store_url``, or a SQLite file beside a SQLite store."""
    if settings.preview_store_url is not None:
        return settings.preview_store_url
    url = make_url(settings.store_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        return url.set(database=str(path.with_name(f"{path.stem}-previews{path.suffix}"))).render_as_string(
            hide_password=False
        )
    raise NoPreviewStore(
        "previews are kept apart from the period's reports: set preview_store_url "
        "(RECKON_PREVIEW_STORE_URL) to a database of their own"
    )


async def run_preview(
    settings: Settings,
    card: RateCard,
    period: Period,
    account: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> Preview:
    """Gather and price ``period`` now, as a new preview revision in the preview store."""
    instance = await start_coordinator(
        # No relay: a preview's invoices and events stay in its outbox, never sent.
        settings.model_copy(update={"store_url": preview_store_url(settings), "relay": False}),
        card=card,
        consume=False,
        background=False,
        on_progress=on_progress,
        previews=True,
    )
    try:
        coordinator, store = instance.coordinator, instance.store
        latest = await store.latest(period.period_id)
        revision = 1 if latest is None else latest.revision + 1
        now = utc_now()
        record = await store.create_report(
            report_id=preview_report_id(period.period_id, revision),
            period=period,
            revision=revision,
            services=coordinator.services,
            requested=coordinator.services,
            at=now,
            reason="preview",
            owner=coordinator.owner,
            lease_until=now + coordinator.lease,
            rate_card=card.model_dump(mode="json"),
        )
        run = await coordinator.build(record)
        if isinstance(run.outcome, Aborted):
            return Preview(run, (), card.fingerprint)
        invoices = await store.invoices(report_id=record.report_id, account_id=account)
        return Preview(run, tuple(invoices), card.fingerprint)
    finally:
        await instance.close()


@dataclass(frozen=True)
class DryRun:
    """What ``reckon replay PERIOD --force`` would issue, found by a preview priced with the card
    the replay would use and compared with what each account owes now."""

    preview: Preview
    revision: int
    """The revision the replay would correct (the period's newest)."""
    planned: tuple[PlannedCorrection, ...]
    unchanged: int


async def dry_run_replay(
    settings: Settings,
    period_id: str,
    card: RateCard | None = None,
    on_progress: ProgressCallback | None = None,
) -> DryRun:
    """Ask every configured service again, price in the preview store, compare with each account's
    current invoice. Nothing is published, and the period gets no revision. ``card``: the one the
    replay would be given (``--rate-card``); by default the one stored with the newest revision,
    as the replay itself prices."""
    store = await open_store(settings.store_url, create=False)
    try:
        latest = await store.latest(period_id)
        if latest is None:
            raise ReplayRefused(f"period {period_id} has no report to replay; close the period first")
        completed = await store.latest_completed(period_id)
        current = await store.current_invoices(period_id, latest.revision + 1)
    finally:
        await store.close()
    configured = load_rate_card(settings.rate_card)
    chosen = RateCard.model_validate(replay_card(latest, completed, card, configured))
    preview = await run_preview(settings, chosen, latest.period, on_progress=on_progress)
    priced = {invoice.account_id: invoice for invoice in preview.invoices}
    planned = tuple(planned_corrections(current, priced))
    unchanged = len(current.keys() | priced.keys()) - len(planned)
    return DryRun(preview, latest.revision, planned, unchanged)
