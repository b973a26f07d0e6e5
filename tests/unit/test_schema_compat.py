"""The compatibility rule of the published schemas, as a pure function (scripts/schema_compat.py).

docs/architecture.md: "a minor version may only add what an old reader can ignore without harm;
anything that changes what is owed, or who may send what, is a new message type or a major version".
Each kind of change an old reader cannot ignore is caught within a major version; each change it can
ignore passes; a new major version (a new file) is compared with nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from contracts import json_schema as generator
from contracts.messages import (
    CreditNoteIssued,
    InvoiceIssued,
    Message,
    PeriodClosed,
    ReportAborted,
    ReportCompleted,
    UsageReply,
    UsageRequest,
)
from scripts.schema_compat import Break, breaking_changes, compare_schema_sets

Schema = dict[str, Any]
Change = Callable[[Schema], object]


def reply() -> Schema:
    return copy.deepcopy(generator.message_schema(UsageReply))


def invoice() -> Schema:
    return copy.deepcopy(generator.message_schema(InvoiceIssued))


def record(schema: Schema) -> Schema:
    properties: Schema = schema["$defs"]["UsageRecord"]["properties"]
    return properties


def changed(base: Callable[[], Schema], change: Change) -> tuple[Schema, Schema]:
    old = base()
    new = copy.deepcopy(old)
    change(new)
    return old, new


def kinds(found: list[Break]) -> set[str]:
    return {problem.kind for problem in found}


@pytest.mark.parametrize(
    "model",
    [PeriodClosed, UsageRequest, UsageReply, InvoiceIssued, CreditNoteIssued, ReportCompleted, ReportAborted],
    ids=lambda m: m.__name__,
)
def test_a_schema_is_compatible_with_itself(model: type[Message]) -> None:
    schema = generator.message_schema(model)

    assert breaking_changes(schema, copy.deepcopy(schema)) == []


# Breaking within a major version -------------------------------------------------------------------

BREAKING: dict[str, tuple[Callable[[], Schema], Change, str, str]] = {
    "a top-level field removed": (
        reply,
        lambda s: s["properties"].pop("chunk"),
        "chunk",
        "field removed",
    ),
    "a nested field removed (in $defs)": (
        reply,
        lambda s: record(s).pop("unit"),
        "records[].unit",
        "field removed",
    ),
    "an optional field made required": (
        invoice,
        lambda s: s["required"].append("number"),
        "number",
        "field made required",
    ),
    "a new required field": (
        invoice,
        lambda s: s.update(
            properties={**s["properties"], "tax": {"type": "string"}}, required=[*s["required"], "tax"]
        ),
        "tax",
        "required field added",
    ),
    "string narrowed to integer": (
        reply,
        lambda s: s["properties"]["request_id"].__setitem__("type", "integer"),
        "request_id",
        "type narrowed",
    ),
    "null no longer allowed": (
        invoice,
        lambda s: s["properties"].__setitem__("number", {"type": "string", "maxLength": 40}),
        "number",
        "type narrowed",
    ),
    "a new enum restriction": (
        invoice,
        lambda s: s["properties"]["currency"].__setitem__("enum", ["EUR", "USD"]),
        "currency",
        "enum restriction added",
    ),
    "a new const": (
        invoice,
        lambda s: s["properties"]["currency"].__setitem__("const", "EUR"),
        "currency",
        "enum restriction added",
    ),
    "an enum value removed": (
        reply,
        lambda s: s["properties"]["status"].__setitem__("enum", ["ok"]),
        "status",
        "enum value removed",
    ),
    "an enum value removed from an open set": (
        reply,
        lambda s: record(s)["unit"]["enum"].remove("byte"),
        "records[].unit",
        "enum value removed",
    ),
    "an enum value added to a closed set": (
        reply,
        lambda s: s["properties"]["status"]["enum"].append("partial"),
        "status",
        "enum value added to a closed set",
    ),
    "a maximum lowered": (
        reply,
        lambda s: s["$defs"]["Chunk"]["properties"]["seq"].__setitem__("maximum", 999),
        "chunk.seq",
        "maximum lowered",
    ),
    "a minimum raised": (
        invoice,
        lambda s: s["properties"]["revision"].__setitem__("minimum", 2),
        "revision",
        "minimum raised",
    ),
    "a maxLength lowered": (
        reply,
        lambda s: record(s)["account_id"].__setitem__("maxLength", 64),
        "records[].account_id",
        "maxLength lowered",
    ),
    "a maxLength added": (
        invoice,
        lambda s: s["properties"]["account_id"].__setitem__("maxLength", 64),
        "account_id",
        "maxLength lowered",
    ),
    "a minLength raised": (
        reply,
        lambda s: s["properties"]["request_id"].__setitem__("minLength", 32),
        "request_id",
        "minLength raised",
    ),
    "fewer records per chunk": (
        reply,
        lambda s: s["properties"]["records"].__setitem__("maxItems", 1000),
        "records",
        "maxItems lowered",
    ),
    "fewer attributes": (
        reply,
        lambda s: record(s)["attributes"].__setitem__("maxProperties", 8),
        "records[].attributes",
        "maxProperties lowered",
    ),
    "shorter attribute values": (
        reply,
        lambda s: record(s)["attributes"]["additionalProperties"].__setitem__("maxLength", 64),
        "records[].attributes.*",
        "maxLength lowered",
    ),
    "a pattern added": (
        invoice,
        lambda s: s["properties"]["account_id"].__setitem__("pattern", "^acct-"),
        "account_id",
        "pattern added or changed",
    ),
    "a pattern changed": (
        reply,
        lambda s: record(s)["quantity"].__setitem__("pattern", "^[0-9]+$"),
        "records[].quantity",
        "pattern added or changed",
    ),
    "a format added": (
        reply,
        lambda s: s["properties"]["request_id"].__setitem__("format", "uuid"),
        "request_id",
        "format added or changed",
    ),
    "extra properties refused": (
        reply,
        lambda s: s.__setitem__("additionalProperties", False),
        "",
        "additional properties refused",
    ),
    "a new condition": (
        invoice,
        lambda s: s.__setitem__(
            "allOf", [{"if": {"required": ["supersedes"]}, "then": {"required": ["number"]}}]
        ),
        "",
        "condition added or changed (allOf)",
    ),
}


@pytest.mark.parametrize("case", BREAKING, ids=BREAKING.keys())
def test_a_change_an_old_reader_cannot_ignore_is_caught_naming_where(case: str) -> None:
    base, change, path, kind = BREAKING[case]
    old, new = changed(base, change)

    found = breaking_changes(old, new)

    assert (path, kind) in {(problem.path, problem.kind) for problem in found}, [str(p) for p in found]


# Compatible within a major version -------------------------------------------------------------------

COMPATIBLE: dict[str, tuple[Callable[[], Schema], Change]] = {
    "an optional field added": (
        invoice,
        lambda s: s["properties"].__setitem__(
            "purchase_order", {"anyOf": [{"type": "string"}, {"type": "null"}]}
        ),
    ),
    "an optional field added to a nested object": (
        reply,
        lambda s: record(s).__setitem__("region", {"type": "string", "maxLength": 64}),
    ),
    "a required field made optional": (invoice, lambda s: s["required"].remove("rate_card")),
    "a maxLength raised": (reply, lambda s: record(s)["resource_id"].__setitem__("maxLength", 512)),
    "a maximum raised": (
        reply,
        lambda s: s["$defs"]["Chunk"]["properties"]["total_records"].__setitem__("maximum", 10**9),
    ),
    "more records per chunk": (reply, lambda s: s["properties"]["records"].__setitem__("maxItems", 50_000)),
    "a minimum lowered": (invoice, lambda s: s["properties"]["revision"].__setitem__("minimum", 0)),
    "a pattern removed": (invoice, lambda s: s["properties"]["currency"].pop("pattern")),
    "an enum restriction dropped": (reply, lambda s: record(s)["unit"].pop("enum")),
    "a unit added to the open vocabulary": (reply, lambda s: record(s)["unit"]["enum"].append("GiB-second")),
    "an abort code added (an open set)": (
        lambda: copy.deepcopy(generator.message_schema(ReportAborted)),
        lambda s: s["$defs"]["AbortCode"]["enum"].append("quota_exceeded"),
    ),
    "an abort code no longer listed (an open set)": (
        lambda: copy.deepcopy(generator.message_schema(ReportAborted)),
        lambda s: s["$defs"]["AbortCode"]["enum"].remove("rejected"),
    ),
    "null allowed": (
        reply,
        lambda s: s["properties"].__setitem__(
            "request_id", {"anyOf": [{"type": "string"}, {"type": "null"}]}
        ),
    ),
    "an integer widened to a number": (
        reply,
        lambda s: s["$defs"]["Chunk"]["properties"]["seq"].__setitem__("type", "number"),
    ),
    "descriptions, titles and examples changed": (
        invoice,
        lambda s: s.update(title="Invoice", examples=[], description="Owed."),
    ),
    "a minor version": (invoice, lambda s: s["properties"]["schema_version"].__setitem__("default", "2.2")),
}


@pytest.mark.parametrize("case", COMPATIBLE, ids=COMPATIBLE.keys())
def test_a_change_an_old_reader_can_ignore_passes(case: str) -> None:
    base, change = COMPATIBLE[case]
    old, new = changed(base, change)

    assert breaking_changes(old, new) == []


# Sets of files: a new major version is a new file ------------------------------------------------------


def files() -> dict[str, Schema]:
    return copy.deepcopy(generator.message_schemas()) | {generator.INDEX: generator.schema_index()}


def test_a_break_within_a_major_version_names_the_file() -> None:
    old, new = files(), files()
    new["InvoiceIssued.v2.json"]["properties"].pop("supersedes")

    assert compare_schema_sets(old, new) == ["InvoiceIssued.v2.json: supersedes: field removed"]


def test_a_new_major_version_in_a_new_file_may_break_anything() -> None:
    old, new = files(), files()
    v3 = new.pop("InvoiceIssued.v2.json")
    v3["properties"].pop("supersedes")
    v3["required"].append("number")
    new["InvoiceIssued.v3.json"] = v3

    assert compare_schema_sets(old, new) == []


def test_a_new_message_type_passes_and_a_vanished_one_does_not() -> None:
    old, new = files(), files()
    new["PaymentReceived.v1.json"] = {"type": "object"}
    del new["ReportCompleted.v2.json"]

    assert compare_schema_sets(old, new) == [
        "ReportCompleted.v2.json: removed, and no later major version of ReportCompleted replaces it"
    ]


def test_the_index_is_not_a_schema() -> None:
    old, new = files(), files()
    new[generator.INDEX] = {"messages": []}

    assert compare_schema_sets(old, new) == []


def test_a_recursive_schema_is_compared_without_looping() -> None:
    tree: Schema = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"child": {"$ref": "#/$defs/Node"}, "name": {"type": "string"}},
            }
        },
        "$ref": "#/$defs/Node",
    }
    narrowed = copy.deepcopy(tree)
    narrowed["$defs"]["Node"]["properties"]["name"]["maxLength"] = 3

    assert breaking_changes(tree, copy.deepcopy(tree)) == []
    assert [str(problem) for problem in breaking_changes(tree, narrowed)] == [
        "name: maxLength lowered (none → 3)"
    ]
