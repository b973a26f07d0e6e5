"""Shared fixtures. Integration tests talk to the real RabbitMQ at AMQP_URL.

Where nothing answers there and a Docker engine exists, a RabbitMQ container is started with
testcontainers; where neither exists the tests fail with a message saying how to start a broker.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from accounting.amqp.topology import delete_namespace
from contracts import Topology
from tests.broker import configured_url, docker_available, probe, unavailable_message

TEST_SERVICES = ("compute", "storage", "network", "example", "ghost", "broken", "slow", "echo", "chunky")


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    url = configured_url()
    error = probe(url)
    if error is None:
        yield url
        return
    if not docker_available():
        pytest.fail(unavailable_message(url, error), pytrace=False)
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13-alpine") as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(container.port)
        yield f"amqp://{container.username}:{container.password}@{host}:{port}/"


@pytest.fixture
async def topology(amqp_url: str) -> AsyncIterator[Topology]:
    """A fresh namespace per test, deleted afterwards, so tests never see each other's messages."""
    namespaced = Topology(f"test-{uuid.uuid4().hex[:10]}")
    yield namespaced
    await delete_namespace(amqp_url, namespaced, TEST_SERVICES)


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url, timeout=10)
    yield connection
    await connection.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault suite's one line (tests/faults.py), when any fault scenario ran."""
    from tests.faults import LEDGER

    if LEDGER.scenarios or LEDGER.attacks:
        terminalreporter.write_line(LEDGER.summary())
