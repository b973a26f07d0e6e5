"""The payment consumer's ledger: an invoice is recorded only with its handler's success, once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from payments.ledger import MemoryLedger, SqlLedger, payments, record_payment
from tests.invoices import sample_invoice

INVOICE = sample_invoice("acme")


class Handler:
    def __init__(self, fail_times: int = 0) -> None:
        self.calls = 0
        self.fail_times = fail_times

    async def __call__(self, tx: AsyncConnection | None) -> None:
        self.calls += 1
        if self.calls <= self.fail_times:
            raise RuntimeError("payment provider down")


async def payment_rows(ledger: SqlLedger) -> int:
    async with ledger.engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(payments))).scalar_one())


async def test_an_invoice_is_handled_once_and_then_dropped(tmp_path: Path) -> None:
    ledger = await SqlLedger.open(tmp_path / "payments.sqlite3")
    handler = Handler()
    try:
        assert await ledger.handle_once(INVOICE, handler) is True
        assert await ledger.handle_once(INVOICE, handler) is False
        assert handler.calls == 1
        assert await ledger.is_handled(INVOICE.invoice_id)
        assert await ledger.count() == 1
    finally:
        await ledger.close()


async def test_a_failing_handler_leaves_the_invoice_unrecorded_and_its_writes_undone(tmp_path: Path) -> None:
    ledger = await SqlLedger.open(tmp_path / "payments.sqlite3")

    async def pays_then_fails(tx: AsyncConnection | None) -> None:
        assert tx is not None
        await record_payment(INVOICE, tx)
        raise RuntimeError("ledger export failed")

    try:
        with pytest.raises(RuntimeError):
            await ledger.handle_once(INVOICE, pays_then_fails)
        assert not await ledger.is_handled(INVOICE.invoice_id)
        assert await payment_rows(ledger) == 0

        async def pays(tx: AsyncConnection | None) -> None:
            assert tx is not None
            await record_payment(INVOICE, tx)

        assert await ledger.handle_once(INVOICE, pays) is True
        assert await payment_rows(ledger) == 1
    finally:
        await ledger.close()


async def test_a_restarted_ledger_on_the_same_file_remembers(tmp_path: Path) -> None:
    path = tmp_path / "var" / "payments.sqlite3"  # the directory is created
    first = await SqlLedger.open(path)
    await first.handle_once(INVOICE, Handler())
    await first.close()

    second = await SqlLedger.open(path)
    handler = Handler()
    try:
        assert await second.handle_once(INVOICE, handler) is False
        assert handler.calls == 0
        assert await second.handle_once(sample_invoice("globex"), handler) is True
    finally:
        await second.close()


async def test_two_ledgers_on_one_file_handle_an_invoice_once_between_them(tmp_path: Path) -> None:
    path = tmp_path / "payments.sqlite3"
    one, two = await SqlLedger.open(path), await SqlLedger.open(path)
    handler = Handler()

    async def slow(tx: AsyncConnection | None) -> None:
        await asyncio.sleep(0.2)  # holds the write lock while the other waits on it
        await handler(tx)

    try:
        results = await asyncio.gather(one.handle_once(INVOICE, slow), two.handle_once(INVOICE, slow))
    finally:
        await one.close()
        await two.close()

    assert sorted(results) == [False, True]
    assert handler.calls == 1


async def test_the_memory_ledger_handles_copies_delivered_together_once() -> None:
    ledger = MemoryLedger()
    handler = Handler(fail_times=1)

    with pytest.raises(RuntimeError):
        await ledger.handle_once(INVOICE, handler)
    results = await asyncio.gather(*(ledger.handle_once(INVOICE, handler) for _ in range(3)))

    assert sorted(results) == [False, False, True]
    assert handler.calls == 2
