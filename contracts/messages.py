"""Every message Reckon sends or receives, as frozen pydantic v2 models.

Bodies are JSON with a ``schema_version`` of their own message type. Readers reject an unknown
major version and ignore fields they do not know, so a minor version may add optional fields
without breaking anyone; a change an old reader could misread is a new major version of that type.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Literal, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.period import Period
from contracts.types import (
    SCHEMA_VERSION,
    DecimalString,
    NonNegativeDecimal,
    UtcDatetime,
    check_schema_version,
)

ServiceName = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9-]*$")


class Message(BaseModel):
    """Base of every message body."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    VERSION: ClassVar[str] = SCHEMA_VERSION
    """The version this build writes; it reads every minor version of the same major."""

    schema_version: str = SCHEMA_VERSION

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "VERSION" in cls.__dict__ and "schema_version" not in cls.__annotations__:
            raise TypeError(f"{cls.__name__} sets VERSION: redeclare schema_version with it as default")

    @field_validator("schema_version", mode="before")
    @classmethod
    def _supported_version(cls, value: Any) -> str:
        return check_schema_version(value, int(cls.VERSION.split(".")[0]))

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, body: bytes | str) -> Self:
        return cls.model_validate_json(body)


class Part(BaseModel):
    """Base of a nested structure inside a message."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class PeriodClosed(Message):
    """The scheduler says a billing period has ended; ``period_id`` is the idempotency key."""

    period_id: str = Field(min_length=1, max_length=64)
    start: UtcDatetime
    end: UtcDatetime
    requested_by: str = Field(min_length=1, max_length=128)

    @model_validator(mode="after")
    def _valid_period(self) -> Self:
        self.period  # noqa: B018 - validates start < end and the id's form
        return self

    @property
    def period(self) -> Period:
        return Period(period_id=self.period_id, start=self.start, end=self.end)

    @classmethod
    def for_period(cls, period: Period, requested_by: str) -> PeriodClosed:
        return cls(period_id=period.period_id, start=period.start, end=period.end, requested_by=requested_by)


class UsageRequest(Message):
    """Coordinator → one sub-service: send your complete inventory for ``period``."""

    request_id: str = Field(min_length=1, max_length=128)
    report_id: UUID
    period: Period
    service: str = ServiceName
    deadline: UtcDatetime


class UsageRecord(Part):
    """One billable resource of one account, in the service's own units, discounts applied."""

    account_id: str = Field(min_length=1, max_length=128)
    resource_id: str = Field(min_length=1, max_length=256)
    resource_type: str = Field(min_length=1, max_length=64)
    metric: str = Field(min_length=1, max_length=64)
    quantity: NonNegativeDecimal
    unit: str = Field(min_length=1, max_length=32)
    attributes: dict[str, str] = Field(default_factory=dict)


class Chunk(Part):
    """Position of one reply in a multi-part answer.

    ``total_records`` counts the whole answer on the **last** chunk; earlier chunks may carry the
    count so far (it is not read). ``answer_id`` (added in 1.2) names one computation of the
    answer: a service that answers again (its request was redelivered) uses a new one, and chunks
    of two answers are never mixed. Omitted, every chunk belongs to the same answer.
    """

    seq: int = Field(ge=0)
    last: bool
    total_records: int = Field(ge=0)
    answer_id: str | None = Field(default=None, min_length=1, max_length=64)


class ErrorCode(StrEnum):
    INTERNAL = "internal"
    INVALID_REQUEST = "invalid_request"
    UNAVAILABLE = "unavailable"


class ServiceError(Part):
    code: str = Field(min_length=1, max_length=64)
    message: str = Field(max_length=2000)
    retryable: bool = False


class UsageReply(Message):
    """Sub-service → coordinator, to ``reply_to`` with the request's ``correlation_id``.

    1.2 added the optional ``chunk.answer_id``: an older reader ignores it and loses nothing.
    """

    VERSION: ClassVar[str] = "1.2"

    schema_version: str = "1.2"
    request_id: str = Field(min_length=1, max_length=128)
    service: str = ServiceName
    status: Literal["ok", "error"]
    records: tuple[UsageRecord, ...] = ()
    chunk: Chunk = Chunk(seq=0, last=True, total_records=0)
    """Omitted: the reply is the whole answer (one last chunk holding every record)."""
    error: ServiceError | None = None

    @model_validator(mode="after")
    def _status_matches_error(self) -> Self:
        # An omitted chunk is one last chunk holding every record. Set here rather than in a
        # "before" validator, which would make pydantic build the whole JSON as Python objects
        # first: three times slower on the coordinator's hottest path.
        if "chunk" not in self.model_fields_set:
            object.__setattr__(self, "chunk", Chunk(seq=0, last=True, total_records=len(self.records)))
        if self.status == "error" and self.error is None:
            raise ValueError("status 'error' needs an error {code, message}")
        if self.status == "ok" and self.error is not None:
            raise ValueError("status 'ok' must not carry an error")
        if self.chunk.last and self.chunk.total_records < len(self.records):
            raise ValueError(
                f"chunk.total_records {self.chunk.total_records} is less than the "
                f"{len(self.records)} records in the last chunk"
            )
        return self


class InvoiceLine(Part):
    item: str
    description: str
    tier: int | None = None
    quantity: DecimalString
    unit: str
    unit_price: DecimalString
    amount: DecimalString


