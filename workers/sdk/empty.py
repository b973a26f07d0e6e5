"""A sub-service whose store holds no usage at all must not answer "no usage".

A new worker on a fresh volume, or one pointed at the wrong path, would otherwise answer every
request with an empty inventory, and the month would be billed as if nothing had been used. A
service that can tell (it has ``is_empty()``) is guarded: while its store is empty, ``/readyz``
says so and a request is answered with an error reply naming the store (the report aborts with
``service_error``, naming the service), unless ``allow_empty_store`` says an empty store is right
(a service that truly has nothing yet).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from contracts import Period, UsageRecord
from workers.sdk.service import UsageService, UsageSource, usage_stream

EMPTY_REASON = "empty store: no usage recorded at all (RECKON_ALLOW_EMPTY_STORE=true if that is right)"


@runtime_checkable
class KnowsItsStore(Protocol):
    def is_empty(self) -> bool:
        """True when the store holds no usage for any period (blocking: called in a thread)."""
        ...


class EmptyStore(RuntimeError):
    """The service's store holds no usage at all."""


def can_tell_empty(service: UsageService) -> bool:
    return isinstance(service, KnowsItsStore)


async def store_is_empty(service: UsageService) -> bool:
    return isinstance(service, KnowsItsStore) and await asyncio.to_thread(service.is_empty)


class GuardedService:
    """``service``, refusing to answer from an empty store (see the module's doc)."""

    def __init__(self, service: UsageService) -> None:
        self.inner = service

    @property
    def name(self) -> str:
        return self.inner.name

    def usage(self, period: Period) -> UsageSource:
        return self._usage(period)

    async def _usage(self, period: Period) -> AsyncIterator[UsageRecord]:
        if await store_is_empty(self.inner):
            raise EmptyStore(f"service {self.name}: its {EMPTY_REASON}")
        async for record in usage_stream(self.inner.usage(period)):
            yield record
