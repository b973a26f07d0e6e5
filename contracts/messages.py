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

from contracts.limits import (
    MAX_ATTRIBUTE_LENGTH,
    MAX_ATTRIBUTES,
    MAX_CHUNKS_PER_ANSWER,
    MAX_RECORDS_PER_ANSWER,
    MAX_RECORDS_PER_CHUNK,
)
from contracts.period import PERIOD_ID_PATTERN, Period
from contracts.types import (
    SCHEMA_VERSION,
    DecimalString,
    NonNegativeDecimal,
    UtcDatetime,
    check_schema_version,
)
from contracts.units import UNITS

ServiceName = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9-]*$")

OPEN_SET = "x-open-set"
"""Marks an ``enum`` of the published schema as an open set: a minor version may add values (a
reader handles one it does not know as the field's description says); removing one is major."""


def _open_code(schema: dict[str, Any]) -> None:
    """A code of an open set: any code is valid, the known ones are listed (``$ref`` to the enum)."""
    known = schema.pop("$ref")
    schema["anyOf"] = [{"$ref": known}, {"type": "string", "minLength": 1}]


class Message(BaseModel):
    """Base of every message body."""

    # Each field's docstring is its description in the published JSON Schema (contracts/schemas/).
    model_config = ConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=True)

    VERSION: ClassVar[str] = SCHEMA_VERSION
    """The version this build writes; it reads every minor version of the same major."""

    schema_version: str = SCHEMA_VERSION
    """``MAJOR.MINOR`` of this message type: a reader refuses another major and reads every minor of
    its own, ignoring the fields it does not know."""

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

    model_config = ConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=True)


class PeriodClosed(Message):
    """The scheduler says a billing period has ended; ``period_id`` is the idempotency key."""

    # The pattern is checked through ``period`` (a ``Period``); the schema states it here too.
    period_id: str = Field(min_length=1, max_length=64, json_schema_extra={"pattern": PERIOD_ID_PATTERN})
    """The period's id and idempotency key. The coordinator takes only a calendar month (``2026-10``)
    whose bounds are its calendar's, once it is over; any other is refused and dead-lettered."""
    start: UtcDatetime
    """Start of the period, inclusive: an RFC 3339 date-time with an offset (normalised to UTC)."""
    end: UtcDatetime
    """End of the period, exclusive: after ``start``."""
    requested_by: str = Field(min_length=1, max_length=128)
    """Who asked (a person, a job): a note. The report records the AMQP ``user_id`` the broker
    verified as its requester; only the scheduler's broker user may close a period."""

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
    """Random per request (128 bits), also the AMQP ``correlation_id`` and ``message_id``: every
    reply names it, and the coordinator takes a reply only for a request it is waiting on."""
    report_id: UUID
    """The report this request gathers for (a UUIDv5 of the period and the revision)."""
    period: Period
    """The period whose complete inventory is asked for."""
    service: str = ServiceName
    """The service asked: its name, the routing key on ``billing.usage``, its queue
    ``usage.requests.<service>``."""
    deadline: UtcDatetime
    """When the coordinator stops waiting for the answer (the request's AMQP ``expiration`` runs out
    then too): a service skips a request past its deadline."""


class UsageRecord(Part):
    """One billable resource of one account, in the service's own units, discounts applied."""

    account_id: str = Field(min_length=1, max_length=128)
    """The account billed for the resource."""
    resource_id: str = Field(min_length=1, max_length=256)
    """The resource within the service (an instance, a volume, an interface). Within one service's
    answer an (``account_id``, ``resource_id``, ``metric``) appears once."""
    resource_type: str = Field(min_length=1, max_length=64)
    """What kind of resource it is (``instance``, ``volume``): shown, never priced."""
    metric: str = Field(min_length=1, max_length=64)
    """The billable item the usage counts towards: a key of the rate card's items (``vcpu``,
    ``memory``, ``block_storage``, ``egress``). A metric the card does not price aborts the report
    (``unknown_unit``)."""
    quantity: NonNegativeDecimal
    """The usage over the whole period in ``unit``, discounts and allowances applied: a decimal
    string ≥ 0 of at most 64 characters, with at most 30 digits before the point and 18 after
    (``1E+29`` is one, ``1E-19`` is not). Never a float. The coordinator also reads a JSON integer;
    the schema asks for the string."""
    unit: str = Field(min_length=1, max_length=32, json_schema_extra={"enum": list(UNITS), OPEN_SET: True})
    """The unit of ``quantity``: one the coordinator converts to the rate card's units
    (``contracts/units.py``). An open set, grown in minor versions: a coordinator that cannot
    convert a unit parses the record and aborts the report with ``unknown_unit`` naming it."""
    attributes: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra={
            "maxProperties": MAX_ATTRIBUTES,
            "propertyNames": {"maxLength": MAX_ATTRIBUTE_LENGTH},
            "additionalProperties": {"type": "string", "maxLength": MAX_ATTRIBUTE_LENGTH},
        },
    )
    """Labels shown with the record (region, flavour, plan), never priced: at most 32, names and
    values at most 256 characters each (the coordinator's ``max_attributes`` and
    ``max_attribute_length``, by default)."""


