"""The reviewer's diff of a period against the one before (pure)."""

from __future__ import annotations

from decimal import Decimal

from accounting.core.diff import DiffBuilder
from tests.unit.test_documents import invoice, line


def test_the_diff_shows_accounts_new_and_gone_item_and_total_changes_and_the_largest_movers() -> None:
    builder = DiffBuilder(movers=2)
    vcpu = line("Compute vCPU", 1, "100", "vCPU-hour", "0.10", "10.00")
    disk = line("Storage block", None, "10", "GB-month", "0.10", "1.00")
    builder.add_all(
        "before",
        [
            invoice("acct-a", lines=(vcpu, disk)),
            invoice("acct-b", lines=(vcpu,)),
            invoice("acct-gone", lines=(disk,)),
        ],
    )
    bigger = line("Compute vCPU", 1, "300", "vCPU-hour", "0.10", "30.00")
    builder.add_all(
        "now",
        [
            invoice("acct-a", lines=(vcpu, disk)),  # unchanged
            invoice("acct-b", lines=(bigger,)),  # +20
            invoice("acct-new", lines=(disk,)),  # +1 (new)
        ],
    )

    diff = builder.result()

    assert (diff.accounts_before, diff.accounts_now) == (3, 3)
    assert (diff.new_accounts, diff.new_count) == (("acct-new",), 1)
    assert (diff.gone_accounts, diff.gone_count) == (("acct-gone",), 1)
    assert (diff.total.before, diff.total.now, diff.total.change) == (
        Decimal("22.00"),
        Decimal("42.00"),
        Decimal("20.00"),
    )
    assert diff.total.percent == Decimal("90.9")
    assert [(item.name, item.before, item.now) for item in diff.items] == [
        ("compute", Decimal("20.00"), Decimal("40.00")),
        ("storage", Decimal("2.00"), Decimal("2.00")),
    ]
    # acct-b +20 first; then acct-gone -1 and acct-new +1 tie on size: the name decides.
    assert [(mover.name, mover.change) for mover in diff.movers] == [
        ("acct-b", Decimal("20.00")),
        ("acct-new", Decimal("1.00")),
    ]
    assert diff.currencies == ("EUR",)


def test_a_first_period_has_every_account_new_and_no_percentages() -> None:
    builder = DiffBuilder()
    builder.add("now", invoice("acct-a"))

    diff = builder.result()

    assert diff.new_count == 1 and diff.gone_count == 0
    assert diff.total.percent is None
    assert diff.items[0].percent is None