class InvoiceIssued(Message):
    """One account's invoice for one report revision; ``invoice_id`` is deterministic.

    2.0 (from 1.1): a corrected invoice (``supersedes`` set) is sent only on ``invoice.corrected``,
    after the ``CreditNoteIssued`` that cancels the invoice it corrects; first invoices go on
    ``invoice.issued`` with ``supersedes`` null. In 1.1 ``supersedes`` was an optional field that a
    1.0 reader ignored, so it counted a correction as a second charge: a field that changes what is
    owed cannot be one an old reader may skip, hence the major version (a 1.x reader refuses 2.0
    instead of misreading it). 2.0 also names the ``rate_card`` (its fingerprint) that priced it.

    2.1 (from 2.0) adds ``number``, ``issued_at`` and ``due_at``, set on every invoice it issues:
    they say when and under which number the invoice was issued, not what is owed, so a 2.0 reader
    that ignores them charges exactly what it charged before.
    """

    VERSION: ClassVar[str] = "2.1"

    schema_version: str = "2.1"
    invoice_id: UUID
    report_id: UUID
    revision: int = Field(ge=1)
    account_id: str
    period: Period
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    lines: tuple[InvoiceLine, ...]
    subtotal: DecimalString
    total: DecimalString
    supersedes: UUID | None = None
    """The invoice this one corrects (a forced replay of a completed period), already cancelled by
    a credit note sent before it; None on a first invoice."""
    rate_card: str = Field(min_length=1, max_length=80)
    """Fingerprint of the rate card that priced it (``sha256:…``): same card, same invoice."""
    number: str | None = Field(default=None, min_length=1, max_length=40)
    """Its number in the invoice series (``INV-2026-000123``): sequential, gapless, never reused;
    assigned when the report is approved. None only in a 2.0 body (issued before numbering)."""
    issued_at: UtcDatetime | None = None
    """When it was issued (its report approved). None only in a 2.0 body."""
    due_at: UtcDatetime | None = None
    """When payment is due: ``issued_at`` plus the seller's payment terms. None only in a 2.0 body."""


class CreditNoteIssued(Message):
    """Cancels an invoice that a later revision of its period corrects (a forced replay).

    The payment service applies it before the corrected invoice (an ``InvoiceIssued`` naming the
    same invoice in ``supersedes``): after both, the account owes what the corrected invoice says.
    Both travel on routing keys of their own (``credit_note.issued``, ``invoice.corrected``) that a
    payment service binds deliberately, so a reader that knows only ``InvoiceIssued`` on
    ``invoice.issued`` can never take a correction for a new charge. ``total`` is the amount
    credited, positive: the credited invoice's total; ``lines`` are its lines.
    """

    VERSION: ClassVar[str] = "1.0"

    schema_version: str = "1.0"
    credit_note_id: UUID
    credits: UUID
    """The invoice this credit note cancels."""
    report_id: UUID
    """The revision that issued it (and the corrected invoice)."""
    revision: int = Field(ge=1)
    account_id: str
    period: Period
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    lines: tuple[InvoiceLine, ...]
    subtotal: DecimalString
    total: DecimalString
    credits_number: str | None = Field(default=None, max_length=40)
    """The number of the invoice it cancels (None when that invoice had none: issued before 2.1)."""
    number: str | None = Field(default=None, min_length=1, max_length=40)
    """Its number in the credit-note series (``CN-2026-000007``), assigned when it is issued."""
    issued_at: UtcDatetime | None = None
    """When it was issued (its report approved)."""


class ReportCompleted(Message):
    """Every invoice of a report revision is confirmed by the broker; sent after the last of them.

    2.0 (from 1.1): the per-invoice list ``invoices`` is gone — at 100,000 accounts it made the
    event megabytes long — and ``invoice_count`` replaced it. Each ``InvoiceIssued`` names its
    ``report_id``; the store and ``reckon invoices show --period`` list them. A 1.x reader that
    required ``invoices`` must not take a 2.0 event for a report without invoices, hence the major.
    """

    VERSION: ClassVar[str] = "2.0"

    schema_version: str = "2.0"
    report_id: UUID
    revision: int = Field(ge=1)
    period: Period
    currency: str
    invoice_count: int = Field(ge=0)
    total: DecimalString
    records: int = Field(ge=0)


class AbortCode(StrEnum):
    UNROUTABLE = "unroutable"
    DEADLINE = "deadline"
    SERVICE_ERROR = "service_error"
    INVALID_REPLY = "invalid_reply"
    INCOMPLETE = "incomplete"
    UNKNOWN_UNIT = "unknown_unit"
    UNPRICED = "unpriced"
    TRANSPORT_LOST = "transport_lost"
    INTERNAL = "internal"
    REJECTED = "rejected"


class AbortReason(Part):
    code: AbortCode
    message: str
    service: str | None = None

    def __str__(self) -> str:
        where = f"{self.service}: " if self.service else ""
        return f"{where}{self.code.value}: {self.message}"


class ReportAborted(Message):
    """A report revision was aborted, with every reason known; no invoice exists for it.

    2.0 (from 1.1): reason codes are an **open set** — 2.0 added ``internal`` (the coordinator
    itself failed) — and a reader treats a code it does not know as a failure it cannot explain
    further. A 1.x reader validated codes against a closed list and would have refused the event.
    2.1 added ``rejected`` (a reviewer rejected the draft), which a 2.0 reader takes as such.
    """

    VERSION: ClassVar[str] = "2.1"

    schema_version: str = "2.1"
    report_id: UUID
    revision: int = Field(ge=1)
    period: Period
    reasons: tuple[AbortReason, ...] = Field(min_length=1)
