"""``amqp_url_problem``: a URL whose credentials some parser would read differently is refused in
one line that says to percent-encode the password and never quotes it; a percent-encoded password,
whatever it holds, is accepted and reads back exactly as aio-pika's parser (yarl) sees it."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from transport.urls import amqp_url_problem

SECRET = "Sup3rS3cret"


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        # What an operator tried: each passed the old check, or was never checked by a worker.
        (f"guest:{SECRET}@127.0.0.1:5672/", "must start with amqp:// or amqps://"),
        (f"amqp:/guest:{SECRET}@127.0.0.1/", "must start with amqp:// or amqps://"),
        (f"amqp://reckon:?{SECRET}@mq.example.com/", "an '@' after its host"),
        (f"amqp://reckon:#{SECRET}@mq.example.com/", "an '@' after its host"),
        (f"amqp://reckon:/{SECRET}@mq.example.com/", "an '@' after its host"),
        (f"amqp://reckon:?x{SECRET}@mq.example.com:5672/vhost", "an '@' after its host"),
        (f"amqp://reckon:{SECRET}%zz@mq.example.com/", "does not start a percent-escape"),
        (f"amqp://reckon:50%{SECRET}@mq.example.com/", "does not start a percent-escape"),
        (f"amqp://:{SECRET}@mq.example.com/", "a password but no user name"),
        (f"amqp://reckon:{SECRET}@mq.example.com:/", "an empty port"),
        (f"amqp://reckon:?{SECRET}", "an empty port"),
        (f"amqp://reckon:{SECRET}/x@mq.example.com/", "cannot be parsed"),
    ],
)
def test_unreadable_credentials_are_refused_saying_how_to_write_them(url: str, detail: str) -> None:
    problem = amqp_url_problem(url)

    assert problem is not None
    assert detail in problem
    assert SECRET not in problem
    assert "\n" not in problem
    if "an '@'" in detail or "percent-escape" in detail or "cannot be parsed" in detail:
        assert "percent-encoded (%40 %3A %2F %3F %23 %25)" in problem


@pytest.mark.parametrize(
    "url",
    [
        "amqp://reckon:%3Fsecret@mq.example.com/",
        "amqp://reckon:%23secret@mq.example.com/",
        "amqp://reckon:%2Fsecret@mq.example.com/",
        "amqp://reckon:p%40ss%3Aw%2Fo%3Fr%23d%25@mq.example.com:5672/prod",
        "amqp://reckon:p@ss@mq.example.com/",  # a raw '@': every parser ends the password at the last one
        "amqp://reckon:p:ss@mq.example.com/",  # a raw ':': every parser ends the user at the first one
        "amqp://reckon@mq.example.com:5672/%2F",
        "amqps://[::1]:5671/",
    ],
)
def test_credentials_every_parser_reads_alike_are_accepted(url: str) -> None:
    assert amqp_url_problem(url) is None


PASSWORDS = st.text(alphabet=st.sampled_from("@:/?#%&=+ !$'()*,;[]abcXYZ019-._~é"), min_size=1, max_size=24)


@given(password=PASSWORDS)
def test_any_password_percent_encoded_is_accepted_and_reads_back_exactly(password: str) -> None:
    url = f"amqp://reckon:{quote(password, safe='')}@mq.example.com:5672/"

    assert amqp_url_problem(url) is None
    parsed = URL(url)  # what aio-pika (aiormq) connects with
    assert (parsed.user, parsed.password, parsed.host, parsed.port) == (
        "reckon",
        password,
        "mq.example.com",
        5672,
    )


@given(password=PASSWORDS.filter(lambda text: " " not in text))
def test_a_raw_password_is_refused_or_read_alike_by_every_parser(password: str) -> None:
    """Whatever the password holds, written as it is: either the URL is refused, or both parsers
    (urllib's, which the check uses, and yarl's, which aio-pika connects with) find the same user,
    host and port, so the password never travels as a host name, a path or a query."""
    url = f"amqp://reckon:{password}@mq.example.com:5672/"

    problem = amqp_url_problem(url)
    if problem is not None:
        assert "amqp://reckon:***@" in problem or "reckon:***" in problem  # shown redacted
        return
    ours, theirs = urlsplit(url), URL(url)
    assert (ours.hostname, ours.port) == (theirs.host, theirs.port) == ("mq.example.com", 5672)
    assert theirs.user == "reckon"
