"""What a sub-service implements: a name and ``usage(period)``. No transport here."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Iterable
from typing import Protocol, TypeAlias

from contracts import Period, UsageRecord

UsageSource: TypeAlias = AsyncIterable[UsageRecord] | Awaitable[Iterable[UsageRecord]]
"""What ``usage(period)`` gives: an async iterable of records (preferably an async generator, which
streams), or an awaitable of an iterable of records (a coroutine returning a list, say)."""


class UsageService(Protocol):
    """A sub-service's usage source.

    ``usage`` gives the service's COMPLETE inventory for the period: every billable resource of
    every account, zero usage included, in the service's own units, after its own discounts and
    included usage. Either form works::

        async def usage(self, period: Period) -> AsyncIterator[UsageRecord]:  # streams: preferred
            async for row in rows(period):
                yield record_of(row)

        async def usage(self, period: Period) -> Sequence[UsageRecord]:  # the whole list at once
            return [...]

    The SDK sends records in chunks while they are produced, so a streaming service never holds its
    whole inventory in memory. Raising is fine, even after records were yielded: the SDK turns the
    exception into an error reply.
    """

    @property
    def name(self) -> str: ...

    def usage(self, period: Period) -> UsageSource: ...


async def usage_stream(source: UsageSource) -> AsyncGenerator[UsageRecord, None]:
    """Either form of ``usage(period)``'s result as one async iterator of records.

    Closing this iterator (``aclose``, or leaving an ``async for`` early through an exception and
    closing it) closes the service's own async generator too, so its ``finally`` blocks run.
    Raises ``TypeError`` if ``source`` is neither form.
    """
    if isinstance(source, AsyncIterable):
        iterator = aiter(source)
        try:
            async for record in iterator:
                yield record
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
    elif isinstance(source, Awaitable):
        for record in await source:
            yield record
    else:
        raise TypeError(
            f"usage() gave a {type(source).__name__}: expected an async iterable of UsageRecord "
            "(an async generator) or an awaitable of an iterable of UsageRecord (a coroutine)"
        )
