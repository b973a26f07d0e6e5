"""``redact_url`` and ``scrub``: whatever shape a URL has, its secret never survives."""

from __future__ import annotations

import pytest

from transport.redact import broker_unavailable, redact_url, scrub, url_secrets

SECRET = "Sup3rS3cret"

NASTY_URLS = [
    pytest.param(f"amqp://billing:{SECRET}@mq.example.com:5672/prod", id="plain"),
    pytest.param(f"amqps://billing:{SECRET}@[2001:db8::1]:5671/", id="ipv6"),
    pytest.param(f"billing:{SECRET}@mq.example.com:5672/", id="no-scheme"),
    pytest.param(f"amqp:billing:{SECRET}@mq.example.com/", id="scheme-without-slashes"),
    pytest.param(f"amqp://billing:{SECRET}@weird@mq.example.com/", id="at-in-password"),
    pytest.param(f"amqp://billing:{SECRET}/x@mq.example.com/", id="slash-in-password"),
    pytest.param(f"amqp://billing:{SECRET}?x@mq.example.com/", id="question-mark-in-password"),
    pytest.param(f"amqp://billing:{SECRET}#x@mq.example.com/", id="hash-in-password"),
    pytest.param(f"amqp://billing:{SECRET}:more@mq.example.com/", id="colon-in-password"),
    pytest.param(f"amqp://bill%40ing:{SECRET}%40x@mq.example.com/", id="percent-encoded-at"),
    pytest.param("amqp://billing:Sup3r%53%33cret@mq.example.com/", id="percent-encoded-password"),
    pytest.param(f"amqp%3A%2F%2Fbilling%3A{SECRET}%40mq.example.com%2F", id="whole-url-encoded"),
    pytest.param(f"amqp%253A%252F%252Fbilling%253A{SECRET}%2540mq%2F", id="encoded-twice"),
    pytest.param(f"amqp://mq.example.com/?password={SECRET}", id="password-in-query"),
    pytest.param(f"amqp://mq.example.com/?heartbeat=30&PassWord={SECRET}&x=1", id="query-mixed-case"),
    pytest.param(f"postgresql+asyncpg://u@db/reckon?sslpassword={SECRET}", id="sslpassword"),
    pytest.param(f"postgresql+asyncpg://u@db/reckon?auth_token={SECRET};x=1", id="token-semicolon"),
    pytest.param(f"amqp://mq.example.com/#password={SECRET}", id="fragment"),
    pytest.param(f"amqp://billing:{SECRET}@mq.example.com:notaport/", id="bad-port"),
    pytest.param(f"amqp://billing:{SECRET}", id="password-where-host-should-be"),
    pytest.param(f"billing:{SECRET}", id="bare-user-and-password"),
    pytest.param(f"amqp://billing:{SECRET}@[::1/", id="broken-ipv6"),
    pytest.param(f"postgresql+asyncpg://u:{SECRET}@h1:5432,h2:5432/reckon", id="several-hosts"),
    pytest.param(f"sqlite+aiosqlite:///var/db@x:{SECRET}", id="sqlite-path-with-at"),
    pytest.param(f"  amqp://billing:{SECRET}@mq.example.com/  ", id="whitespace"),
    pytest.param(f"AMQP://billing:{SECRET}@MQ/", id="upper-case-scheme"),
    pytest.param(f"amqp://:{SECRET}@mq.example.com/", id="no-user"),
    pytest.param(f"amqp://billing:{SECRET}@", id="no-host"),
    pytest.param(f"amqp://billing:{SECRET}@mq.example.com/vhost\n", id="newline"),
]


@pytest.mark.parametrize("url", NASTY_URLS)
def test_the_secret_never_survives_redaction(url: str) -> None:
    redacted = redact_url(url)

    assert SECRET not in redacted
    assert SECRET.lower() not in redacted.lower()
    assert redact_url(redacted) == redacted  # redacting twice changes nothing more


@pytest.mark.parametrize("url", NASTY_URLS)
def test_the_secret_never_survives_an_error_message_quoting_it(url: str) -> None:
    error = ValueError(f"cannot parse {url!r}: bad value {SECRET!r} near {url.strip()}")

    assert SECRET not in scrub(str(error), url)
    assert SECRET not in broker_unavailable(url, error)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://mq.example.com/", "amqp://mq.example.com/"),
        ("amqp://guest@mq.example.com:5672/%2F", "amqp://guest@mq.example.com:5672/%2F"),
        ("amqp://u:p@[::1]:5672/", "amqp://u:***@[::1]:5672/"),
        ("amqp://u:p@h:5672/v?heartbeat=30", "amqp://u:***@h:5672/v?heartbeat=30"),
        ("sqlite+aiosqlite:///var/reckon.sqlite3", "sqlite+aiosqlite:///var/reckon.sqlite3"),
        ("postgresql+asyncpg://u:pw@db:5432/reckon", "postgresql+asyncpg://u:***@db:5432/reckon"),
        ("amqp://u:p%40ss@h/", "amqp://u:***@h/"),
        ("u:p@h", "u:***@h"),
        ("", ""),
    ],
)
def test_what_is_not_secret_is_kept(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_url_secrets_names_the_password_raw_and_decoded() -> None:
    assert set(url_secrets("amqp://u:p%40ss@h/?token=abc")) >= {"p%40ss", "p@ss", "abc"}
