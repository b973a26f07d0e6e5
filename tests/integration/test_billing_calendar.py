"""The coordinator takes a PeriodClosed only for a period of its billing calendar that has ended:
one for a month not over yet, or whose id does not match its bounds (a one-day "2026-05", which
would have billed a day's storage as a GB-month), is refused with its reason stored, parked in the
dead letters and counted; it makes no report, so the real close of that month still works."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.scheduler import close_period
from accounting.core.report import Completed
from contracts import Period, Topology
from tests.integration.support import StaticService, coordinator, eventually, record, serving
from tests.integration.test_least_privilege import dead_letter_count

pytestmark = pytest.mark.integration

MAY = Period.month("2026-05")
ONE_DAY_OF_MAY = Period(
    period_id="2026-05", start=datetime(2026, 5, 1, tzinfo=UTC), end=datetime(2026, 5, 2, tzinfo=UTC)
)
NOT_OVER = Period.month("2099-01")


async def test_a_period_not_over_or_with_other_bounds_is_refused_and_never_blocks_the_real_close(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology
) -> None:
    held_all_may = str(200 * 10**9 * 31 * 86_400)  # 200 GB for the whole month, in byte-seconds
    storage = StaticService(
        "storage", [record("acct-1", "vol-1", "block_storage", held_all_may, "byte-second")]
    )
    async with (
        serving(connection, topology, storage),
        coordinator(amqp_url, topology, ["storage"]) as running,
    ):
        consumer = running.app.consumer
        assert consumer is not None
        for period in (ONE_DAY_OF_MAY, NOT_OVER):
            await close_period(connection, topology, period, "a scheduler gone wrong")
        await eventually(lambda: consumer.refused == 2, timeout=15)
        refusals = await running.app.store.refusals()
        assert await running.app.store.list_reports() == []
        assert storage.calls == []

        await close_period(connection, topology, MAY, "cronjob")
        run = await running.next_run()

    assert isinstance(run.outcome, Completed)
    assert (run.key.period.start, run.key.period.end) == (MAY.start, MAY.end)
    assert str(run.outcome.report.total) == "17.00"  # 200 GB-month: 50 at 0.10, 150 at 0.08
    assert storage.calls == [MAY]
    assert [(refusal.period.period_id, refusal.requested_by) for refusal in refusals] == [
        ("2099-01", "guest (a scheduler gone wrong)"),
        ("2026-05", "guest (a scheduler gone wrong)"),
    ]
    assert refusals[0].reason.startswith("period 2099-01 has not ended")
    assert refusals[1].reason.startswith("period 2026-05: bounds 2026-05-01T00:00:00+00:00 → 2026-05-02")
    assert await dead_letter_count(connection, topology) == 2
