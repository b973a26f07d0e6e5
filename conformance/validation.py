"""Is one reply valid? Against the published JSON Schema of ``UsageReply``, then the coordinator's model.

The schema (``contracts/schemas/UsageReply.v1.json``, loaded by ``conformance.schema``) is the
contract a team in any language reads: units from the vocabulary, quantities as decimal strings
(never a JSON number), the bounds of every field. What a schema cannot say — the last chunk's
``total_records`` below the records it holds, say — the coordinator's pydantic model still refuses,
so a reply the schema accepts is parsed with it too. The message's properties count as well: the
coordinator takes only uncompressed ``application/json``. Pure: the schema is given, nothing is read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError
from pydantic import ValidationError

from conformance.model import Reply
from conformance.replies import read
from contracts import CONTENT_TYPE, UsageReply
from contracts.units import UNITS

MAX_PROBLEMS = 5
"""Problems named per reply (the count of the rest is given)."""
FULLY_VALIDATED_RECORDS = 100
"""Records of one reply validated against the whole schema. A pure-Python validator takes a quarter
of a millisecond a record, a minute for an answer of 100,000 asked three times; the records after
these are held to the schema's record rules the model does not check (the unit vocabulary, the
quantity's type and pattern), and every record to the model."""


@dataclass(frozen=True)
class _RecordRules:
    """What the schema says of a record that the coordinator's model does not check, read from it."""

    units: frozenset[str]
    quantity: re.Pattern[str]
    quantity_length: int | None
    records_per_reply: int | None

    @classmethod
    def of(cls, schema: Mapping[str, Any]) -> _RecordRules | None:
        try:
            fields = schema["$defs"]["UsageRecord"]["properties"]
            units = frozenset(fields["unit"]["enum"])
            pattern = re.compile(fields["quantity"]["pattern"])
            length = fields["quantity"].get("maxLength")
            records = schema["properties"]["records"].get("maxItems")
        except (KeyError, TypeError, re.error):
            return None  # another shape of schema: every record is validated against all of it
        return cls(units, pattern, length, records)

    def problems(self, records: Sequence[Any], first: int) -> Iterator[str]:
        for index, record in enumerate(records[first:], start=first):
            where = f"records.{index}"
            if not isinstance(record, dict):
                yield f"{where}: {str(record)[:40]!r} is not of type 'object'"
                continue
            unit = record.get("unit")
            if isinstance(unit, str) and unit not in self.units:
                yield _unit(f"{where}.unit", unit)
            quantity = record.get("quantity")
            if isinstance(quantity, bool) or not isinstance(quantity, str):
                if quantity is not None:
                    yield _not_a_string(f"{where}.quantity", quantity)
            elif (self.quantity_length is not None and len(quantity) > self.quantity_length) or not (
                self.quantity.search(quantity)
            ):
                yield f"{where}.quantity: {quantity[:40]!r} is not a quantity the schema allows"


class ReplyValidator:
    """Validates reply messages against ``schema`` (a draft 2020-12 document) and the model."""

    def __init__(self, schema: Mapping[str, Any], source: str) -> None:
        Draft202012Validator.check_schema(schema)
        self._validator = Draft202012Validator(schema)
        self._rules = _RecordRules.of(schema)
        self.source = source
        """Where the schema came from (``contracts/schemas/UsageReply.v1.json``), for reasons."""

    def problems(self, reply: Reply) -> list[str]:
        """What is wrong with ``reply`` (empty: valid), each naming the field."""
        found: list[str] = []
        if reply.content_type != CONTENT_TYPE or reply.content_encoding:
            encoding = f", content_encoding {reply.content_encoding!r}" if reply.content_encoding else ""
            found.append(
                f"content_type {reply.content_type!r}{encoding}: replies are uncompressed {CONTENT_TYPE}"
            )
        document = read(reply).document
        if document is None:
            try:
                document = json.loads(reply.body)
            except (ValueError, UnicodeDecodeError) as error:
                return [*found, f"body is not JSON ({type(error).__name__}: {str(error)[:80]})"]
        described = self._schema_problems(document)
        if not described:
            # What a schema cannot state, the model the coordinator parses with still refuses.
            try:
                UsageReply.model_validate_json(reply.body)
            except ValidationError as error:
                described = [
                    f"{_where(item['loc']) or 'body'}: {item['msg']} (the coordinator's model)"
                    for item in error.errors(include_url=False)
                ]
        shown = described[:MAX_PROBLEMS]
        if len(described) > MAX_PROBLEMS:
            shown.append(f"… and {len(described) - MAX_PROBLEMS} more")
        return found + shown

    def _schema_problems(self, document: Any) -> list[str]:
        records = document.get("records") if isinstance(document, Mapping) else None
        rules = self._rules
        if rules is None or not isinstance(records, list) or len(records) <= FULLY_VALIDATED_RECORDS:
            return [_describe(error) for error in self._errors(document)]
        head = {**document, "records": records[:FULLY_VALIDATED_RECORDS]}
        described = [_describe(error) for error in self._errors(head)]
        if rules.records_per_reply is not None and len(records) > rules.records_per_reply:
            described.append(f"records: {len(records)} records, more than maxItems {rules.records_per_reply}")
        described.extend(islice(rules.problems(records, FULLY_VALIDATED_RECORDS), MAX_PROBLEMS + 1))
        return described

    def _errors(self, document: Any) -> list[SchemaError]:
        return sorted(self._validator.iter_errors(document), key=lambda error: list(error.absolute_path))


def _where(path: Any) -> str:
    return ".".join(str(part) for part in path)


def _unit(where: str, unit: object) -> str:
    return f"{where}: unit {unit!r} is not in the unit vocabulary ({', '.join(UNITS)})"


def _not_a_string(where: str, value: object) -> str:
    if isinstance(value, float):
        return (
            f"{where}: {value!r} is a JSON number (a float); write it as a decimal string "
            f'("{value!r}"), never a float'
        )
    if isinstance(value, int) and not isinstance(value, bool):
        return f'{where}: {value!r} is a JSON integer; the schema asks for a decimal string ("{value}")'
    return f"{where}: {str(value)[:40]!r} is not of type 'string'"


def _describe(error: SchemaError) -> str:
    """One schema error as a sentence naming the field; the usual slips in words of their own."""
    where = _where(error.absolute_path) or "body"
    instance = error.instance
    field = str(error.absolute_path[-1]) if error.absolute_path else ""
    if error.validator == "enum" and field == "unit":
        return _unit(where, instance)
    if error.validator == "type" and (
        isinstance(instance, float) or (field == "quantity" and isinstance(instance, int))
    ):
        return _not_a_string(where, instance)
    message = error.message
    if len(message) > 200:
        message = message[:200] + "…"
    return f"{where}: {message}"
