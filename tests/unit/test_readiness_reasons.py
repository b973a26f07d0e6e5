"""``/readyz`` names the dependency that is down and a short reason, never an exception's text (a
broker's or a database's error message can carry a URL and its password); the exception goes to
the log at WARNING, once per change rather than at every probe."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from accounting.infra.supervisor import TaskHealth
from accounting.runtime.ops import error_kind, task_check
from observability.http import HttpSettings, OpsServer

SECRET = "Sup3rS3cret"
URL = f"postgresql+asyncpg://reckon:{SECRET}@db.example.com:5432/reckon"


@pytest.fixture
async def ops() -> AsyncIterator[OpsServer]:
    server = OpsServer(CollectorRegistry(), timeout=0.5)
    await server.start(HttpSettings(0, "127.0.0.1"))
    yield server
    await server.stop()


async def readyz(server: OpsServer) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(server.url + "/readyz") as response:
        return response.status, await response.text()


def warnings_about(caplog: pytest.LogCaptureFixture, check: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "reckon.http"
        and record.levelno == logging.WARNING
        and f" {check} " in record.getMessage()
    ]


async def test_a_check_that_raises_shows_its_type_never_its_text(
    ops: OpsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reckon.http")

    async def store() -> str | None:
        raise ConnectionRefusedError(f"cannot reach {URL}")

    async def broker() -> str | None:
        return "not connected (reconnecting)"

    ops.set_checks({"store": store, "broker": broker})

    status, body = await readyz(ops)

    assert status == 503
    assert json.loads(body) == {
        "status": "not ready",
        "checks": {
            "store": "failed (ConnectionRefusedError), see the log",
            "broker": "not connected (reconnecting)",
        },
    }
    assert SECRET not in body and "db.example.com" not in body
    [warning] = warnings_about(caplog, "store")
    assert "ConnectionRefusedError: cannot reach" in warning.getMessage()
    assert warning.exc_info is not None


async def test_the_exception_is_logged_once_per_change_not_at_every_probe(
    ops: OpsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reckon.http")
    failure: list[Exception | None] = [OSError("database is locked")]

    async def store() -> str | None:
        if failure[0] is not None:
            raise failure[0]
        return None

    ops.set_checks({"store": store})
    for _ in range(5):
        assert (await readyz(ops))[0] == 503
    assert len(warnings_about(caplog, "store")) == 1

    failure[0] = RuntimeError("pool exhausted")  # a different failure: logged once more
    for _ in range(3):
        await readyz(ops)
    assert len(warnings_about(caplog, "store")) == 2

    failure[0] = None  # recovered: said once at INFO
    assert (await readyz(ops))[0] == 200
    assert (await readyz(ops))[0] == 200
    recovered = [record for record in caplog.records if "no longer raises" in record.getMessage()]
    assert len(recovered) == 1 and recovered[0].levelno == logging.INFO

    failure[0] = OSError("database is locked")  # failing again after recovering: logged again
    await readyz(ops)
    assert len(warnings_about(caplog, "store")) == 3


async def test_a_failing_supervised_task_shows_the_errors_type_only() -> None:
    health = TaskHealth("relay")
    health.running = True
    check = task_check(health)

    health.failed(ConnectionError(f"broker at amqp://reckon:{SECRET}@mq/ refused the channel"))

    reason = await check()
    assert reason == "failing (1 in a row): ConnectionError"
    assert SECRET not in reason


@pytest.mark.parametrize(
    ("last_error", "kind"),
    [
        ("OSError: database is locked", "OSError"),
        ("ChannelInvalidStateError: ", "ChannelInvalidStateError"),
        (None, "error"),
        (f"amqp://reckon:{SECRET}@mq/", "error"),  # not "Type: text": nothing of it is shown
    ],
)
def test_error_kind_keeps_only_a_type_name(last_error: str | None, kind: str) -> None:
    assert error_kind(last_error) == kind
