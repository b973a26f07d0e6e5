"""Finding the real broker for tests, and cleaning up a test's namespace afterwards."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import aio_pika

from transport.redact import DEFAULT_AMQP_URL, broker_unavailable


async def _answers(url: str) -> BaseException | None:
    try:
        connection = await aio_pika.connect(url, timeout=5)
    except Exception as error:
        return error
    await connection.close()
    return None


def docker_available() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    return subprocess.run([docker, "info"], capture_output=True, timeout=20, check=False).returncode == 0


def configured_url() -> str:
    return os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)


def probe(url: str) -> BaseException | None:
    """None when RabbitMQ answers at ``url``, else the error."""
    return asyncio.run(_answers(url))


def unavailable_message(url: str, error: BaseException) -> str:
    return broker_unavailable(url, error) + " (No Docker engine either, so testcontainers cannot start one.)"


async def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl`` against the local broker (restarts in the fault tests)."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, error = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)}: {error.decode()}"


def rabbitmqctl_sync(*args: str) -> None:
    """``rabbitmqctl`` for fixtures that are not async (making and deleting broker users)."""
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stderr}"
