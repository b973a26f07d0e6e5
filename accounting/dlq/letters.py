"""Dead letters, as an operator sees them: what each one is, where it came from, why it died.

Pure: a message's body and properties in, a ``DeadLetter`` out; which to replay; how to print
them. The broker calls (reading without consuming, republishing, acknowledging) are in
``accounting.dlq.queue``.

A dead letter's **ID** is its AMQP ``message_id`` when it has one (an invoice's is its
``invoice_id``; a ``PeriodClosed``'s ``period-closed/<period>``), otherwise ``h-`` and the first 12
hex digits of a SHA-256 of the body and the first ``x-death`` entry's queue, reason, exchange and
routing keys — stable while the message sits in the queue, however often it is listed. Two dead
letters can share an ID (the same invoice dead-lettered twice): every command then acts on both.

A listed dead letter keeps no body (``body`` is None): its size, its hash (in the ID) and a
``preview`` of its first ``PREVIEW_BYTES`` bytes are taken while it is read, so a listing holds one
body at a time however large they are. Only ``show`` and ``replay`` keep the bodies they name.

Who sent it, and whether the broker dead-lettered it:

- ``sender`` is the AMQP ``user_id``: the broker refuses a ``user_id`` that is not the publishing
  connection's user and keeps it when it dead-letters, so it names who first published the letter.
- ``x-death`` is a header like any other: whoever may publish to the dead-letter exchange can write
  one. What makes it the broker's is that nobody else may publish there (deploy/'s permissions
  give no client user write on ``billing.dlx``: a broker policy, not a queue argument, names it).
  ``suspect`` names what no dead letter of the broker's lacks (an ``x-death`` with its time, queue,
  reason and routing keys, ``x-first-death-queue``, a reason the broker writes, a queue of this
  namespace, the routing key it was dead-lettered with): a letter missing any of them was published
  to the exchange by a client, not dead-lettered.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from rich.markup import escape
from rich.table import Table

BROKER_HEADERS = ("x-death", "x-delivery-count", "x-acquired-count")
BROKER_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")
BROKER_REASONS = ("rejected", "expired", "maxlen", "delivery_limit")
"""The reasons RabbitMQ writes in ``x-death``."""
MANY_READS = 15
"""A dead letter returned this often is near RabbitMQ 4.0-4.2's default quorum-queue delivery
limit (20 returns, counted even for reads that give it back), after which the broker drops it."""
REPLAYS_HEADER = "x-reckon-replays"
"""How often ``reckon dlq replay`` republished this message (it survives its next death)."""
DEFAULT_MAX_REPLAYS = 3
"""A dead letter replayed this often is not replayed again unless the maximum is raised."""
PREVIEW_BYTES = 64
"""How much of a body ``dlq list`` shows."""
TABLE_PREVIEW = 32
"""How much of the preview the table shows (``--json`` has all of it)."""
SHOW_BYTES = 64 * 1024
"""How much of a body ``dlq show`` prints unless asked for all of it."""


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


def preview(body: bytes, limit: int = PREVIEW_BYTES) -> str:
    """The first ``limit`` bytes as one line of text (``…`` when there is more)."""
    text = body[:limit].decode("utf-8", "replace")
    line = "".join(char if char.isprintable() else " " for char in text)
    return line + "…" if len(body) > limit else line


def replays(headers: Mapping[str, Any]) -> int:
    """How often the message was replayed from dead letters before (``x-reckon-replays``)."""
    return _count(headers.get(REPLAYS_HEADER))


def suspect(
    headers: Mapping[str, Any], routing_key: str | None = None, namespace: str | None = None
) -> str | None:
    """Why this cannot be a message the broker dead-lettered, or None when nothing shows that.

    ``routing_key`` is the one it arrived with on the dead-letter exchange (the broker keeps the
    message's own); ``namespace`` the one its queue must be in. A client that may publish to the
    dead-letter exchange can write all of it: only the permissions keep others out.
    """
    deaths = _deaths(headers)
    if not deaths:
        return "no x-death: published to the dead-letter exchange, not dead-lettered"
    death = deaths[0]
    missing = [field for field in ("time", "queue", "reason", "exchange") if death.get(field) is None]
    if not _routing_keys(death):
        missing.append("routing-keys")
    if missing:
        return f"x-death without {', '.join(missing)}, which the broker always writes"
    reason = _text(death.get("reason"))
    if reason not in BROKER_REASONS:
        return f"x-death reason {reason!r} is none the broker writes"
    if headers.get("x-first-death-queue") is None:
        return "no x-first-death-queue, which the broker writes with x-death"
    queue = _text(death.get("queue")) or ""
    if namespace and not queue.startswith(f"{namespace}."):
        return f"x-death names queue {queue!r}, outside namespace {namespace}"
    if routing_key is not None and routing_key not in _routing_keys(death):
        return f"arrived with routing key {routing_key!r}, not one of its x-death routing keys"
    return None


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
    body: bytes | None
    """None when it was only listed: a listing keeps no body."""
    body_size: int
    preview: str
    """The start of the body, one line (see ``PREVIEW_BYTES``)."""
    reads: int
    """How often the dead-letters queue has handed it out and had it back (listings included)."""
    sender: str | None = None
    """Its ``user_id``: the broker user that first published it (the broker checked it), if set."""
    replays: int = 0
    """How often ``reckon dlq replay`` republished it before (``x-reckon-replays``)."""
    suspect: str | None = None
    """Why the broker cannot have dead-lettered it (see ``suspect()``), or None."""

    @property
    def replayable(self) -> bool:
        return self.exchange is not None and self.routing_key is not None

    def without_body(self) -> DeadLetter:
        return replace(self, body=None)


def dead_letter(
    body: bytes,
    headers: Mapping[str, Any],
    *,
    message_id: str | None = None,
    message_type: str | None = None,
    timestamp: datetime | None = None,
    content_type: str | None = None,
    user_id: str | None = None,
    routing_key: str | None = None,
    namespace: str | None = None,
    keep_body: bool = True,
) -> DeadLetter:
    """Read a dead letter from its body, headers and properties (``routing_key``: the one it came
    with from the dead-letter exchange). Without ``keep_body`` only its size and preview stay."""
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
        body=body if keep_body else None,
        body_size=len(body),
        preview=preview(body),
        reads=max(_count(headers.get("x-delivery-count")), _count(headers.get("x-acquired-count"))),
        sender=user_id or None,
        replays=replays(headers),
        suspect=suspect(headers, routing_key, namespace),
    )


def replay_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The message's own headers, without the broker's bookkeeping of its deaths and deliveries."""
    return {
        key: value
        for key, value in headers.items()
        if key not in BROKER_HEADERS and not key.startswith(BROKER_HEADER_PREFIXES)
    }


def replayed_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """What a replay publishes: its own headers and one more replay in ``x-reckon-replays``, so that
    a message that keeps dying is seen to, and refused past the maximum (``replay_refusal``)."""
    return {**replay_headers(headers), REPLAYS_HEADER: replays(headers) + 1}


def replay_refusal(letter: DeadLetter, max_replays: int, publisher: str | None) -> str | None:
    """Why ``letter`` must not be replayed by a connection of broker user ``publisher`` (None if
    unknown), or None when it may be."""
    if not letter.replayable:
        return "no x-death header: where it came from is unknown"
    if letter.replays >= max_replays:
        return (
            f"replayed {letter.replays} time(s) already and dead again; max_replays is {max_replays} "
            "(RECKON_DLQ_MAX_REPLAYS, or --max-replays): fix why it dies before replaying it again"
        )
    if letter.sender is not None and publisher is not None and letter.sender != publisher:
        return (
            f"sent by broker user {letter.sender} (its user_id), and the broker lets only {letter.sender} "
            f"publish that user_id, not {publisher}: set RECKON_DLQ_REPLAY_URL to {letter.sender}'s "
            "AMQP URL (deploy/README.md, Runbook: Dead letters)"
        )
    return None


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
        "sender": letter.sender,
        "replays": letter.replays,
        "suspect": letter.suspect,
        "preview": letter.preview,
    }


