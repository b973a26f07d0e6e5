"""Dead letters as an operator sees them: parsing x-death, IDs, choosing what to replay, output."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from accounting.dlq.letters import dead_letter, detail, letter_id, list_table, replay_headers, select, summary

DIED = datetime(2026, 11, 1, 0, 0, 5, tzinfo=UTC)
SENT = datetime(2026, 11, 1, 0, 0, 1, tzinfo=UTC)


def headers(**extra: Any) -> dict[str, Any]:
    return {
        "trace": "abc",
        "x-death": [
            {
                "count": 1,
                "reason": "delivery_limit",
                "queue": "ns.payments.invoices",
                "time": DIED,
                "exchange": "ns.billing.invoices",
                "routing-keys": ["invoice.issued"],
            },
            {
                "count": 2,
                "reason": "rejected",
                "queue": "ns.older",
                "time": SENT,
                "exchange": "x",
                "routing-keys": ["y"],
            },
        ],
        "x-first-death-queue": "ns.older",
        "x-first-death-reason": "rejected",
        "x-first-death-exchange": "x",
        "x-last-death-queue": "ns.payments.invoices",
        "x-delivery-count": 3,
        **extra,
    }


def test_a_dead_letter_is_read_from_its_most_recent_death() -> None:
    letter = dead_letter(
        b'{"a": 1}',
        headers(),
        message_id="inv-1",
        message_type="InvoiceIssued",
        timestamp=SENT,
        content_type="application/json",
    )

    assert (letter.id, letter.queue, letter.exchange, letter.routing_key) == (
        "inv-1",
        "ns.payments.invoices",
        "ns.billing.invoices",
        "invoice.issued",
    )
    assert (letter.reason, letter.count, letter.died_at, letter.reads) == ("delivery_limit", 1, DIED, 3)
    assert (letter.type, letter.timestamp, letter.body_size) == ("InvoiceIssued", SENT, 8)
    assert letter.replayable


def test_header_values_as_bytes_are_read_as_text() -> None:
    raw = {
        "x-death": [
            {"count": 4, "reason": b"expired", "queue": b"q", "exchange": b"", "routing-keys": [b"k"]}
        ]
    }

    letter = dead_letter(b"", raw)

    assert (letter.reason, letter.queue, letter.exchange, letter.routing_key, letter.count) == (
        "expired",
        "q",
        "",
        "k",
        4,
    )
    assert letter.replayable  # the default exchange, routing key = the queue's name


def test_a_message_without_x_death_is_listed_but_cannot_be_replayed() -> None:
    letter = dead_letter(b"x", {})

    assert (letter.queue, letter.exchange, letter.routing_key, letter.reason, letter.count) == (
        None,
        None,
        None,
        None,
        0,
    )
    assert not letter.replayable


def test_the_id_is_the_message_id_or_a_stable_short_hash() -> None:
    first = letter_id(None, b"body", headers())
    again = letter_id(None, b"body", headers(**{"x-delivery-count": 9}))  # read again since

    assert first == again
    assert first.startswith("h-") and len(first) == 14
    assert letter_id(None, b"other body", headers()) != first
    moved = headers()
    moved["x-death"][0]["queue"] = "ns.elsewhere"
    assert letter_id(None, b"body", moved) != first
    assert letter_id("period-closed/2026-10", b"body", headers()) == "period-closed/2026-10"


def test_replayed_headers_drop_only_the_brokers_bookkeeping() -> None:
    assert replay_headers(headers(**{"x-acquired-count": 2, "x-custom": 1})) == {
        "trace": "abc",
        "x-custom": 1,
    }


def test_select_takes_every_copy_in_queue_order_and_names_unknown_ids() -> None:
    letters = [dead_letter(body, {}, message_id=mid) for mid, body in (("a", b"1"), ("b", b"2"), ("a", b"3"))]

    chosen, unknown = select(letters, ["a", "zz", "a", "yy"])

    assert [letter.body for letter in chosen] == [b"1", b"3"]
    assert unknown == ["zz", "yy"]


def test_json_output_has_every_field_and_the_body_only_in_detail() -> None:
    letter = dead_letter(b'{"x": 1}', headers(), message_id="m", message_type="T", timestamp=SENT)
    binary = dead_letter(b"\xff\x00", headers(), message_id="b")

    listed = summary(letter)
    shown = detail(letter)

    assert json.loads(json.dumps(listed)) == listed
    assert listed == {
        "id": "m",
        "message_id": "m",
        "queue": "ns.payments.invoices",
        "exchange": "ns.billing.invoices",
        "routing_key": "invoice.issued",
        "reason": "delivery_limit",
        "count": 1,
        "died_at": "2026-11-01T00:00:05+00:00",
        "type": "T",
        "timestamp": "2026-11-01T00:00:01+00:00",
        "body_size": 8,
        "reads": 3,
    }
    assert "body" not in listed
    assert shown["body"] == '{"x": 1}'
    assert detail(binary)["body_base64"] == "/wA="


def test_the_table_says_how_many_and_warns_about_letters_read_very_often() -> None:
    worn = dead_letter(b"x", headers(**{"x-delivery-count": 17}), message_id="worn")
    console = Console(width=300, record=True)

    console.print(list_table([worn], "ns.billing.dead-letters", total=3))

    text = console.export_text()
    assert "Dead letters in ns.billing.dead-letters" in text
    assert "1 of 3 dead letter(s)" in text
    assert "read 15+ times: worn" in text
    assert "ns.billing.invoices / invoice.issued" in text
