"""A broker connection closed by the broker and restored is one warning and one info line, never
an error; one that cannot come back (its user's password changed) is an error after the configured
time, naming why. Real broker, a broker user of its own."""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass

import pytest

from tests.broker import rabbitmqctl
from tests.e2e.platform import broker_connection_names, named
from tests.integration.support import eventually
from transport.connection import connect

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl"),
]


@dataclass
class Target:
    amqp_url: str
    tls_ca_file: None = None
    tls_cert_file: None = None
    tls_key_file: None = None
    reconnect_alert_seconds: float = 60.0


async def close_named(name: str) -> None:
    for pid in await broker_connection_names(named(name)):
        await rabbitmqctl("close_connection", pid, "maintenance restart")


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[tuple[str, str]]:
    return [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= level]


async def test_a_connection_the_broker_closes_and_gives_back_is_one_warning_and_no_error(
    amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"blip-{uuid.uuid4().hex[:8]}"
    connection = await connect(amqp_url, name=name)
    try:
        await connection.channel()
        with caplog.at_level(logging.INFO):
            await close_named(name)
            await eventually(lambda: any("is back after" in m for _, m in messages(caplog, logging.INFO)), 30)
    finally:
        await connection.close()

    assert messages(caplog, logging.ERROR) == []
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert warnings[0][0] == "reckon.broker"
    assert f"broker connection {name} closed" in warnings[0][1] and "CONNECTION_FORCED" in warnings[0][1]


async def test_a_connection_that_cannot_come_back_is_an_error_naming_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    user = f"blip-test-{uuid.uuid4().hex[:8]}"
    await rabbitmqctl("add_user", user, "first-password")
    await rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    name = f"blip-{uuid.uuid4().hex[:8]}"
    try:
        target = Target(f"amqp://{user}:first-password@127.0.0.1:5672/", reconnect_alert_seconds=1.0)
        connection = await connect(target, name=name)
        try:
            with caplog.at_level(logging.INFO):
                await rabbitmqctl("change_password", user, "second-password")
                await close_named(name)

                def refused() -> bool:
                    return any("ACCESS_REFUSED" in m for _, m in messages(caplog, logging.ERROR))

                await eventually(refused, timeout=30)
                await rabbitmqctl("change_password", user, "first-password")
                await eventually(
                    lambda: any("is back after" in m for _, m in messages(caplog, logging.INFO)), 30
                )
        finally:
            await connection.close()
    finally:
        await rabbitmqctl("delete_user", user)

    errors = messages(caplog, logging.ERROR)
    assert {logger for logger, _ in errors} == {"reckon.broker"}
    assert any(f"broker connection {name} has not come back" in message for _, message in errors)
