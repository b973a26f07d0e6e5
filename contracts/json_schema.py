"""The published JSON Schemas (draft 2020-12) of every message, generated from the models. Pure: no I/O.

``message_schemas()`` returns one schema per message type and major version, keyed by its file name
in ``contracts/schemas/`` (``InvoiceIssued.v2.json``), and ``schema_files()`` those with the index,
rendered as the committed files are; ``python -m scripts.schemas`` (``make schemas``) writes them and
``tests/unit/test_schemas.py`` fails while the committed files and the models differ.

Everything a schema says comes from the models: the field descriptions are their docstrings, the
bounds their ``Field`` constraints and ``json_schema_extra`` (the unit vocabulary of
``contracts/units.py``, the reply limits of ``contracts/limits.py``), the quantity's pattern
``contracts.types.QUANTITY_PATTERN``. Here the document is only framed: ``$schema``, ``$id``,
``schema_version`` (required, of this major) and a real message as ``examples``.

The schemas use only keywords that mean the same in draft-07 (no validation keyword beside a
``$ref``, ``$defs`` reached by JSON pointer), so tools whose default is draft-07, AsyncAPI's
schema format among them, read them as they are.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from contracts.ids import credit_note_id, invoice_id, report_id
from contracts.messages import (
    AbortCode,
    AbortReason,
    Chunk,
    CreditNoteIssued,
    InvoiceIssued,
    InvoiceLine,
    Message,
    PeriodClosed,
    ReportAborted,
    ReportCompleted,
    ServiceError,
    UsageRecord,
    UsageReply,
    UsageRequest,
)
from contracts.period import Period

DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://reckon.example/contracts/schemas/"
"""The schemas' ``$id``s name them (a reserved domain: nothing is served there); the files are
``contracts/schemas/`` in this repository."""
INDEX = "index.json"
COMMAND = "make schemas"
COMMAND_WITHOUT_MAKE = ".venv/bin/python -m scripts.schemas"

MESSAGE_TYPES: tuple[type[Message], ...] = (
    PeriodClosed,
    UsageRequest,
    UsageReply,
    InvoiceIssued,
    CreditNoteIssued,
    ReportCompleted,
    ReportAborted,
)
"""Every message type on the wire, in the order they travel."""


def major(model: type[Message]) -> int:
    """The major version of ``model`` this build writes and reads (it reads no other)."""
    return int(model.VERSION.split(".")[0])


def schema_file(model: type[Message]) -> str:
    """``InvoiceIssued.v2.json``: one file per message type and major version."""
    return f"{model.__name__}.v{major(model)}.json"


def schema_id(model: type[Message]) -> str:
    return ID_BASE + schema_file(model)


# Real messages, built with the models: each schema's ``examples``. --------------------------------

_PERIOD = Period.month("2026-10")
_CLOSED_AT = _PERIOD.end + timedelta(minutes=30)
_ISSUED_AT = datetime(2026, 11, 1, 0, 31, 12, tzinfo=UTC)
_RATE_CARD = "sha256:" + "4f7d0c2e9a1b3c5d" * 4


def _lines() -> tuple[InvoiceLine, ...]:
    return (
        InvoiceLine(
            item="memory",
            description="Compute, memory",
            quantity=Decimal("3092.376453"),
            unit="GB-hour",
            unit_price=Decimal("0.0040"),
            amount=Decimal("12.37"),
        ),
        InvoiceLine(
            item="vcpu",
            description="Compute, vCPU",
            quantity=Decimal("1440.000000"),
            unit="vCPU-hour",
            unit_price=Decimal("0.0320"),
            amount=Decimal("46.08"),
        ),
    )


def examples(model: type[Message]) -> tuple[Message, ...]:
    """Valid messages of ``model``, as Reckon's parties send them."""
    first = report_id(_PERIOD.period_id, 1)
    second = report_id(_PERIOD.period_id, 2)
    lines = _lines()
    total = sum((line.amount for line in lines), Decimal(0))
    if model is PeriodClosed:
        return (PeriodClosed.for_period(_PERIOD, "reckon-scheduler (cronjob/reckon-close-period)"),)
    if model is UsageRequest:
        return (
            UsageRequest(
                request_id="9b2f6a0d4c1e47f3a8d5e6b7c8d9e0f1",
                report_id=first,
                period=_PERIOD,
                service="compute",
                deadline=_CLOSED_AT + timedelta(seconds=30),
            ),
        )
    if model is UsageReply:
        records = (
            UsageRecord(
                account_id="acct-0042",
                resource_id="vm-7f3a",
                resource_type="instance",
                metric="vcpu",
                quantity=Decimal("5184000"),
                unit="vCPU-second",
                attributes={"flavour": "m1.large", "region": "eu-west-1"},
            ),
            UsageRecord(
                account_id="acct-0042",
                resource_id="vm-7f3a",
                resource_type="instance",
                metric="memory",
                quantity=Decimal("10616832000"),
                unit="MiB-second",
            ),
        )
        answer = "5d41402abc4b2a76b9719d911017c592"
        return (
            UsageReply(
                request_id="9b2f6a0d4c1e47f3a8d5e6b7c8d9e0f1",
                service="compute",
                status="ok",
                records=records,
                chunk=Chunk(seq=0, last=True, total_records=len(records), answer_id=answer),
            ),
            UsageReply(
                request_id="9b2f6a0d4c1e47f3a8d5e6b7c8d9e0f1",
                service="storage",
                status="error",
                error=ServiceError(
                    code="unavailable", message="the volume inventory is being rebuilt", retryable=True
                ),
            ),
        )
    if model is InvoiceIssued:
        return (
            InvoiceIssued(
                invoice_id=invoice_id("acct-0042", _PERIOD.period_id, 1),
                report_id=first,
                revision=1,
                account_id="acct-0042",
                period=_PERIOD,
                currency="EUR",
                lines=lines,
                subtotal=total,
                total=total,
                rate_card=_RATE_CARD,
                number="INV-2026-000123",
                issued_at=_ISSUED_AT,
                due_at=_ISSUED_AT + timedelta(days=30),
            ),
        )
    if model is CreditNoteIssued:
        return (
            CreditNoteIssued(
                credit_note_id=credit_note_id("acct-0042", _PERIOD.period_id, 2),
                credits=invoice_id("acct-0042", _PERIOD.period_id, 1),
                report_id=second,
                revision=2,
                account_id="acct-0042",
                period=_PERIOD,
                currency="EUR",
                lines=lines,
                subtotal=total,
                total=total,
                credits_number="INV-2026-000123",
                number="CN-2026-000007",
                issued_at=_ISSUED_AT + timedelta(days=3),
            ),
        )
    if model is ReportCompleted:
        return (
            ReportCompleted(
                report_id=first,
                revision=1,
                period=_PERIOD,
                currency="EUR",
                invoice_count=1,
                total=total,
                records=2,
            ),
        )
    if model is ReportAborted:
        return (
            ReportAborted(
                report_id=first,
                revision=1,
                period=_PERIOD,
                reasons=(
                    AbortReason(
                        code=AbortCode.UNKNOWN_UNIT,
                        service="storage",
                        message="no conversion from 'bytes' to 'GB' for metric 'egress' "
                        "(12 record(s) in 'bytes')",
                    ),
                ),
            ),
        )
    raise ValueError(f"no example of {model.__name__}")


