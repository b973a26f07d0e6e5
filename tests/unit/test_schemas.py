"""The published JSON Schemas (contracts/schemas/): up to date with the models, and what they accept.

Every schema's examples and real messages built with the models (the SDK's chunks and error replies,
the scheduler's event, the golden invoices, an abort the normalizer gives) are valid against it with
the `jsonschema` library; what the contract refuses — a unit outside the vocabulary, a float or an
out-of-bounds quantity, a missing required field, more than the limits — is refused by the schema
before any report runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft7Validator, Draft202012Validator
from pydantic import ValidationError

from accounting.core.normalizer import CONVERSIONS, normalize
from contracts import (
    AbortReason,
    CreditNoteIssued,
    InvoiceIssued,
    Message,
    Period,
    PeriodClosed,
    ReportAborted,
    ReportCompleted,
    UsageRecord,
    UsageReply,
    UsageRequest,
    report_id,
)
from contracts import json_schema as generator
from contracts.limits import (
    MAX_ATTRIBUTE_LENGTH,
    MAX_ATTRIBUTES,
    MAX_CHUNKS_PER_ANSWER,
    MAX_RECORDS_PER_CHUNK,
)
from contracts.types import QUANTITY_PATTERN
from contracts.units import UNIT_CONVERSIONS, UNITS
from scripts.schemas import SCHEMAS, differences
from tests.golden.synthetic import synthetic_records
from workers.sdk.protocol import Refuse, deadline_reply, decide, internal_reply, ok_replies

GOLDEN_INVOICES = Path(__file__).resolve().parents[1] / "golden" / "demo-2026-10-invoices.json"
OCTOBER = Period.month("2026-10")
REQUEST = UsageRequest(
    request_id="0f5e2a9c4b7d4e1f8a3b6c9d2e5f8a1b",
    report_id=report_id("2026-10", 1),
    period=OCTOBER,
    service="compute",
    deadline=datetime(2026, 11, 1, 0, 31, tzinfo=UTC),
)


def committed(model: type[Message]) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / generator.schema_file(model)).read_text(encoding="utf-8"))
    return schema


def validator(model: type[Message]) -> Draft202012Validator:
    return Draft202012Validator(committed(model), format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(model: type[Message], body: Any) -> list[str]:
    """Why the committed schema of ``model`` refuses ``body`` (empty: it is valid)."""
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator(model).iter_errors(body)
    ]


def reply_body(**record: Any) -> dict[str, Any]:
    """A valid one-record reply as JSON, with ``record``'s fields changed (None: removed)."""
    body: dict[str, Any] = json.loads(generator.examples(UsageReply)[0].to_json())
    fields = body["records"][0]
    for name, value in record.items():
        if value is None:
            fields.pop(name)
        else:
            fields[name] = value
    return body


# The committed files are the models' --------------------------------------------------------------


def test_the_committed_schemas_are_those_the_models_generate() -> None:
    found = differences(SCHEMAS, generator.schema_files())

    assert not found, (
        "contracts/schemas/ differs from the models in contracts/: "
        + "; ".join(found)
        + f". Run `{generator.COMMAND}` (or `{generator.COMMAND_WITHOUT_MAKE}`) "
        "and commit contracts/schemas/."
    )


def test_there_is_one_schema_per_message_type_and_major_version_and_an_index() -> None:
    index = json.loads((SCHEMAS / generator.INDEX).read_text(encoding="utf-8"))

    assert {entry["file"] for entry in index["messages"]} == {
        "PeriodClosed.v1.json",
        "UsageRequest.v1.json",
        "UsageReply.v1.json",
        "InvoiceIssued.v2.json",
        "CreditNoteIssued.v1.json",
        "ReportCompleted.v2.json",
        "ReportAborted.v2.json",
    }
    for entry in index["messages"]:
        assert (SCHEMAS / entry["file"]).exists()
        assert json.loads((SCHEMAS / entry["file"]).read_text())["$id"] == entry["$id"]


@pytest.mark.parametrize("model", generator.MESSAGE_TYPES, ids=lambda m: m.__name__)
def test_each_schema_is_draft_2020_12_and_reads_the_same_as_draft_07(model: type[Message]) -> None:
    schema = committed(model)

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{model.__name__}.v{generator.major(model)}.json")
    assert schema["title"] and schema["description"]
    Draft202012Validator.check_schema(schema)
    Draft7Validator.check_schema(schema)  # AsyncAPI's default schema format is a superset of draft-07
    beside_ref = [
        (path, sorted(keys))
        for path, keys in _ref_siblings(schema, "")
        if keys - {"description", "default", "title"}
    ]
    assert not beside_ref, f"draft-07 ignores keywords beside $ref: {beside_ref}"


