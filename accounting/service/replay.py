"""Operator replay: rebuild a period's report as a new revision, idempotently.

``replay(period)`` asks every configured service again; ``replay(period, services=[S])`` asks only
S and reuses the stored good replies of the others. A completed period is replayed only with
``force``, and then cancels each invoice it issued with a credit note and issues the corrected
invoice. A replay prices with the rate card stored with the revision it replaces, so replaying the
same replies reproduces the same invoices, unless the operator names another card.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from accounting.core.gather_answers import ServiceState
from accounting.core.lifecycle import ReportStatus
from accounting.core.rate_card import RateCard
from accounting.infra.clock import utc_now
from accounting.service.coordinator import Coordinator, ReportRun
from accounting.store.repository import ACTIVE, ReportExists, ReportRecord
from contracts import report_id


class ReplayRefused(Exception):
    """The replay would be wrong or would duplicate one in progress; the message says why."""


async def plan_replay(
    coordinator: Coordinator,
    period_id: str,
    services: Sequence[str] = (),
    force: bool = False,
    card: RateCard | None = None,
) -> ReportRecord:
    """Check the replay against the stored report and commit its new revision (PENDING), with the
    card it is priced with: ``card`` if given, else the one stored with the revision it replaces."""
    store = coordinator.store
    latest = await store.latest(period_id)
    if latest is None:
        raise ReplayRefused(f"period {period_id} has no report to replay; close the period first")
    if latest.status in ACTIVE:
        raise ReplayRefused(
            f"period {period_id} revision {latest.revision} is still being built ({latest.status}); "
            "wait for it to finish"
        )
    if latest.collecting(utc_now()):
        raise ReplayRefused(
            f"period {period_id} revision {latest.revision} was aborted and is still storing the "
            f"answers of its other services (until {latest.lease_until:%H:%M:%S} UTC at the latest), "
            "so a replay can reuse them; try again then"
        )
    if latest.status is ReportStatus.DRAFT:
        raise ReplayRefused(
            f"period {period_id} revision {latest.revision} is a draft awaiting approval: approve it "
            f"(reckon reports approve {period_id}) or reject it (reckon reports reject {period_id} "
            "--reason ...) first"
        )
    if latest.status is ReportStatus.PUBLISHING:
        raise ReplayRefused(
            f"period {period_id} revision {latest.revision} is still publishing its invoices; "
            "wait for the relay"
        )
    completed = await store.latest_completed(period_id)
    if services:
        requested, configured = await _failed_services(coordinator, latest, services), latest.services
        carried_from = latest.report_id
    else:
        requested = configured = coordinator.services
        carried_from = None
    if completed is not None and not force:
        raise ReplayRefused(
            f"period {period_id} has invoices issued by revision {completed.revision} (completed); "
            "replaying it issues corrected invoices that supersede them: run again with --force to do that"
        )
    revision = latest.revision + 1
    now = utc_now()
    what = f"services {', '.join(services)}" if services else "every service"
    try:
        return await store.create_report(
            report_id=report_id(period_id, revision),
            period=latest.period,
            revision=revision,
            services=configured,
            requested=requested,
            at=now,
            reason=f"replay of revision {latest.revision}: {what}" + (" (forced)" if force else ""),
            owner=coordinator.owner,
            lease_until=now + coordinator.lease,
            carried_from=carried_from,
            supersedes=None if completed is None else completed.report_id,
            rate_card=replay_card(latest, completed, card, coordinator.card),
        )
    except ReportExists:
        raise ReplayRefused(
            f"a replay of period {period_id} is already running (revision {revision}); not starting another"
        ) from None


async def replay(
    coordinator: Coordinator,
    period_id: str,
    services: Sequence[str] = (),
    force: bool = False,
    card: RateCard | None = None,
) -> ReportRun:
    """Plan and build the new revision; first finish a revision that its builder abandoned
    (a replay or coordinator that died), which is what the operator is waiting for."""
    abandoned = await coordinator.claim_abandoned(period_id)
    if abandoned:
        return await coordinator.build(abandoned[0])
    return await coordinator.build(await plan_replay(coordinator, period_id, services, force, card))


def replay_card(
    latest: ReportRecord, completed: ReportRecord | None, card: RateCard | None, configured: RateCard
) -> dict[str, Any]:
    """The card a replay prices with: the operator's, else the replaced revision's, else the last
    issued one's (a revision stored before cards were fixed at acceptance has none), else the
    ``configured`` one."""
    if card is not None:
        return card.model_dump(mode="json")
    for record in (latest, completed):
        if record is not None and record.rate_card is not None:
            return record.rate_card
    return configured.model_dump(mode="json")


async def _failed_services(
    coordinator: Coordinator, latest: ReportRecord, services: Sequence[str]
) -> tuple[str, ...]:
    period_id = latest.period.period_id
    if latest.status is not ReportStatus.ABORTED:
        raise ReplayRefused(
            f"--service replays the failed services of an aborted report; period {period_id} revision "
            f"{latest.revision} is {latest.status} (replay every service with --force instead)"
        )
    unknown = sorted(set(services) - set(latest.services))
    if unknown:
        raise ReplayRefused(
            f"not a service of period {period_id} revision {latest.revision}: {', '.join(unknown)} "
            f"(its services: {', '.join(latest.services)})"
        )
    stored = await coordinator.store.replies(latest.report_id)
    failed = {
        service
        for service in latest.services
        if stored.get(service) is None or stored[service].state != ServiceState.OK
    }
    left_out = sorted(failed - set(services))
    if left_out:
        raise ReplayRefused(
            f"revision {latest.revision} of period {period_id} also lacks a good reply from "
            f"{', '.join(left_out)}: replay it too (--service {' --service '.join(left_out)}) "
            "or replay every service"
        )
    return tuple(service for service in latest.services if service in services)
