"""Dead letters, as an operator sees them: what each one is, where it came from, why it died.

Pure: a message's body and properties in, a ``DeadLetter`` out; which to replay; how to print
them. The broker calls (reading without consuming, republishing, acknowledging) are in
``accounting.dlq.queue``.

A dead letter's **ID** is its AMQP ``message_id`` when it has one (an invoice's is its
``invoice_id``; a ``PeriodClosed``'s ``period-closed/<period>``), otherwise ``h-`` and the first 12
hex digits of a SHA-256 of the body and the first ``x-death`` entry's queue, reason, exchange and
routing keys — stable while the message sits in the queue, however often it is listed. Two dead
letters can share an ID (the same invoice dead-lettered twice): every command then acts on both.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.markup import escape
from rich.table import Table

BROKER_HEADERS = ("x-death", "x-delivery-count", "x-acquired-count")
BROKER_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")
MANY_READS = 15
"""A dead letter returned this often is near RabbitMQ 4.0-4.2's default quorum-queue delivery
limit (20 returns, counted even for reads that give it back), after which the broker drops it."""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _deaths(headers: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    deaths = headers.get("x-death")
    if not isinstance(deaths, list | tuple):
        return []
    return [death for death in deaths if isinstance(death, Mapping)]


def _routing_keys(death: Mapping[str, Any]) -> list[str]:
    keys = death.get("routing-keys")
    return (
        [key for key in (_text(item) for item in keys) if key is not None] if isinstance(keys, list) else []
    )


def letter_id(message_id: str | None, body: bytes, headers: Mapping[str, Any]) -> str:
    """The message id, or a short stable hash of the body and the first ``x-death`` entry."""
    if message_id:
        return message_id
    deaths = _deaths(headers)
    first = deaths[0] if deaths else {}
    identity = {
        "queue": _text(first.get("queue")),
        "reason": _text(first.get("reason")),
        "exchange": _text(first.get("exchange")),
        "routing-keys": _routing_keys(first),
    }
    digest = hashlib.sha256(body + json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"h-{digest[:12]}"


@dataclass(frozen=True)
class DeadLetter:
    """One message of ``billing.dead-letters``, with its most recent death (``x-death[0]``)."""

    id: str
    message_id: str | None
    queue: str | None
    """The queue it died in (where a replay should bring it back)."""
    exchange: str | None
    """The exchange it was published to, and the routing key: where a replay republishes it."""
    routing_key: str | None
    reason: str | None
    """``rejected``, ``expired``, ``maxlen`` or ``delivery_limit``."""
    count: int
    """How often it died in that queue for that reason."""
    died_at: datetime | None
    type: str | None
    timestamp: datetime | None
    """When it was first published (the ``timestamp`` property), if its publisher set one."""
    content_type: str | None
    body: bytes
    reads: int
    """How often the dead-letters queue has handed it out and had it back (listings included)."""

    @property
    def body_size(self) -> int:
        return len(self.body)

    @property
    def replayable(self) -> bool:
        return self.exchange is not None and self.routing_key is not None


def dead_letter(
    body: bytes,
    headers: Mapping[str, Any],
    *,
    message_id: str | None = None,
    message_type: str | None = None,
    timestamp: datetime | None = None,
    content_type: str | None = None,
) -> DeadLetter:
    """Read a dead letter from its body, headers and properties."""
    deaths = _deaths(headers)
    death = deaths[0] if deaths else {}
    keys = _routing_keys(death)
    died_at = death.get("time")
    return DeadLetter(
        id=letter_id(message_id, body, headers),
        message_id=message_id,
        queue=_text(death.get("queue")),
        exchange=_text(death.get("exchange")) if death else None,
        routing_key=keys[0] if keys else None,
        reason=_text(death.get("reason")),
        count=_count(death.get("count")),
        died_at=died_at if isinstance(died_at, datetime) else None,
        type=message_type,
        timestamp=timestamp,
        content_type=content_type,
        body=body,
        reads=max(_count(headers.get("x-delivery-count")), _count(headers.get("x-acquired-count"))),
    )


def replay_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The message's own headers, without the broker's bookkeeping of its deaths and deliveries."""
    return {
        key: value
        for key, value in headers.items()
        if key not in BROKER_HEADERS and not key.startswith(BROKER_HEADER_PREFIXES)
    }


def select(letters: Iterable[DeadLetter], ids: Sequence[str]) -> tuple[list[DeadLetter], list[str]]:
    """The dead letters named by ``ids`` (in queue order, every copy), and the ids that name none."""
    wanted = set(ids)
    chosen = [letter for letter in letters if letter.id in wanted]
    found = {letter.id for letter in chosen}
    return chosen, [identifier for identifier in dict.fromkeys(ids) if identifier not in found]


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def summary(letter: DeadLetter) -> dict[str, Any]:
    """What ``dlq list --json`` prints for one dead letter."""
    return {
        "id": letter.id,
        "message_id": letter.message_id,
        "queue": letter.queue,
        "exchange": letter.exchange,
        "routing_key": letter.routing_key,
        "reason": letter.reason,
        "count": letter.count,
        "died_at": _time(letter.died_at),
        "type": letter.type,
        "timestamp": _time(letter.timestamp),
        "body_size": letter.body_size,
        "reads": letter.reads,
    }


def detail(letter: DeadLetter) -> dict[str, Any]:
    """What ``dlq show --json`` prints: the summary and the body (text, or base64 if not UTF-8)."""
    try:
        body: dict[str, Any] = {"body": letter.body.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"body_base64": base64.b64encode(letter.body).decode("ascii")}
    return {**summary(letter), "content_type": letter.content_type, **body}


def _origin(letter: DeadLetter) -> str:
    exchange = "(default exchange)" if letter.exchange == "" else letter.exchange or "?"
    return f"{exchange} / {letter.routing_key or '?'}"


def list_table(letters: Sequence[DeadLetter], queue: str, total: int) -> Table:
    """One row per dead letter; the caption says how many there are and what was not shown."""
    table = Table(title=f"Dead letters in {queue}")
    for column in ("id", "queue", "exchange / routing key", "reason", "count", "type", "died", "bytes"):
        table.add_column(column, justify="right" if column in ("count", "bytes") else "left")
    for letter in letters:
        table.add_row(
            escape(letter.id),
            escape(letter.queue or "?"),
            escape(_origin(letter)),
            escape(letter.reason or "?"),
            str(letter.count),
            escape(letter.type or ""),
            _time(letter.died_at) or "",
            str(letter.body_size),
        )
    shown = f"{len(letters)} of {total}" if total > len(letters) else str(len(letters))
    table.caption = f"{shown} dead letter(s)" + _reads_warning(letters)
    return table


def _reads_warning(letters: Iterable[DeadLetter]) -> str:
    worn = [letter.id for letter in letters if letter.reads >= MANY_READS]
    if not worn:
        return ""
    return (
        f"; read {MANY_READS}+ times: {', '.join(worn)} (RabbitMQ 4.0-4.2 drop a quorum-queue message "
        "returned 20 times unless the queue's delivery-limit is raised)"
    )


def detail_table(letter: DeadLetter) -> Table:
    table = Table(title=f"Dead letter {escape(letter.id)}", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in detail(letter).items():
        table.add_row(key, escape("" if value is None else str(value)))
    return table
