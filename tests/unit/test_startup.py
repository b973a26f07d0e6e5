"""``observability.startup``: a start-up step retried while its error is transient, what
``/readyz`` and ``/startupz`` say meanwhile, and what the log says (once, not per attempt)."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request

import pytest

from observability.http import HttpSettings, OpsServer
from observability.startup import Startup


class NotYet(ConnectionError):
    pass


def transient(error: BaseException) -> bool:
    return isinstance(error, NotYet)


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_a_transient_error_is_retried_and_readiness_names_it_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = OpsServer()
    await server.start(HttpSettings(0, "127.0.0.1"))
    seen: list[tuple[int, dict[str, object]]] = []
    attempts = 0

    async def step() -> str:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            seen.append(await asyncio.to_thread(get, f"{server.url}/readyz"))
        if attempts < 4:
            raise NotYet("access refused for user 'x'")
        return "connected"

    startup = Startup(server, first_wait=0.01, longest_wait=0.02)
    try:
        with caplog.at_level(logging.INFO, logger="reckon.startup"):
            result = await startup.wait_for("the broker", step, transient, lambda error: "refused")
    finally:
        await server.stop()

    assert result == "connected" and attempts == 4
    assert seen[0] == (
        503,
        {
            "status": "not ready",
            "checks": {"startup": "waiting for the broker: trying again (last attempt: refused)"},
        },
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "access refused for user 'x'" in warnings[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("the broker answers after" in r.getMessage() for r in caplog.records)
    assert "the broker" in startup.waited


async def test_an_error_that_waiting_cannot_fix_is_raised_at_once() -> None:
    attempts = 0

    async def step() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("AMQP_URL is malformed")

    with pytest.raises(ValueError, match="malformed"):
        await Startup(first_wait=0.01).wait_for("the broker", step, transient)
    assert attempts == 1


async def test_a_long_wait_is_an_error_once_per_alert_period(caplog: pytest.LogCaptureFixture) -> None:
    attempts = 0

    async def step() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 6:
            raise NotYet("connection refused")

    startup = Startup(alert_after=0.05, first_wait=0.03, longest_wait=0.03)
    with caplog.at_level(logging.INFO, logger="reckon.startup"):
        await startup.wait_for("the store", step, transient)

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert 1 <= len(errors) < attempts - 1, errors
    assert all(message.startswith("the store has not answered for") for message in errors)


async def test_startupz_is_503_only_while_a_step_that_holds_it_runs() -> None:
    server = OpsServer()
    await server.start(HttpSettings(0, "127.0.0.1"))
    during: list[tuple[int, dict[str, object]]] = []

    async def migrate() -> None:
        during.append(await asyncio.to_thread(get, f"{server.url}/startupz"))

    try:
        before = await asyncio.to_thread(get, f"{server.url}/startupz")
        await Startup(server).wait_for("the store", migrate, transient, holds_startup=True)
        after = await asyncio.to_thread(get, f"{server.url}/startupz")
    finally:
        await server.stop()

    assert before == (200, {"status": "started"})
    assert during == [(503, {"status": "starting", "step": "the store: in progress"})]
    assert after == (200, {"status": "started"})