def _ref_siblings(schema: Any, path: str) -> Iterator[tuple[str, set[str]]]:
    if isinstance(schema, dict):
        if "$ref" in schema:
            yield path, set(schema) - {"$ref"}
        for key, value in schema.items():
            yield from _ref_siblings(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for number, value in enumerate(schema):
            yield from _ref_siblings(value, f"{path}/{number}")


@pytest.mark.parametrize("model", generator.MESSAGE_TYPES, ids=lambda m: m.__name__)
def test_every_field_has_a_description(model: type[Message]) -> None:
    schema = committed(model)
    objects = [schema, *schema.get("$defs", {}).values()]
    missing = [
        f"{obj.get('title', model.__name__)}.{name}"
        for obj in objects
        for name, prop in obj.get("properties", {}).items()
        if not prop.get("description")
    ]

    assert not missing


@pytest.mark.parametrize("model", generator.MESSAGE_TYPES, ids=lambda m: m.__name__)
def test_schema_version_is_required_and_of_the_current_major(model: type[Message]) -> None:
    schema = committed(model)
    major = generator.major(model)

    assert schema["required"][0] == "schema_version"
    assert errors(model, {**schema["examples"][0], "schema_version": f"{major}.99"}) == []
    assert errors(model, {**schema["examples"][0], "schema_version": f"{major + 1}.0"})
    assert errors(
        model, {key: value for key, value in schema["examples"][0].items() if key != "schema_version"}
    )


# What the schemas accept ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", generator.MESSAGE_TYPES, ids=lambda m: m.__name__)
def test_each_schemas_examples_are_real_messages_valid_against_it(model: type[Message]) -> None:
    schema = committed(model)

    assert schema["examples"]
    for example in schema["examples"]:
        assert errors(model, example) == []
        assert model.model_validate(example).model_dump(mode="json") == example


def sdk_replies() -> list[UsageReply]:
    records = [UsageRecord.model_validate(record) for record in synthetic_records(1_200)]
    refused = decide(
        b'{"service": "compute"}', REQUEST.request_id, "compute", datetime(2026, 11, 1, tzinfo=UTC)
    )
    assert isinstance(refused, Refuse) and refused.reply is not None
    return [
        *ok_replies(REQUEST, records, chunk_size=500),
        *ok_replies(REQUEST, [], chunk_size=500),  # an empty inventory: one empty last chunk
        deadline_reply(REQUEST),
        internal_reply(REQUEST, RuntimeError("the store is locked")),
        refused.reply,
    ]


def test_the_sdks_chunks_and_error_replies_are_valid() -> None:
    replies = sdk_replies()

    assert len(replies) == 7
    for reply in replies:
        assert errors(UsageReply, json.loads(reply.to_json())) == []


def test_the_golden_invoices_a_2_0_reader_took_are_valid_against_the_2_x_schema() -> None:
    invoices = json.loads(GOLDEN_INVOICES.read_text())["invoices"]

    assert len(invoices) == 40
    for invoice in invoices:
        assert errors(InvoiceIssued, invoice) == []


def test_events_built_by_the_parties_are_valid() -> None:
    closed = PeriodClosed.for_period(Period.month("2026-09"), "reckon-scheduler")
    reasons = normalize(
        {"storage": [UsageRecord.model_validate(reply_body(unit="bytes")["records"][0])]},
        OCTOBER,
        {"vcpu": "vCPU-hour"},
    )
    assert isinstance(reasons, tuple)
    aborted = ReportAborted(report_id=report_id("2026-10", 1), revision=1, period=OCTOBER, reasons=reasons)

    assert errors(PeriodClosed, json.loads(closed.to_json())) == []
    assert errors(UsageRequest, json.loads(REQUEST.to_json())) == []
    assert errors(ReportAborted, json.loads(aborted.to_json())) == []


# What the schemas refuse ------------------------------------------------------------------------------


def test_the_unit_vocabulary_is_the_normalizers_and_the_schemas_enum() -> None:
    unit = committed(UsageReply)["$defs"]["UsageRecord"]["properties"]["unit"]

    assert unit["enum"] == list(UNITS)
    assert unit["x-open-set"] is True
    assert set(CONVERSIONS) == set(UNIT_CONVERSIONS)
    assert {unit for pair in CONVERSIONS for unit in pair} == set(UNITS)


def test_a_unit_outside_the_vocabulary_is_refused_by_the_schema_and_aborts_a_report_naming_it() -> None:
    body = reply_body(unit="bytes")

    assert any("'bytes' is not one of" in error for error in errors(UsageReply, body))
    # The model still parses it: the coordinator aborts the report with unknown_unit, naming it.
    record = UsageReply.model_validate(body).records[0]
    reasons = normalize({"storage": [record]}, OCTOBER, {record.metric: "GB-hour"})
    assert isinstance(reasons, tuple)
    [reason] = reasons
    assert reason.code == "unknown_unit" and "'bytes'" in reason.message


@pytest.mark.parametrize(
    "quantity", [1.5, 3600.25, -1, 3600, "1.5e400", "-1", "1E+30", "1E-19", "0.0000000000000000001"]
)
def test_a_float_integer_negative_or_out_of_bounds_quantity_is_refused(quantity: object) -> None:
    # A JSON integer is read by the coordinator, but the published contract asks for a string.
    assert errors(UsageReply, reply_body(quantity=quantity))


@pytest.mark.parametrize(
    "quantity", ["0", "3600", "12.5", "9" * 30, "0." + "1" * 18, "1E+29", "1.5E-7", "0E-18"]
)
def test_quantities_within_the_bounds_are_accepted(quantity: str) -> None:
    assert errors(UsageReply, reply_body(quantity=quantity)) == []
    UsageReply.model_validate(reply_body(quantity=quantity))


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (UsageReply, "request_id"),
        (UsageReply, "status"),
        (UsageRequest, "deadline"),
        (PeriodClosed, "period_id"),
        (InvoiceIssued, "invoice_id"),
        (InvoiceIssued, "total"),
        (CreditNoteIssued, "credits"),
        (ReportCompleted, "invoice_count"),
        (ReportAborted, "reasons"),
    ],
)
def test_a_missing_required_field_is_refused(model: type[Message], field: str) -> None:
    example = committed(model)["examples"][0]
    body = {key: value for key, value in example.items() if key != field}

    assert any(f"'{field}' is a required property" in error for error in errors(model, body))
    with pytest.raises(ValidationError):
        model.model_validate(body)


