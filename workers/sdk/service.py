"""What a sub-service implements: a name and a ``usage(period)`` coroutine. No transport here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from contracts import Period, UsageRecord


class UsageService(Protocol):
    """A sub-service's usage source.

    ``usage`` returns the service's COMPLETE inventory for the period: every billable resource of
    every account, zero usage included, in the service's own units, after its own discounts and
    included usage. Raising is fine: the SDK turns the exception into an error reply.
    """

    @property
    def name(self) -> str: ...

    async def usage(self, period: Period) -> Sequence[UsageRecord]: ...
