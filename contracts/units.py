"""The unit vocabulary: every unit a usage record may be written in. Pure data, the one list.

The coordinator's normalizer (``accounting/core/normalizer.py``) converts each record from the unit
a service reports to the billable unit the rate card gives its metric, by the pairs below; a unit
equal to the card's converts as 1. The published JSON Schema of ``UsageReply`` states this
vocabulary as an ``enum`` on ``UsageRecord.unit``, so a validator (or the conformance kit) catches
``bytes`` for ``byte`` before a report runs. The model itself still parses any unit: the
coordinator aborts a report with ``unknown_unit`` naming a unit it cannot convert, which is how an
unknown unit must fail in production.

The vocabulary is an open set: a new conversion adds a unit in a minor version of ``UsageReply``
(a coordinator that does not know it aborts with ``unknown_unit``, never misbills); removing a
unit is a major change.
"""

from __future__ import annotations

UNIT_CONVERSIONS: tuple[tuple[str, str], ...] = (
    ("vCPU-second", "vCPU-hour"),
    ("MiB-second", "GB-hour"),
    ("byte-second", "GB-hour"),
    ("byte-second", "GB-month"),
    ("byte", "GB"),
)
"""(unit a service reports, billable unit of a rate card) for every conversion the normalizer makes."""

REPORTED_UNITS: tuple[str, ...] = tuple(dict.fromkeys(source for source, _ in UNIT_CONVERSIONS))
"""The units sub-services report (compute: vCPU-second, MiB-second; storage: byte-second; egress: byte)."""

BILLABLE_UNITS: tuple[str, ...] = tuple(dict.fromkeys(target for _, target in UNIT_CONVERSIONS))
"""The units a rate card bills in; a service may also report in one of them (converted as 1)."""

UNITS: tuple[str, ...] = (*REPORTED_UNITS, *(unit for unit in BILLABLE_UNITS if unit not in REPORTED_UNITS))
"""Every unit a ``UsageRecord`` may carry: what the published schema allows for ``unit``."""