def _utf8_prefix(data: bytes, final: bool) -> str | None:
    """``data`` as UTF-8 text (a character cut at the end dropped unless ``final``), or None."""
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(data, final=final)
    except UnicodeDecodeError:
        return None


def detail(letter: DeadLetter, max_bytes: int | None = None) -> dict[str, Any]:
    """What ``dlq show --json`` prints: the summary and the body (text, or base64 if not UTF-8),
    its first ``max_bytes`` bytes when given (``body_truncated`` says whether there was more)."""
    data = letter.body or b""
    truncated = max_bytes is not None and len(data) > max_bytes
    shown = data[:max_bytes] if truncated else data
    text = _utf8_prefix(shown, final=not truncated)
    body: dict[str, Any] = (
        {"body": text} if text is not None else {"body_base64": base64.b64encode(shown).decode("ascii")}
    )
    return {**summary(letter), "content_type": letter.content_type, **body, "body_truncated": truncated}


def _origin(letter: DeadLetter) -> str:
    exchange = "(default exchange)" if letter.exchange == "" else letter.exchange or "?"
    return f"{exchange} / {letter.routing_key or '?'}"


def list_table(letters: Sequence[DeadLetter], queue: str, total: int) -> Table:
    """One row per dead letter; the caption says how many there are and what was not shown."""
    table = Table(title=f"Dead letters in {queue}")
    # What an operator copies (the ID, the sender) is never cut; the preview gives way first.
    table.add_column("id", no_wrap=True, min_width=max((len(letter.id) for letter in letters), default=2))
    for column in ("queue", "exchange / routing key", "reason", "count"):
        table.add_column(column, justify="right" if column == "count" else "left", overflow="fold")
    senders = (len(letter.sender or "-") for letter in letters)
    table.add_column("sender", no_wrap=True, min_width=max(senders, default=6))
    for column in ("replays", "type", "died", "bytes"):
        right = column in ("replays", "bytes")
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    table.add_column("preview", overflow="fold")
    for letter in letters:
        table.add_row(
            escape(letter.id) + ("[red]![/]" if letter.suspect else ""),
            escape(letter.queue or "?"),
            escape(_origin(letter)),
            escape(letter.reason or "?"),
            str(letter.count),
            escape(letter.sender or "-"),
            str(letter.replays),
            escape(letter.type or ""),
            "" if letter.died_at is None else letter.died_at.isoformat(timespec="seconds"),
            str(letter.body_size),
            escape(_short(letter.preview)),
        )
    shown = f"{len(letters)} of {total}" if total > len(letters) else str(len(letters))
    table.caption = (
        f"{shown} dead letter(s)" + _reads_warning(letters) + _replays_note(letters) + _suspects(letters)
    )
    return table


