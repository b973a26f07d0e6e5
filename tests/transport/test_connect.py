"""``connect`` against brokers that do not answer, with no broker needed: a URL that is refused
before aio-pika sees it, a closed port, and a port that takes the TCP connection and never speaks
AMQP (where a connect attempt hangs). SIGTERM (the ``stop`` event) ends the attempt at once and
closes what it had begun, and nothing the libraries log about a first attempt reaches the log."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import pytest

from transport.connection import BrokerUnavailable, Stopped, connect, unless_stopped

SECRET = "Sup3r@S3cret/x"
ENCODED = "Sup3r%40S3cret%2Fx"


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and never answers (a broker that hangs, a firewall)."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in accepted:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.fixture
def library_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG, logger="aiormq")
    caplog.set_level(logging.DEBUG, logger="aio_pika")
    yield caplog


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


@pytest.mark.parametrize(
    "url",
    [
        f"guest:{ENCODED}@127.0.0.1:5672/",
        f"amqp:/guest:{ENCODED}@127.0.0.1/",
        f"amqp://reckon:?{SECRET}@127.0.0.1/",
    ],
)
async def test_a_malformed_url_is_refused_before_aio_pika_sees_it(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("aio-pika was called")

    monkeypatch.setattr(aio_pika, "connect_robust", never)

    with pytest.raises(BrokerUnavailable) as raised:
        await connect(url)

    message = str(raised.value)
    assert message.startswith("AMQP_URL ")
    assert SECRET not in message and ENCODED not in message
    assert "\n" not in message


async def test_a_closed_port_is_one_line_and_nothing_else_is_logged(
    closed_port: int, library_log: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(BrokerUnavailable) as raised:
        await connect(f"amqp://guest:{ENCODED}@127.0.0.1:{closed_port}/", connect_timeout=5)

    assert f"127.0.0.1:{closed_port}" in str(raised.value)
    assert ENCODED not in str(raised.value) and SECRET not in str(raised.value)
    assert library_log.records == []
    await asyncio.sleep(0.1)
    assert not other_tasks()  # no reconnection left retrying


async def test_a_broker_that_never_answers_is_given_up_after_the_timeout(
    silent_port: int, library_log: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"no connection within 0\.5s"):
        await connect(f"amqp://guest:{ENCODED}@127.0.0.1:{silent_port}/", connect_timeout=0.5)

    assert time.monotonic() - started < 3
    assert library_log.records == []
    await asyncio.sleep(0.1)
    assert not other_tasks()


async def test_stop_ends_a_connect_attempt_at_once_and_closes_what_it_began(
    silent_port: int, library_log: pytest.LogCaptureFixture
) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    started = time.monotonic()

    with pytest.raises(Stopped):
        await connect(f"amqp://guest:{ENCODED}@127.0.0.1:{silent_port}/", connect_timeout=30, stop=stop)

    assert time.monotonic() - started < 2
    assert library_log.records == []
    await asyncio.sleep(0.1)
    assert not other_tasks()


async def test_a_stop_already_set_stops_before_connecting(silent_port: int) -> None:
    stop = asyncio.Event()
    stop.set()

    with pytest.raises(Stopped):
        await connect(f"amqp://guest:guest@127.0.0.1:{silent_port}/", connect_timeout=30, stop=stop)


async def test_unless_stopped_gives_the_result_when_the_work_finishes_first() -> None:
    stop = asyncio.Event()

    async def work() -> str:
        await asyncio.sleep(0.01)
        return "done"

    assert await unless_stopped(work(), stop) == "done"
    assert not other_tasks()

    async def fails() -> str:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await unless_stopped(fails(), stop)
