"""Reading replies as the coordinator would group them, tolerant of replies the schema refuses.

A reply the kit judges may be anything a service sent: not JSON, a float for a quantity, a chunk
without ``seq``. ``read`` takes what it can of one (``Part``) so that the other checks still judge
the rest; ``answers`` groups one request's replies into answers by ``chunk.answer_id``, as the
coordinator does (the newest answer replaces the ones before); ``progress`` tells the shell when an
answer is in. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from conformance.model import Reply


@dataclass(frozen=True)
class Part:
    """What the kit reads of one reply: its status and chunk fields, its records as raw objects."""

    reply: Reply
    document: Mapping[str, Any] | None
    """The body as a JSON object; None when it is not one."""
    status: str | None = None
    seq: int | None = None
    last: bool = False
    total: int | None = None
    answer_id: str | None = None
    records: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None
    """``code: message`` of an error reply."""

    @property
    def is_error(self) -> bool:
        return self.status == "error"


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_remembered: ContextVar[dict[int, Part] | None] = ContextVar("conformance_parts", default=None)


@contextmanager
def remembered() -> Iterator[None]:
    """Within it, each reply is parsed once however often it is read (a run reads its replies at
    every arrival, and each check reads them again); the parts are forgotten when it ends."""
    if _remembered.get() is not None:
        yield
        return
    token = _remembered.set({})
    try:
        yield
    finally:
        _remembered.reset(token)


def read(reply: Reply) -> Part:
    """``reply`` as far as it can be read. An omitted ``chunk`` is one last chunk holding every
    record (the contract's default)."""
    parts = _remembered.get()
    if parts is None:
        return _read(reply)
    part = parts.get(id(reply))
    if part is None or part.reply is not reply:
        part = parts[id(reply)] = _read(reply)
    return part


def _read(reply: Reply) -> Part:
    try:
        document = json.loads(reply.body)
    except (ValueError, UnicodeDecodeError):
        return Part(reply, None)
    if not isinstance(document, dict):
        return Part(reply, None)
    raw = document.get("records")
    records = tuple(item for item in raw if isinstance(item, dict)) if isinstance(raw, list) else ()
    chunk = document.get("chunk")
    seq: int | None
    total: int | None
    if chunk is None:
        seq, last, total, answer_id = 0, True, len(records), None
    elif isinstance(chunk, dict):
        seq, total = _integer(chunk.get("seq")), _integer(chunk.get("total_records"))
        last = chunk.get("last") is True
        answer = chunk.get("answer_id")
        answer_id = answer if isinstance(answer, str) else None
    else:
        seq, last, total, answer_id = None, False, None, None
    status = document.get("status") if isinstance(document.get("status"), str) else None
    error = None
    if status == "error":
        detail = document.get("error")
        if isinstance(detail, dict):
            error = f"{detail.get('code')}: {str(detail.get('message'))[:300]}"
        else:
            error = "(no error object)"
    return Part(reply, document, status, seq, last, total, answer_id, records, error)


@dataclass(frozen=True)
class Answer:
    """One computation of an answer: the chunks of one request that share an ``answer_id``."""

    answer_id: str | None
    parts: tuple[Part, ...]

    @property
    def chunks(self) -> tuple[Part, ...]:
        """The ``ok`` chunks with a readable ``seq``, in arrival order."""
        return tuple(part for part in self.parts if part.status == "ok" and part.seq is not None)

    @property
    def lasts(self) -> tuple[Part, ...]:
        return tuple(part for part in self.chunks if part.last)

    @property
    def seqs(self) -> set[int]:
        return {part.seq for part in self.chunks if part.seq is not None}

    @property
    def finished(self) -> bool:
        """Its last chunk came, and every chunk before it."""
        lasts = self.lasts
        if not lasts:
            return False
        last = lasts[0].seq
        return last is not None and self.seqs >= set(range(last + 1))

    @property
    def errors(self) -> tuple[Part, ...]:
        return tuple(part for part in self.parts if part.is_error)

    def records(self) -> list[tuple[int, Mapping[str, Any]]]:
        """Every record of the answer with its chunk's seq; a chunk repeated (same seq) counts once."""
        seen: set[int] = set()
        found: list[tuple[int, Mapping[str, Any]]] = []
        for part in self.chunks:
            if part.seq is None or part.seq in seen:
                continue
            seen.add(part.seq)
            found.extend((part.seq, record) for record in part.records)
        return found


def answers(replies: Iterable[Reply]) -> list[Answer]:
    """The answers among one request's replies, by ``answer_id`` in order of first arrival; replies
    that are not JSON objects are left out (the schema check names them)."""
    groups: dict[str | None, list[Part]] = {}
    for reply in replies:
        part = read(reply)
        if part.document is None:
            continue
        groups.setdefault(part.answer_id, []).append(part)
    return [Answer(answer_id, tuple(parts)) for answer_id, parts in groups.items()]


def newest(replies: Iterable[Reply]) -> Answer | None:
    """The answer the coordinator would keep: the newest computation."""
    found = answers(replies)
    return found[-1] if found else None


@dataclass(frozen=True)
class Progress:
    """How far one request's answer is, for the shell deciding how long to wait."""

    ended: bool
    """Its newest answer finished, or an error reply came: nothing more to wait for."""
    last_seen: bool
    """A last chunk came (with a chunk before it still missing, unless ``ended``)."""


def progress(replies: Sequence[Reply]) -> Progress:
    answer = newest(replies)
    if answer is None:
        return Progress(ended=False, last_seen=False)
    if answer.errors or answer.finished:
        return Progress(ended=True, last_seen=bool(answer.lasts))
    return Progress(ended=False, last_seen=bool(answer.lasts))


def record_key(record: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(account_id, resource_id, metric)``: once per answer."""
    return (str(record.get("account_id")), str(record.get("resource_id")), str(record.get("metric")))


def canonical(record: Mapping[str, Any]) -> str:
    """A record as one comparable string: its quantity as a normalized decimal (``"3600"`` and
    ``"3600.0"`` are the same usage), its attributes in name order."""
    normalized = dict(record)
    quantity = record.get("quantity")
    if isinstance(quantity, str | int) and not isinstance(quantity, bool):
        try:
            value = Decimal(quantity)
            normalized["quantity"] = format(value.normalize(), "f") if value.is_finite() else quantity
        except InvalidOperation:
            pass
    elif isinstance(quantity, float):
        normalized["quantity"] = repr(quantity)
    return json.dumps(normalized, sort_keys=True, ensure_ascii=False, default=str)