@pytest.mark.parametrize("field", ["account_id", "resource_id", "metric", "quantity", "unit"])
def test_a_record_without_a_required_field_is_refused(field: str) -> None:
    assert errors(UsageReply, reply_body(**{field: None}))


def test_the_coordinators_default_limits_are_in_the_schema() -> None:
    record = reply_body()["records"][0]
    too_many_records = {**reply_body(), "records": [record] * (MAX_RECORDS_PER_CHUNK + 1)}
    too_many_attributes = reply_body(attributes={f"k{n}": "v" for n in range(MAX_ATTRIBUTES + 1)})
    long_value = reply_body(attributes={"k": "v" * (MAX_ATTRIBUTE_LENGTH + 1)})
    long_name = reply_body(attributes={"k" * (MAX_ATTRIBUTE_LENGTH + 1): "v"})
    far_chunk = reply_body()
    far_chunk["chunk"]["seq"] = MAX_CHUNKS_PER_ANSWER

    for body in (too_many_records, too_many_attributes, long_value, long_name, far_chunk):
        assert errors(UsageReply, body)
    at_the_limits = {**reply_body(), "records": [record] * MAX_RECORDS_PER_CHUNK}
    at_the_limits["chunk"] = {
        "seq": MAX_CHUNKS_PER_ANSWER - 1,
        "last": True,
        "total_records": MAX_RECORDS_PER_CHUNK,
    }
    assert errors(UsageReply, at_the_limits) == []


def test_status_and_error_must_agree() -> None:
    ok, failed = (json.loads(reply.to_json()) for reply in generator.examples(UsageReply))

    assert errors(UsageReply, {**ok, "error": failed["error"]})
    assert errors(UsageReply, {**failed, "error": None})
    assert errors(UsageReply, {key: value for key, value in failed.items() if key != "error"})
    assert errors(UsageReply, {**ok, "service": "Compute"})  # not a service name


def test_abort_codes_are_an_open_set_in_the_schema() -> None:
    aborted = committed(ReportAborted)["examples"][0]
    unknown = {
        **aborted,
        "reasons": [{"code": "quota_exceeded", "message": "a code from a newer coordinator"}],
    }

    assert errors(ReportAborted, unknown) == []
    assert errors(ReportAborted, {**aborted, "reasons": []})
    assert AbortReason.model_fields["code"].description


# The quantity's pattern is exactly the model's bounds, for what a writer writes ----------------------

_DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=34)


@st.composite
def decimal_texts(draw: st.DrawFn) -> str:
    """Decimal strings near the bounds: plain or scientific, some beyond them."""
    text = draw(_DIGITS)
    if draw(st.booleans()):
        text += "." + draw(st.text(alphabet="0123456789", min_size=1, max_size=22))
    if draw(st.booleans()):
        text += draw(st.sampled_from(["E", "e"])) + draw(st.sampled_from(["", "+", "-"]))
        text += str(draw(st.integers(min_value=0, max_value=35)))
    return text


@given(decimal_texts())
def test_every_quantity_the_pattern_accepts_the_model_accepts(text: str) -> None:
    if re.fullmatch(QUANTITY_PATTERN, text) and len(text) <= 64:
        assert UsageRecord.model_validate(
            {**reply_body()["records"][0], "quantity": text}
        ).quantity == Decimal(text)


@given(st.tuples(st.lists(st.integers(0, 9), min_size=1, max_size=40), st.integers(-30, 35)))
def test_every_quantity_the_model_accepts_is_written_as_the_pattern_says(
    parts: tuple[list[int], int],
) -> None:
    digits, exponent = parts
    value = Decimal((0, tuple(digits), exponent))
    try:
        record = UsageRecord.model_validate({**reply_body()["records"][0], "quantity": value})
    except ValidationError:
        return
    written = record.model_dump(mode="json")["quantity"]
    assert re.fullmatch(QUANTITY_PATTERN, written), written
