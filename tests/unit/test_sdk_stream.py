"""The SDK's streaming helpers without a broker: both forms of usage(), and the thread-batched stream."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest

from contracts import Period, UsageRecord
from workers.sdk import UsageService, iterate_in_thread, usage_stream

PERIOD = Period.month("2026-10")


def record(n: int) -> UsageRecord:
    return UsageRecord(
        account_id="acme",
        resource_id=f"vm-{n}",
        resource_type="vm",
        metric="vcpu",
        quantity=Decimal(n),
        unit="vCPU-second",
    )


class Streaming:
    name = "streaming"

    def __init__(self, count: int, fail_after: int | None = None) -> None:
        self.count = count
        self.fail_after = fail_after
        self.closed = False

    async def usage(self, period: Period) -> AsyncIterator[UsageRecord]:
        try:
            for n in range(self.count):
                if n == self.fail_after:
                    raise RuntimeError(f"store went away after {n} records")
                yield record(n)
        finally:
            self.closed = True


class Listing:
    name = "listing"

    async def usage(self, period: Period) -> Sequence[UsageRecord]:
        return [record(n) for n in range(3)]


async def collect(source: Any) -> list[UsageRecord]:
    return [item async for item in usage_stream(source)]


def test_both_forms_satisfy_the_protocol() -> None:
    services: list[UsageService] = [Streaming(1), Listing()]  # checked by mypy

    assert [service.name for service in services] == ["streaming", "listing"]


async def test_an_async_generator_and_a_coroutine_stream_the_same_way() -> None:
    assert await collect(Streaming(3).usage(PERIOD)) == await collect(Listing().usage(PERIOD))


async def test_an_exception_mid_stream_comes_after_the_records_before_it() -> None:
    received: list[UsageRecord] = []
    with pytest.raises(RuntimeError, match="after 2 records"):
        async for item in usage_stream(Streaming(5, fail_after=2).usage(PERIOD)):
            received.append(item)

    assert received == [record(0), record(1)]


async def test_closing_the_stream_closes_the_service_generator() -> None:
    service = Streaming(10)
    stream = usage_stream(service.usage(PERIOD))

    assert await anext(stream) == record(0)
    await stream.aclose()

    assert service.closed


async def test_anything_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="expected an async iterable"):
        await collect([record(1)])


def counting(count: int, log: list[str], fail_at: int | None = None) -> Iterator[int]:
    try:
        for n in range(count):
            if n == fail_at:
                raise ValueError(f"bad row {n}")
            log.append(threading.current_thread().name)
            yield n
    finally:
        log.append("closed")


async def test_iterate_in_thread_yields_everything_in_order_off_the_event_loop() -> None:
    log: list[str] = []

    items = [n async for n in iterate_in_thread(counting(25, log), batch_size=10)]

    assert items == list(range(25))
    assert log[-1] == "closed"
    assert threading.main_thread().name not in log


async def test_iterate_in_thread_handles_an_exact_multiple_and_nothing() -> None:
    assert [n async for n in iterate_in_thread(counting(20, []), batch_size=10)] == list(range(20))
    assert [n async for n in iterate_in_thread(counting(0, []), batch_size=10)] == []


async def test_iterate_in_thread_raises_the_iterators_exception_after_its_batch() -> None:
    got: list[int] = []
    with pytest.raises(ValueError, match="bad row 12"):
        async for n in iterate_in_thread(counting(30, [], fail_at=12), batch_size=5):
            got.append(n)

    assert got == list(range(10))  # the batch holding the failure is never handed out


async def test_leaving_early_closes_the_iterator() -> None:
    log: list[str] = []
    stream = iterate_in_thread(counting(100, log), batch_size=10)

    assert await anext(stream) == 0
    await stream.aclose()

    assert log[-1] == "closed"
    assert len(log) == 11  # one batch read, then closed


async def test_a_cancelled_stream_closes_the_iterator_only_after_its_batch() -> None:
    events: list[str] = []

    def slow() -> Iterator[int]:
        try:
            for n in range(3):
                time.sleep(0.2)
                events.append(f"made {n}")
                yield n
        finally:
            events.append("closed")

    async def consume() -> None:
        async for _ in iterate_in_thread(slow(), batch_size=10):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # The batch in progress ran to its end in its thread before the iterator was closed.
    assert events == ["made 0", "made 1", "made 2", "closed"]


async def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        await anext(iterate_in_thread(iter([1]), batch_size=0))
