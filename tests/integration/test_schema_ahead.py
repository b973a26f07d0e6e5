"""A rollback across a schema change, on the real broker: the store was migrated by a newer release
(one expand-only migration ahead of this one), and this release's coordinator starts on it and
closes a whole period, invoices published — what `kubectl rollout undo` relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.core.lifecycle import ReportStatus
from accounting.core.report import Completed
from accounting.store.migrate import current_revision
from accounting.store.repository import ReportStore
from contracts import Period, Topology
from tests.integration.support import StaticService, coordinator, listening, serving
from tests.integration.test_corrections import declared, vcpu_hours
from tests.store.test_schema_rollback import NEWER, migrate_as_a_newer_release

pytestmark = pytest.mark.integration


async def test_a_coordinator_closes_a_period_on_a_store_a_newer_release_migrated(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/reckon.sqlite3"
    newer = await ReportStore.open(url)
    await migrate_as_a_newer_release(newer)
    await newer.close()
    compute = StaticService("compute", [vcpu_hours("acct-1", 1000), vcpu_hours("acct-2", 10)])
    await declared(connection, topology)
    async with (
        serving(connection, topology, compute),
        listening(connection, topology.invoices.name) as sent,
        coordinator(amqp_url, topology, ["compute"], consume=False, store_url=url) as running,
    ):
        run = await running.run_period(Period.month("2026-10"))
        await running.wait_until(run, ReportStatus.COMPLETED)
        invoices = await sent.wait_for(2)
        revision = await current_revision(running.app.store.engine)

    assert isinstance(run.outcome, Completed)
    assert [invoice["number"] for invoice in invoices] == ["INV-2026-000001", "INV-2026-000002"]
    assert revision == NEWER  # used as it was, not migrated