def _short(text: str) -> str:
    return text if len(text) <= TABLE_PREVIEW else text[: TABLE_PREVIEW - 1].rstrip("…") + "…"


def _reads_warning(letters: Iterable[DeadLetter]) -> str:
    worn = [letter.id for letter in letters if letter.reads >= MANY_READS]
    if not worn:
        return ""
    return (
        f"; read {MANY_READS}+ times: {', '.join(worn)} (RabbitMQ 4.0-4.2 drop a quorum-queue message "
        "returned 20 times unless the queue's delivery-limit is raised)"
    )


def _replays_note(letters: Iterable[DeadLetter]) -> str:
    again = [f"{letter.id} ({letter.replays}x)" for letter in letters if letter.replays]
    return f"; dead again after a replay: {', '.join(again)}" if again else ""


def _suspects(letters: Iterable[DeadLetter]) -> str:
    suspects = [f"{letter.id}: {letter.suspect}" for letter in letters if letter.suspect]
    return f"; not dead-lettered by the broker: {'; '.join(suspects)}" if suspects else ""


def detail_table(letter: DeadLetter, max_bytes: int | None = SHOW_BYTES) -> Table:
    table = Table(title=f"Dead letter {escape(letter.id)}", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in detail(letter, max_bytes).items():
        table.add_row(key, escape("" if value is None else str(value)))
    return table
