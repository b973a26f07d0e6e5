"""No log line carries a password: ``observability.logs``' secret filter, given what
``transport.redact.url_secrets`` finds in a URL, hides it in whatever form a line quotes it
(percent-encoded as configured, decoded, re-encoded as yarl writes it, escaped by ``repr``) in
the message, its arguments, an exception's traceback and the bound context, whoever logged it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import typer
from yarl import URL

from observability import logs
from transport.redact import url_secrets

PASSWORDS = [
    pytest.param("p@ssw0rd-at", id="at"),
    pytest.param("pass:w0rd-colon", id="colon"),
    pytest.param("pass/w0rd-slash", id="slash"),
    pytest.param("?starts-with-question", id="question"),
    pytest.param("#starts-with-hash", id="hash"),
    pytest.param("/starts-with-slash", id="leading-slash"),
    pytest.param("100%-percent", id="percent"),
    pytest.param("@:/?#%-all-of-them", id="all"),
    pytest.param("quote'and\\backslash", id="repr-escaped"),
]


def broker_url(password: str) -> str:
    return f"amqp://reckon:{quote(password, safe='')}@mq.example.com:5672/prod"


def store_url(password: str) -> str:
    return f"postgresql+asyncpg://reckon:{quote(password, safe='')}@db.example.com:5432/reckon"


def forms(password: str) -> list[str]:
    """Every way a line might show ``password``: the ways that must never appear."""
    return [password, quote(password, safe=""), quote(password), repr(password)[1:-1]]


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[logs.SecretFilter]:
    """A fresh process-wide filter (so these tests neither see nor leave anyone's secrets)."""
    fresh = logs.SecretFilter()
    monkeypatch.setattr(logs, "SECRETS", fresh)
    yield fresh
    for handler in [*logging.getLogger().handlers, logging.lastResort]:
        if handler is not None:
            handler.removeFilter(fresh)


@pytest.fixture(params=["text", "json"])
def output(request: pytest.FixtureRequest, secrets: logs.SecretFilter) -> Iterator[io.StringIO]:
    """A root handler like the one ``configure_logging`` installs, in either format."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logs.json_formatter(process="test")
        if request.param == "json"
        else logging.Formatter(logs.TEXT_FORMAT)
    )
    handler.addFilter(secrets)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    yield stream
    root.setLevel(level)
    root.removeHandler(handler)


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_library_line_quoting_the_url_shows_no_password(password: str, output: io.StringIO) -> None:
    url = broker_url(password)
    logs.hide_secrets(*url_secrets(url))

    # As aio-pika and aiormq log a connection: the URL as configured, as yarl writes it, the
    # password itself (an exception's repr), and the URL's parts.
    logging.getLogger("aiormq.connection").warning("Connection attempt to %s failed: %r", url, password)
    logging.getLogger("aio_pika.robust_connection").info("Connection to %s closed", URL(url))
    logging.getLogger("asyncio").error("password=" + password)  # no arguments: the message itself
    logging.getLogger("aiormq").warning("%s", {"password": password, "url": url})

    text = output.getvalue()
    assert "mq.example.com" in text
    for form in forms(password):
        assert form not in text, form


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_traceback_shows_no_password(password: str, output: io.StringIO) -> None:
    url = store_url(password)
    logs.hide_secrets(*url_secrets(url))

    try:
        raise ConnectionError(f"could not connect to {url} with password {password!r}")
    except ConnectionError:
        logging.getLogger("sqlalchemy.pool").exception("pool failed")

    text = output.getvalue()
    assert "pool failed" in text
    assert "ConnectionError: could not connect to postgresql+asyncpg://reckon:***@db.example.com" in text
    for form in forms(password):
        assert form not in text, form


def test_the_json_line_keeps_its_traceback_and_hides_the_bound_context(secrets: logs.SecretFilter) -> None:
    password = "@:/?#%"
    url = broker_url(password)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter(process="test"))
    handler.addFilter(secrets)
    logger = logging.getLogger("reckon.test-secrets")
    logger.addHandler(handler)
    logger.propagate = False
    logs.hide_secrets(*url_secrets(url))
    try:
        with logs.bound(broker=url):
            try:
                raise ValueError(url)
            except ValueError:
                logger.exception("connect failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["event"] == "connect failed"
    assert "ValueError: amqp://reckon:***@mq.example.com:5672/prod" in line["exception"]
    assert line["broker"] == "amqp://reckon:***@mq.example.com:5672/prod"
    for form in forms(password):
        assert form not in stream.getvalue()


def test_nothing_is_changed_when_no_secret_is_in_the_line(output: io.StringIO) -> None:
    logs.hide_secrets("n0t-in-this-line")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "answered %s with %d records", ("r1", 3), None)

    assert logs.SECRETS.filter(record)
    assert (record.msg, record.args) == ("answered %s with %d records", ("r1", 3))


def test_configure_logging_installs_the_filter_on_the_root_handler_and_last_resort(
    secrets: logs.SecretFilter,
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    stream = io.StringIO()
    try:
        logs.configure_logging(logging.INFO, fmt="text", stream=stream)
        [handler] = root.handlers
        assert secrets in handler.filters
        assert logging.lastResort is not None and secrets in logging.lastResort.filters
        logs.hide_secrets("registered-after-configuring")
        logging.getLogger("aiormq").warning("password registered-after-configuring")
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved
    assert stream.getvalue().endswith("WARNING aiormq password ***\n")


def test_empty_secrets_are_ignored_and_the_mask_itself_is_not_a_secret(secrets: logs.SecretFilter) -> None:
    logs.hide_secrets("", "***")

    assert secrets.secrets == ()
    assert logs.hidden("nothing hidden ***") == "nothing hidden ***"


def test_the_coordinators_settings_hide_the_broker_and_store_passwords(
    secrets: logs.SecretFilter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from accounting.cli.common import settings_from

    monkeypatch.delenv("RECKON_CONFIG", raising=False)
    monkeypatch.setenv("AMQP_URL", broker_url("br0ker/pass?"))
    monkeypatch.setenv("RECKON_STORE_URL", store_url("st0re@pass#"))

    settings_from(None)

    assert logs.hidden("br0ker/pass? and st0re@pass#") == "*** and ***"


def test_the_payment_consumers_settings_hide_the_broker_password(
    secrets: logs.SecretFilter, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from payments.cli import settings_from

    monkeypatch.delenv("RECKON_CONFIG", raising=False)
    monkeypatch.setenv("AMQP_URL", broker_url("pay:ments%pass"))

    settings_from(None, payments_db=tmp_path / "ledger.sqlite3")

    assert logs.hidden("pay:ments%pass") == "***"


def test_a_refused_url_is_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from payments.cli import settings_from

    monkeypatch.delenv("RECKON_CONFIG", raising=False)
    monkeypatch.setenv("AMQP_URL", "amqp://reckon:?Sup3rS3cret@mq.example.com/")

    with pytest.raises(typer.Exit):
        settings_from(None)

    printed = capsys.readouterr().err
    assert "amqp_url" in printed.lower() and "percent-encoded" in printed
    assert "Sup3rS3cret" not in printed