class Chunk(Part):
    """Position of one reply in a multi-part answer.

    ``total_records`` counts the whole answer on the **last** chunk; earlier chunks may carry the
    count so far (it is not read). ``answer_id`` (added in 1.2) names one computation of the
    answer: a service that answers again (its request was redelivered) uses a new one, and chunks
    of two answers are never mixed. Omitted, every chunk belongs to the same answer.
    """

    seq: int = Field(ge=0, json_schema_extra={"maximum": MAX_CHUNKS_PER_ANSWER - 1})
    """The chunk's number in its answer: 0, 1, 2… with no gap, below the coordinator's
    ``max_chunks_per_answer`` (100,000 by default)."""
    last: bool
    """True on the answer's last chunk, and on no other."""
    total_records: int = Field(ge=0, json_schema_extra={"maximum": MAX_RECORDS_PER_ANSWER})
    """On the last chunk, the records in the whole answer (at most the coordinator's
    ``max_records_per_answer``, 10,000,000 by default); on an earlier one, not read."""
    answer_id: str | None = Field(default=None, min_length=1, max_length=64)
    """Names one computation of the answer: a new one when the service answers again (added in 1.2)."""


class ErrorCode(StrEnum):
    """The error codes of the responder SDK; a service may send others (``ServiceError.code``)."""

    INTERNAL = "internal"
    INVALID_REQUEST = "invalid_request"
    UNAVAILABLE = "unavailable"


class ServiceError(Part):
    """Why a service could not answer; the report is aborted as ``service_error`` with it."""

    code: str = Field(
        min_length=1, max_length=64, json_schema_extra={"examples": [c.value for c in ErrorCode]}
    )
    """A code for the failure: ``internal``, ``invalid_request`` (the request was not valid for this
    service), ``unavailable``, or one of the service's own."""
    message: str = Field(max_length=2000)
    """What went wrong, for the operator who reads the aborted report."""
    retryable: bool = False
    """Whether asking again later may succeed (a replay of the period); shown with the reason."""


