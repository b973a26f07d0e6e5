"""Dead letters as an operator sees them: parsing x-death, IDs, choosing what to replay, output."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from aiormq.exceptions import ChannelAccessRefused
from pydantic import ValidationError
from rich.console import Console

from accounting.dlq.letters import (
    DEFAULT_MAX_REPLAYS,
    PREVIEW_BYTES,
    REPLAYS_HEADER,
    dead_letter,
    detail,
    letter_id,
    list_table,
    preview,
    replay_headers,
    replay_refusal,
    replayed_headers,
    select,
    summary,
    suspect,
)
from accounting.dlq.queue import refused
from accounting.dlq.settings import ReplaySettings

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
        "sender": None,
        "replays": 0,
        "suspect": None,
        "preview": '{"x": 1}',
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


# What a listing keeps, who sent a letter, whether the broker dead-lettered it, replays -------------


def test_a_listed_letter_keeps_no_body_only_its_size_id_and_a_one_line_preview() -> None:
    body = b'{"lines": [\n' + b"x" * 1_000_000 + b"]}"

    kept = dead_letter(body, headers())
    listed = dead_letter(body, headers(), keep_body=False)

    assert listed.body is None and kept.body == body
    assert (listed.id, listed.body_size) == (kept.id, len(body))  # the hash was taken while reading
    assert listed.preview == '{"lines": [ ' + "x" * (PREVIEW_BYTES - 12) + "…"
    assert preview(b"short") == "short"
    assert summary(listed)["preview"] == listed.preview


def test_the_sender_is_the_user_id_and_the_replays_come_from_the_header() -> None:
    letter = dead_letter(b"{}", headers(**{REPLAYS_HEADER: 2}), user_id="reckon-coordinator")

    assert (letter.sender, letter.replays) == ("reckon-coordinator", 2)
    assert (dead_letter(b"{}", headers()).sender, dead_letter(b"{}", headers()).replays) == (None, 0)


def test_a_letter_the_broker_did_not_dead_letter_is_suspect_when_it_lacks_what_the_broker_writes() -> None:
    def without(field: str) -> dict[str, Any]:
        changed = headers()
        del changed["x-death"][0][field]
        return changed

    assert suspect(headers(), "invoice.issued", "ns") is None
    assert "no x-death" in (suspect({}) or "")
    assert "without time" in (suspect(without("time")) or "")
    assert "without routing-keys" in (suspect(without("routing-keys")) or "")
    poisoned = headers()
    poisoned["x-death"][0]["reason"] = "poison"
    assert "reason 'poison'" in (suspect(poisoned) or "")
    unfirst = headers()
    del unfirst["x-first-death-queue"]
    assert "x-first-death-queue" in (suspect(unfirst) or "")
    assert "outside namespace other" in (suspect(headers(), "invoice.issued", "other") or "")
    assert "routing key 'elsewhere'" in (suspect(headers(), "elsewhere", "ns") or "")
    assert dead_letter(b"", {}, routing_key="k").suspect is not None


def test_a_replay_counts_itself_in_a_header_that_survives_the_next_death() -> None:
    once = replayed_headers(headers())
    twice = replayed_headers({**headers(), **once})

    assert once == {"trace": "abc", REPLAYS_HEADER: 1}
    assert twice[REPLAYS_HEADER] == 2


def test_a_replay_is_refused_past_the_maximum_or_as_another_user_than_the_sender() -> None:
    signed = dead_letter(b"{}", headers(**{REPLAYS_HEADER: 1}), user_id="reckon-coordinator")
    unsigned = dead_letter(b"{}", headers())

    assert replay_refusal(signed, 3, "reckon-coordinator") is None
    assert replay_refusal(unsigned, 3, "reckon-operator") is None  # it claims nobody: nothing to keep
    too_often = replay_refusal(signed, 1, "reckon-coordinator") or ""
    assert "replayed 1 time(s) already" in too_often
    assert "max_replays is 1 (RECKON_DLQ_MAX_REPLAYS" in too_often
    as_operator = replay_refusal(signed, 3, "reckon-operator") or ""
    assert "sent by broker user reckon-coordinator" in as_operator
    assert "RECKON_DLQ_REPLAY_URL" in as_operator
    assert "where it came from is unknown" in (replay_refusal(dead_letter(b"", {}), 3, None) or "")


def test_show_cuts_a_large_body_on_a_character_and_says_so() -> None:
    letter = dead_letter("é".encode() * 10, headers(), message_id="m")  # 2 bytes a character
    binary = dead_letter(b"\xff" * 10, headers(), message_id="b")

    assert (detail(letter, 5)["body"], detail(letter, 5)["body_truncated"]) == ("éé", True)
    assert (detail(letter)["body"], detail(letter)["body_truncated"]) == ("é" * 10, False)
    assert detail(binary, 4)["body_base64"] == "/////w=="


def test_replay_settings_come_from_the_environment_with_a_default_and_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RECKON_DLQ_MAX_REPLAYS", raising=False)
    monkeypatch.delenv("RECKON_DLQ_REPLAY_URL", raising=False)
    assert (ReplaySettings().max_replays, ReplaySettings().replay_url) == (DEFAULT_MAX_REPLAYS, None)

    monkeypatch.setenv("RECKON_DLQ_MAX_REPLAYS", "5")
    monkeypatch.setenv("RECKON_DLQ_REPLAY_URL", "amqp://reckon-coordinator:secret@broker/reckon")
    assert ReplaySettings().max_replays == 5

    monkeypatch.setenv("RECKON_DLQ_MAX_REPLAYS", "-1")
    with pytest.raises(ValidationError, match="max_replays"):
        ReplaySettings()
    monkeypatch.setenv("RECKON_DLQ_MAX_REPLAYS", "1")
    monkeypatch.setenv("RECKON_DLQ_REPLAY_URL", "http://reckon-coordinator:secret@broker/")
    with pytest.raises(ValidationError, match="replay_url") as refused_url:
        ReplaySettings()
    assert "secret" not in str(refused_url.value)


def test_a_refusal_names_the_user_the_permission_and_the_queue() -> None:
    error = ChannelAccessRefused(
        "ACCESS_REFUSED - access to queue 'billing.dead-letters' in vhost 'reckon' refused for user 'c'"
    )

    line = refused(error, "c", "read", "queue", "billing.dead-letters")

    assert line.startswith("broker user c may not read queue billing.dead-letters (ACCESS_REFUSED - ")
    assert "\n" not in line
