"""The billing period: a half-open interval [start, end) with a stable id."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.types import UtcDatetime

PERIOD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
"""What a period id may look like (the coordinator bills calendar months, ``YYYY-MM``)."""


class Period(BaseModel):
    """A billing period ``[start, end)``; ``period_id`` (e.g. ``2026-10``) is its idempotency key."""

    model_config = ConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=True)

    period_id: str = Field(min_length=1, max_length=64, pattern=PERIOD_ID_PATTERN)
    """The period's id: a calendar month ``YYYY-MM`` for every period the coordinator bills."""
    start: UtcDatetime
    """Start, inclusive: an RFC 3339 date-time with an offset (normalised to UTC)."""
    end: UtcDatetime
    """End, exclusive: after ``start``."""

    @model_validator(mode="after")
    def _start_before_end(self) -> Period:
        if self.start >= self.end:
            raise ValueError(f"period {self.period_id}: start {self.start} is not before end {self.end}")
        return self

    @classmethod
    def month(cls, period_id: str) -> Period:
        """The calendar month named ``YYYY-MM``, in UTC."""
        try:
            year, month = (int(part) for part in period_id.split("-"))
            start = datetime(year, month, 1, tzinfo=UTC)
        except ValueError:
            raise ValueError(f"period {period_id!r} is not a month written YYYY-MM") from None
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        return cls(period_id=period_id, start=start, end=end)

    @property
    def seconds(self) -> Decimal:
        """Length of the period in seconds, exactly."""
        return seconds_between(self.start, self.end)

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def overlap_seconds(self, start: datetime, end: datetime | None) -> Decimal:
        """Exact seconds of ``[start, end)`` (``end=None``: still running) that fall inside the period."""
        clipped_start = max(start, self.start)
        clipped_end = self.end if end is None else min(end, self.end)
        if clipped_end <= clipped_start:
            return Decimal(0)
        return seconds_between(clipped_start, clipped_end)


def seconds_between(start: datetime, end: datetime) -> Decimal:
    """Exact seconds from ``start`` to ``end`` (microsecond resolution, no float rounding)."""
    delta = end - start
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Decimal(micros) / Decimal(1_000_000)