class UsageReply(Message):
    """Sub-service → coordinator, to ``reply_to`` with the request's ``correlation_id``.

    1.2 added the optional ``chunk.answer_id``: an older reader ignores it and loses nothing.
    """

    VERSION: ClassVar[str] = "1.2"

    model_config = ConfigDict(
        json_schema_extra={
            # What the model validator below checks, as far as a schema can say it.
            "allOf": [
                {
                    "if": {"properties": {"status": {"const": "error"}}, "required": ["status"]},
                    "then": {"required": ["error"], "properties": {"error": {"type": "object"}}},
                },
                {
                    "if": {"properties": {"status": {"const": "ok"}}, "required": ["status"]},
                    "then": {"properties": {"error": {"type": "null"}}},
                },
            ]
        }
    )

    schema_version: str = "1.2"
    request_id: str = Field(min_length=1, max_length=128)
    """The request's ``request_id`` (the reply's AMQP ``correlation_id`` is the same)."""
    service: str = ServiceName
    """The answering service: the request's ``service``."""
    status: Literal["ok", "error"]
    """``ok``: the records of this chunk follow; ``error``: the service cannot answer, ``error`` says why."""
    records: tuple[UsageRecord, ...] = Field(
        default=(), json_schema_extra={"maxItems": MAX_RECORDS_PER_CHUNK}
    )
    """This chunk's records: at most the coordinator's ``max_records_per_chunk`` (10,000 by default)."""
    chunk: Chunk = Chunk(seq=0, last=True, total_records=0)
    """Where this reply sits in the answer. Omitted: the reply is the whole answer (one last chunk
    holding every record)."""
    error: ServiceError | None = None
    """Set when ``status`` is ``error``, absent or null when it is ``ok``."""

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
    """One priced line: an item of the rate card, or one tier of it."""

    item: str
    """The rate card's item (its key: ``vcpu``, ``egress``)."""
    description: str
    """The item's description on the rate card."""
    tier: int | None = None
    """The tier priced, from 1, for a graduated or volume price (a graduated item has a line per
    tier holding units); null for other prices."""
    quantity: DecimalString
    """The billable quantity in ``unit``: the account's usage converted, summed and rounded once,
    half-even, to 6 places."""
    unit: str
    """The billable unit (the rate card's: ``vCPU-hour``, ``GB-month``)."""
    unit_price: DecimalString
    """The price of one unit in the invoice's currency (a package price for a package item)."""
    amount: DecimalString
    """What the line costs, rounded to the currency's minor unit with the rate card's rule."""


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
    """A UUIDv5 of the period, the revision and the account, also the AMQP ``message_id``: every
    copy of the invoice carries it, so a payment service de-duplicates on it."""
    report_id: UUID
    """The report revision that issued it."""
    revision: int = Field(ge=1)
    """The revision of the period's report that issued it: 1, then one more for each replay."""
    account_id: str
    """The account invoiced."""
    period: Period
    """The billing period invoiced."""
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    """The rate card's currency: an ISO 4217 code."""
    lines: tuple[InvoiceLine, ...]
    """One line per item (per tier holding units for a graduated price), sorted by item and tier."""
    subtotal: DecimalString
    """The sum of the lines' amounts."""
    total: DecimalString
    """What the account owes for the period: the sum of the rounded lines."""
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

    VERSION: ClassVar[str] = "1.1"

    schema_version: str = "1.1"
    credit_note_id: UUID
    """A UUIDv5 of the period, the revision and the account, also the AMQP ``message_id``."""
    credits: UUID
    """The invoice this credit note cancels."""
    report_id: UUID
    """The revision that issued it (and the corrected invoice)."""
    revision: int = Field(ge=1)
    """That report's revision."""
    account_id: str
    """The account credited."""
    period: Period
    """The billing period of the cancelled invoice."""
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    """The cancelled invoice's currency (ISO 4217)."""
    lines: tuple[InvoiceLine, ...]
    """The cancelled invoice's lines."""
    subtotal: DecimalString
    """The cancelled invoice's subtotal."""
    total: DecimalString
    """The amount credited, positive: the cancelled invoice's total."""
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
    """The report (a UUIDv5 of the period and the revision)."""
    revision: int = Field(ge=1)
    """The revision of the period's report."""
    period: Period
    """The billing period reported."""
    currency: str
    """The currency of every invoice of the report (ISO 4217)."""
    invoice_count: int = Field(ge=0)
    """How many invoices the report issued; each names this ``report_id``."""
    total: DecimalString
    """The sum of the totals of the report's invoices."""
    records: int = Field(ge=0)
    """How many usage records the report was built from."""


class AbortCode(StrEnum):
    """The reason codes Reckon knows: an open set (``ReportAborted`` 2.0), so another may come."""

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
    """One reason a report was aborted."""

    code: AbortCode = Field(json_schema_extra=_open_code)
    """What failed (docs/architecture.md lists the codes). An open set: a reader takes a code it does
    not know as a failure it cannot explain further, never as an invalid event."""
    message: str
    """What happened, for an operator."""
    service: str | None = None
    """The sub-service at fault, when there is one."""

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
    """The report aborted (a UUIDv5 of the period and the revision)."""
    revision: int = Field(ge=1)
    """The revision of the period's report."""
    period: Period
    """The billing period of the report."""
    reasons: tuple[AbortReason, ...] = Field(min_length=1)
    """Every reason known when it was aborted, at least one."""
