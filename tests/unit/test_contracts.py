"""The message contracts: JSON round trips, exact decimals, UTC times, versions, ids and topology names."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from contracts import (
    DELIVERY_LIMIT,
    SCHEMA_VERSION,
    AbortCode,
    AbortReason,
    Chunk,
    InvoiceIssued,
    InvoiceLine,
    Message,
    Period,
    PeriodClosed,
    ReportAborted,
    ReportCompleted,
    ServiceError,
    Topology,
    UsageRecord,
    UsageReply,
    UsageRequest,
    invoice_id,
    report_id,
)
from transport.redact import broker_unavailable, redact_url

OCTOBER = Period.month("2026-10")
REPORT = report_id("2026-10", 1)
RECORD = UsageRecord(
    account_id="acme",
    resource_id="vol-1",
    resource_type="volume",
    metric="block_storage",
    quantity=Decimal("1.50"),
    unit="byte-second",
    attributes={"zone": "eu-1"},
)
LINE = InvoiceLine(
    item="vcpu",
    description="Compute, vCPU",
    quantity=Decimal("744.000000"),
    unit="vCPU-hour",
    unit_price=Decimal("0.0320"),
    amount=Decimal("23.81"),
)

MESSAGES: dict[str, Message] = {
    "PeriodClosed": PeriodClosed.for_period(OCTOBER, requested_by="scheduler"),
    "UsageRequest": UsageRequest(
        request_id="rep/compute/a1",
        report_id=REPORT,
        period=OCTOBER,
        service="compute",
        deadline=datetime(2026, 11, 1, 0, 5, tzinfo=UTC),
    ),
    "UsageReply ok": UsageReply(
        request_id="rep/storage/a1",
        service="storage",
        status="ok",
        records=(RECORD,),
        chunk=Chunk(seq=1, last=True, total_records=3),
    ),
    "UsageReply error": UsageReply(
        request_id="rep/storage/a1",
        service="storage",
        status="error",
        error=ServiceError(code="unavailable", message="db down", retryable=True),
    ),
    "InvoiceIssued": InvoiceIssued(
        invoice_id=invoice_id("acme", "2026-10", 1),
        report_id=REPORT,
        revision=1,
        account_id="acme",
        period=OCTOBER,
        currency="EUR",
        lines=(LINE,),
        subtotal=Decimal("23.81"),
        rate_card="sha256:" + "0" * 64,
        total=Decimal("23.81"),
    ),
    "ReportCompleted": ReportCompleted(
        report_id=REPORT,
        revision=1,
        period=OCTOBER,
        currency="EUR",
        invoice_count=1,
        total=Decimal("23.81"),
        records=12,
    ),
    "ReportAborted": ReportAborted(
        report_id=REPORT,
        revision=2,
        period=OCTOBER,
        reasons=(AbortReason(code=AbortCode.DEADLINE, message="no reply", service="storage"),),
    ),
}


def reply_with_quantity(quantity: Any) -> dict[str, Any]:
    record = {**RECORD.model_dump(mode="json"), "quantity": quantity}
    chunk = {"seq": 0, "last": True, "total_records": 1}
    return {"request_id": "r", "service": "storage", "status": "ok", "records": [record], "chunk": chunk}


def request_json(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(MESSAGES["UsageRequest"].to_json())
    data.update(changes)
    return data


# Round trips and decimals ----------------------------------------------------------------------


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_every_message_survives_a_json_round_trip(message: Message) -> None:
    assert type(message).from_json(message.to_json()) == message


def test_quantities_travel_as_strings_keeping_their_digits() -> None:
    body = json.loads(MESSAGES["UsageReply ok"].to_json())

    assert body["records"][0]["quantity"] == "1.50"


def test_money_travels_as_strings_keeping_their_digits() -> None:
    body = json.loads(MESSAGES["InvoiceIssued"].to_json())

    assert (body["subtotal"], body["total"]) == ("23.81", "23.81")
    assert body["lines"][0]["unit_price"] == "0.0320"


def test_a_float_quantity_is_rejected_with_a_message_saying_so() -> None:
    with pytest.raises(ValidationError, match=r"must be a decimal string such as '12.50', not a float"):
        UsageReply.model_validate(reply_with_quantity(1.5))


def test_a_float_in_a_json_body_is_rejected() -> None:
    body = json.dumps(reply_with_quantity(0.1))

    with pytest.raises(ValidationError, match=r"records\.0\.quantity"):
        UsageReply.from_json(body)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_non_finite_quantities_are_rejected(text: str) -> None:
    with pytest.raises(ValidationError, match="is not a finite number"):
        UsageReply.model_validate(reply_with_quantity(text))


def test_a_negative_quantity_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"-0\.01 is negative"):
        UsageReply.model_validate(reply_with_quantity("-0.01"))


def test_a_quantity_that_is_not_a_number_is_rejected() -> None:
    with pytest.raises(ValidationError, match="'lots' is not a decimal number"):
        UsageReply.model_validate(reply_with_quantity("lots"))


# Times and periods -----------------------------------------------------------------------------


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        Period(period_id="x", start=datetime(2026, 10, 1), end=OCTOBER.end)


def test_aware_datetimes_are_normalised_to_utc() -> None:
    paris = timezone(timedelta(hours=2))
    period = Period(period_id="x", start=datetime(2026, 10, 1, 2, tzinfo=paris), end=OCTOBER.end)

    assert period.start.tzinfo is UTC
    assert period.start == datetime(2026, 10, 1, tzinfo=UTC)
    assert period.model_dump(mode="json")["start"] == "2026-10-01T00:00:00Z"


@pytest.mark.parametrize("end", [OCTOBER.start, OCTOBER.start - timedelta(microseconds=1)])
def test_a_period_must_start_before_it_ends(end: datetime) -> None:
    with pytest.raises(ValidationError, match=r"period 2026-10: start .* is not before end"):
        Period(period_id="2026-10", start=OCTOBER.start, end=end)


def test_period_closed_validates_its_period() -> None:
    with pytest.raises(ValidationError, match="period 2026-10: start"):
        PeriodClosed(period_id="2026-10", start=OCTOBER.end, end=OCTOBER.start, requested_by="op")


def test_month_is_the_utc_calendar_month() -> None:
    assert (OCTOBER.start, OCTOBER.end) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
    )
    assert OCTOBER.seconds == Decimal(31 * 86_400)


def test_december_ends_on_the_first_of_january_of_the_next_year() -> None:
    december = Period.month("2026-12")

    assert (december.start, december.end) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize("period_id", ["2026-13", "October", "2026-10-01"])
def test_month_refuses_anything_but_yyyy_mm(period_id: str) -> None:
    with pytest.raises(ValueError, match=f"period '{period_id}' is not a month written YYYY-MM"):
        Period.month(period_id)


def test_overlap_seconds_is_exact_to_the_microsecond() -> None:
    last_microsecond = OCTOBER.end - timedelta(microseconds=1)
    straddling_start = OCTOBER.start - timedelta(hours=1)

    assert OCTOBER.overlap_seconds(last_microsecond, None) == Decimal("0.000001")
    assert OCTOBER.overlap_seconds(straddling_start, OCTOBER.start + timedelta(microseconds=1500)) == Decimal(
        "0.0015"
    )


def test_overlap_seconds_is_zero_outside_the_period() -> None:
    september = Period.month("2026-09")
    november = Period.month("2026-11")

    assert OCTOBER.overlap_seconds(september.start, september.end) == 0
    assert OCTOBER.overlap_seconds(november.start, None) == 0


def test_contains_is_half_open() -> None:
    assert OCTOBER.contains(OCTOBER.start)
    assert not OCTOBER.contains(OCTOBER.end)


# Versions and forward compatibility ------------------------------------------------------------


def test_an_unknown_major_schema_version_is_rejected_clearly() -> None:
    with pytest.raises(
        ValidationError, match=r"schema_version 2\.0 is not supported: this build reads major version 1"
    ):
        UsageRequest.model_validate(request_json(schema_version="2.0"))


def test_a_newer_minor_schema_version_is_accepted() -> None:
    assert UsageRequest.model_validate(request_json(schema_version="1.7")).schema_version == "1.7"


def test_a_schema_version_that_is_not_major_minor_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"is not MAJOR\.MINOR"):
        UsageRequest.model_validate(request_json(schema_version="one"))


def test_each_message_type_carries_its_own_version() -> None:
    assert json.loads(MESSAGES["UsageRequest"].to_json())["schema_version"] == SCHEMA_VERSION
    assert json.loads(MESSAGES["ReportCompleted"].to_json())["schema_version"] == "2.0"


def test_report_completed_1x_is_refused_by_a_2x_reader_rather_than_misread() -> None:
    old = json.loads(MESSAGES["ReportCompleted"].to_json())
    old.update(schema_version="1.1", invoices=[])
    refused = r"schema_version 1\.1 is not supported: this build reads major version 2"
    with pytest.raises(ValidationError, match=refused):
        ReportCompleted.model_validate(old)


def test_report_completed_stays_small_at_any_number_of_invoices() -> None:
    event = MESSAGES["ReportCompleted"].model_copy(update={"invoice_count": 100_000})

    assert len(event.to_json()) < 1_000


def test_unknown_fields_are_ignored() -> None:
    data = reply_with_quantity("1")
    data["priority"] = "high"
    data["records"][0]["region"] = "eu"

    reply = UsageReply.model_validate(data)

    assert reply.records[0].quantity == Decimal("1")


def test_unknown_fields_inside_a_nested_period_are_ignored() -> None:
    data = request_json()
    data["period"]["timezone"] = "UTC"

    assert UsageRequest.model_validate(data).period == OCTOBER


# UsageReply consistency ------------------------------------------------------------------------


def test_an_error_reply_needs_an_error() -> None:
    with pytest.raises(ValidationError, match=r"status 'error' needs an error \{code, message\}"):
        UsageReply(request_id="r", service="storage", status="error")


def test_an_ok_reply_must_not_carry_an_error() -> None:
    with pytest.raises(ValidationError, match="status 'ok' must not carry an error"):
        UsageReply(request_id="r", service="storage", status="ok", error=ServiceError(code="x", message="y"))


def test_a_last_chunk_cannot_announce_fewer_records_than_it_carries() -> None:
    with pytest.raises(
        ValidationError, match=r"chunk\.total_records 0 is less than the 1 records in the last chunk"
    ):
        UsageReply(
            request_id="r",
            service="storage",
            status="ok",
            records=(RECORD,),
            chunk=Chunk(seq=0, last=True, total_records=0),
        )


# Deterministic ids -----------------------------------------------------------------------------


def test_report_id_is_deterministic_and_differs_per_revision() -> None:
    assert report_id("2026-10", 1) == report_id("2026-10", 1)
    assert report_id("2026-10", 1) != report_id("2026-10", 2)
    assert report_id("2026-10", 1) != report_id("2026-11", 1)


def test_invoice_id_is_deterministic_and_differs_per_revision_and_account() -> None:
    first = invoice_id("acme", "2026-10", 1)

    assert invoice_id("acme", "2026-10", 1) == first
    assert len({first, invoice_id("acme", "2026-10", 2), invoice_id("zeta", "2026-10", 1)}) == 3
    assert first.version == 5


# Topology --------------------------------------------------------------------------------------


def test_default_names_match_the_design_table() -> None:
    topology = Topology()

    assert [(e.name, e.kind.value) for e in topology.exchanges()] == [
        ("billing.periods", "topic"),
        ("billing.usage", "direct"),
        ("billing.invoices", "topic"),
        ("billing.reports", "topic"),
        ("billing.dlx", "topic"),
    ]
    queues = [
        topology.period_closed_queue,
        topology.usage_queue("storage"),
        topology.payments_queue,
        topology.dead_letters_queue,
    ]
    assert [(q.name, q.exchange.name, q.routing_key) for q in queues] == [
        ("accounting.period-closed", "billing.periods", "period.closed"),
        ("usage.requests.storage", "billing.usage", "storage"),
        ("payments.invoices", "billing.invoices", "invoice.issued"),
        ("billing.dead-letters", "billing.dlx", "#"),
    ]


def test_the_namespace_prefixes_every_name() -> None:
    topology = Topology("ci-42")
    queues = [
        topology.period_closed_queue,
        topology.usage_queue("storage"),
        topology.payments_queue,
        topology.dead_letters_queue,
    ]
    names = [e.name for e in topology.exchanges()] + [q.name for q in queues]

    assert all(name.startswith("ci-42.") for name in names), names
    assert topology.usage_queue("storage").name == "ci-42.usage.requests.storage"
    assert topology.usage_queue("storage").routing_key == "storage"


def test_work_queues_are_quorum_queues_that_dead_letter_after_a_delivery_limit() -> None:
    topology = Topology("ci")
    expected = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "ci.billing.dlx",
        "x-delivery-limit": DELIVERY_LIMIT,
    }

    assert topology.payments_queue.arguments == expected
    assert topology.period_closed_queue.arguments == {**expected, "x-single-active-consumer": True}
    assert topology.dead_letters_queue.arguments == {"x-queue-type": "quorum"}


def test_usage_request_queues_are_classic_queues_that_dead_letter() -> None:
    assert Topology("ci").usage_queue("compute").arguments == {
        "x-queue-type": "classic",
        "x-dead-letter-exchange": "ci.billing.dlx",
    }


# Broker helpers --------------------------------------------------------------------------------


def test_redact_url_hides_the_password() -> None:
    assert (
        redact_url("amqps://billing:s3cret@mq.example.com:5671/prod")
        == "amqps://billing:***@mq.example.com:5671/prod"
    )


def test_redact_url_leaves_a_url_without_password_alone() -> None:
    assert redact_url("amqp://mq.example.com/") == "amqp://mq.example.com/"


def test_redact_url_keeps_an_ipv6_host_bracketed() -> None:
    assert redact_url("amqp://u:p@[::1]:5672/") == "amqp://u:***@[::1]:5672/"


def test_broker_unavailable_names_the_url_without_password_and_how_to_start_a_broker() -> None:
    text = broker_unavailable("amqp://guest:guest@127.0.0.1:5672/", ConnectionRefusedError("refused"))

    assert "AMQP_URL=amqp://guest:***@127.0.0.1:5672/" in text
    assert "(refused)" in text
    assert "`rabbitmq-server -detached`" in text
    assert "guest:guest" not in text


# JSON Schema -----------------------------------------------------------------------------------

DECIMAL_FIELDS = {"quantity", "unit_price", "amount", "subtotal", "total"}


def decimal_field_schemas(schema: Any) -> list[tuple[str, Any]]:
    """Every (name, schema) of a decimal field anywhere in a JSON Schema document."""
    found: list[tuple[str, Any]] = []
    if isinstance(schema, dict):
        for name, prop in schema.get("properties", {}).items():
            if name in DECIMAL_FIELDS:
                found.append((name, prop))
        for value in schema.values():
            found.extend(decimal_field_schemas(value))
    elif isinstance(schema, list):
        for value in schema:
            found.extend(decimal_field_schemas(value))
    return found


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_every_message_has_a_json_schema_with_a_string_schema_version(message: Message) -> None:
    schema = type(message).model_json_schema()

    assert schema["properties"]["schema_version"]["type"] == "string"


@pytest.mark.parametrize("model", [UsageReply, InvoiceIssued, ReportCompleted], ids=lambda m: m.__name__)
def test_json_schema_says_decimal_fields_are_strings(model: type[Message]) -> None:
    fields = decimal_field_schemas(model.model_json_schema())

    assert fields
    assert all(prop.get("type") == "string" for _, prop in fields), fields


def test_a_reply_without_chunk_is_one_complete_chunk() -> None:
    body = (
        b'{"schema_version": "1.0", "request_id": "r", "service": "compute", "status": "ok", "records": '
        b'[{"account_id": "a", "resource_id": "vm", "resource_type": "vm", "metric": "vcpu", '
        b'"quantity": "1", "unit": "vCPU-second"}]}'
    )
    reply = UsageReply.from_json(body)

    assert reply.chunk == Chunk(seq=0, last=True, total_records=1)


def test_negative_zero_quantity_travels_as_zero() -> None:
    quantity = UsageRecord(
        account_id="a", resource_id="r", resource_type="vm", metric="vcpu", quantity="-0", unit="u"
    ).quantity

    assert str(quantity) == "0"


# Bounded quantities (docs/architecture.md states the limits) ------------------------------------


@pytest.mark.parametrize(
    ("quantity", "complaint"),
    [
        ("1e999999999", "more than 30 digits before the decimal point"),
        ("1e999999", "more than 30 digits before the decimal point"),
        ("9" * 31, "more than 30 digits before the decimal point"),
        ("1" * 200_000, "longer than 64 characters"),
        (10**30, "more than 30 digits before the decimal point"),
        ("0.0000000000000000001", "more than 18 digits after the decimal point"),
        ("1E-19", "more than 18 digits after the decimal point"),
        ("0E+99", "exponent above 29"),
    ],
)
def test_a_quantity_out_of_the_contracts_range_is_a_validation_error_naming_the_field(
    quantity: object, complaint: str
) -> None:
    with pytest.raises(ValidationError, match=r"records\.0\.quantity") as refused:
        UsageReply.model_validate(reply_with_quantity(quantity))
    assert complaint in str(refused.value)


@pytest.mark.parametrize(
    "quantity", ["9" * 30, "0." + "1" * 18, "123456789012345678901234567890.123456789012345678", "0", "1E+29"]
)
def test_quantities_at_the_edge_of_the_range_are_accepted(quantity: str) -> None:
    reply = UsageReply.model_validate(reply_with_quantity(quantity))
    assert reply.records[0].quantity == Decimal(quantity)


def test_an_absurd_quantity_is_refused_quickly_and_only_with_a_validation_error() -> None:
    body = json.dumps(reply_with_quantity("9" * 200_000))
    with pytest.raises(ValidationError):
        UsageReply.from_json(body)