# The schemas. -------------------------------------------------------------------------------------


def message_schema(model: type[Message]) -> dict[str, Any]:
    """The published schema of ``model``'s current major version."""
    generated = model.model_json_schema(mode="validation")
    number = major(model)
    properties = dict(generated.pop("properties"))
    properties["schema_version"] = {
        "description": (
            f"``{number}.MINOR``: the version of {model.__name__} the body is written in (this build "
            f"writes {model.VERSION}). A reader refuses another major version and reads every minor "
            "version of its own, ignoring the fields it does not know."
        ),
        "type": "string",
        "pattern": rf"^{number}\.[0-9]+$",
        "default": model.VERSION,
    }
    required = [
        "schema_version",
        *(name for name in generated.pop("required", []) if name != "schema_version"),
    ]
    schema: dict[str, Any] = {
        "$schema": DIALECT,
        "$id": schema_id(model),
        "title": f"{model.__name__} {number}.x",
        "description": generated.pop("description", model.__name__),
        "type": generated.pop("type"),
        "properties": properties,
        "required": required,
    }
    generated.pop("title", None)
    schema.update(generated)  # allOf, $defs
    schema["examples"] = [message.model_dump(mode="json") for message in examples(model)]
    return schema


def message_schemas() -> dict[str, dict[str, Any]]:
    """File name → schema, for every message type and major version."""
    return {schema_file(model): message_schema(model) for model in MESSAGE_TYPES}


def schema_index() -> dict[str, Any]:
    """What ``contracts/schemas/`` holds: each message type's file, ``$id`` and current version."""
    return {
        "$comment": f"Generated from contracts/messages.py by `{COMMAND}`; do not edit.",
        "dialect": DIALECT,
        "asyncapi": "../asyncapi.yaml",
        "messages": [
            {
                "message": model.__name__,
                "version": model.VERSION,
                "major": major(model),
                "file": schema_file(model),
                "$id": schema_id(model),
            }
            for model in MESSAGE_TYPES
        ],
    }


def render(document: dict[str, Any]) -> str:
    """A schema file's text: what the committed file holds, byte for byte."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def schema_files() -> dict[str, str]:
    """File name → text of every file ``contracts/schemas/`` must hold: the schemas and the index."""
    files = {name: render(schema) for name, schema in message_schemas().items()}
    files[INDEX] = render(schema_index())
    return files
