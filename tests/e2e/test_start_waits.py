"""Every long-running process starts without what it depends on and waits for it, as deployed:
its own process, its own broker user with exactly the permissions of definitions.json, the
operations port the probes read. No restart is needed when the dependency comes:

- the broker user's permissions removed at start, then restored (coordinator, relay, a worker,
  the payment consumer), and the coordinator's PostgreSQL database created only later;
- a broker that does not listen at all: one warning, not one per attempt, and SIGTERM still stops
  the process at once;
- a password rotated in the order deploy/README.md gives (the Secret first, then the broker):
  a process started in between waits and becomes ready, one already running stays ready.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from accounting.amqp.topology import declare_usage_queues
from contracts import Topology
from tests.broker import rabbitmqctl
from tests.deploy.tools import definitions
from tests.e2e.test_json_logs import json_lines
from tests.integration.support import eventually
from tests.integration.test_least_privilege import namespaced, role
from tests.postgres import POSTGRES_URL

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs the local broker's rabbitmqctl"),
]

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120.0
"""Seconds a process may take to notice that what it waits for is there (backoff up to 30 s)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of an operations endpoint; (0, {}) while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


async def probed(port: int, path: str) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(probe, port, path)


def base_environment(url: str, namespace: str, port: int, **settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RECKON_")}
    return {
        **env,
        "AMQP_URL": url,
        "RECKON_NAMESPACE": namespace,
        "RECKON_HTTP_PORT": str(port),
        "RECKON_HTTP_HOST": "127.0.0.1",
        "RECKON_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        **{f"RECKON_{key.upper()}": value for key, value in settings.items()},
    }


@asynccontextmanager
async def running(
    log: Path, env: dict[str, str], *arguments: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *arguments, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def until_probe(port: int, path: str, status: int, timeout: float = WAIT) -> dict[str, Any]:
    seen: list[dict[str, Any]] = [{}]

    async def answered() -> bool:
        code, body = await probed(port, path)
        seen[0] = body
        return code == status

    try:
        await eventually(answered, timeout=timeout)
    except TimeoutError:
        pytest.fail(f"{path} on port {port} never answered {status}; last body {seen[0]}")
    return seen[0]


async def until_startup_says(port: int, words: str, timeout: float = 60) -> dict[str, Any]:
    """/readyz's body once it is 503 with a ``startup`` check that contains ``words``."""
    seen: list[dict[str, Any]] = [{}]

    async def says() -> bool:
        code, body = await probed(port, "/readyz")
        seen[0] = body
        return code == 503 and words in body.get("checks", {}).get("startup", "")

    try:
        await eventually(says, timeout=timeout)
    except TimeoutError:
        pytest.fail(f"/readyz on port {port} never said {words!r}; last body {seen[0]}")
    return seen[0]


def permissions_of(user: str, namespace: str) -> list[str]:
    [granted] = [p for p in definitions()["permissions"] if p["user"] == user]
    return [namespaced(granted[kind], namespace) for kind in ("configure", "write", "read")]


@contextmanager
def missing_database() -> Iterator[tuple[str, str]]:
    """A PostgreSQL database name that does not exist yet, and its URL; dropped afterwards."""
    name = f"reckon_later_{uuid.uuid4().hex[:10]}"
    try:
        yield name, POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        done = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c",
             f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr


async def create_database(name: str) -> None:
    admin = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()


async def test_every_process_waits_for_its_permissions_and_its_database_then_becomes_ready(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    vhost = urlsplit(amqp_url).path.lstrip("/") or "/"
    namespace = topology.namespace
    with (
        role(amqp_url, topology, "reckon-coordinator") as (coordinator_user, coordinator_url),
        role(amqp_url, topology, "reckon-compute") as (compute_user, compute_url),
        role(amqp_url, topology, "reckon-payments") as (payments_user, payments_url),
        missing_database() as (database, store_url),
    ):
        users = {
            coordinator_user: "reckon-coordinator",
            compute_user: "reckon-compute",
            payments_user: "reckon-payments",
        }
        for user in users:
            await rabbitmqctl("clear_permissions", "-p", vhost, user)
        coordinator_settings = {
            "services": "compute",
            "service_users": f"compute={compute_user}",
            "store_url": store_url,
            "rate_card": str(ROOT / "config" / "rate-card.toml"),
            "dead_letters": "policy",
            "relay": "false",
        }
        ports = {name: free_port() for name in ("coordinator", "relay", "compute", "payments")}
        programs = {
            "coordinator": (coordinator_url, ["-m", "accounting.cli", "coordinator"], coordinator_settings),
            "relay": (coordinator_url, ["-m", "accounting.cli", "relay"], coordinator_settings),
            "compute": (
                compute_url,
                ["-m", "workers.compute", "serve", "--db", str(tmp_path / "compute.sqlite3")],
                {"allow_empty_store": "true"},  # nothing seeded: test_empty_store.py covers that
            ),
            "payments": (
                payments_url,
                ["-m", "payments", "--db", str(tmp_path / "payments.sqlite3")],
                {"coordinator_user": coordinator_user},
            ),
        }
        async with AsyncExitStack() as stack:
            processes = {}
            for name, (url, arguments, settings) in programs.items():
                env = base_environment(url, namespace, ports[name], **settings)
                processes[name] = await stack.enter_async_context(
                    running(tmp_path / f"{name}.log", env, *arguments)
                )

            for name, port in ports.items():
                await until_startup_says(port, "waiting for ")
                assert (await probed(port, "/healthz"))[0] == 200, name
                assert (await probed(port, "/startupz"))[0] == 200, name
            waiting = {name: probe(port, "/readyz")[1]["checks"]["startup"] for name, port in ports.items()}
            assert "the store" in waiting["coordinator"] and "the store" in waiting["relay"], waiting
            assert "the broker: vhost refused to this user" in waiting["compute"], waiting
            assert "the broker: vhost refused to this user" in waiting["payments"], waiting

            await create_database(database)
            # The compute user may not declare its queue: the coordinator does, once it may.
            for user, deployed_as in users.items():
                await rabbitmqctl(
                    "set_permissions", "-p", vhost, user, *permissions_of(deployed_as, namespace)
                )
            for port in ports.values():
                await until_probe(port, "/readyz", 200)
            assert all(process.returncode is None for process in processes.values())

    for name in ports:
        records = json_lines(tmp_path / f"{name}.log")
        assert not [r for r in records if r.get("fatal")], name
        waits = [r["event"] for r in records if str(r.get("event", "")).startswith("waiting for ")]
        # Said when it began and when its reason changed, not at every attempt.
        assert 1 <= len(waits) <= 3, (name, waits)
        assert any("answers after" in str(r.get("event")) for r in records), name


async def test_a_broker_that_is_not_there_is_waited_for_and_sigterm_still_stops_at_once(
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    url = f"amqp://reckon:not-the-password@127.0.0.1:{closed}/"
    port = free_port()
    env = base_environment(url, "", port)
    async with running(
        tmp_path / "compute.log", env, "-m", "workers.compute", "serve", "--db", str(tmp_path / "c.sqlite3")
    ) as process:
        body = await until_startup_says(port, "connection refused")
        await asyncio.sleep(5)  # several attempts with backoff
        assert process.returncode is None
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == 0, body

    output = (tmp_path / "compute.log").read_text()
    assert "not-the-password" not in output
    records = json_lines(tmp_path / "compute.log")
    waits = [r for r in records if str(r.get("event", "")).startswith("waiting for the broker")]
    assert len(waits) == 1 and waits[0]["level"] == "warning", waits
    assert f"127.0.0.1:{closed}" in waits[0]["event"]
    assert not [r for r in records if r["level"] in ("error", "critical")]
    assert any("stopped before" in str(r.get("event")) for r in records)


async def test_a_password_rotated_secret_first_then_broker_needs_no_window(
    amqp_url: str, connection: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    """deploy/README.md's order: 1. the Secret gets the new password, 2. the broker's user gets it
    (``rabbitmqctl change_password``), 3. a rolling restart. A pod started between 1 and 2 waits
    (ACCESS_REFUSED) and becomes ready at 2 without a restart; pods running with the old password
    stay connected throughout; after 3 every pod runs on the new one."""
    await declare_usage_queues(connection, topology, ["compute"])
    with role(amqp_url, topology, "reckon-compute") as (user, old_url):
        parts = urlsplit(old_url)
        host = parts.netloc.rsplit("@", 1)[-1]
        new_url = urlunsplit((parts.scheme, f"{user}:rotated-not-secret@{host}", parts.path, "", ""))
        old_port, new_port = free_port(), free_port()
        async with AsyncExitStack() as stack:
            old = await stack.enter_async_context(
                running(
                    tmp_path / "old.log",
                    base_environment(old_url, topology.namespace, old_port, allow_empty_store="true"),
                    "-m",
                    "workers.compute",
                    "serve",
                    "--db",
                    str(tmp_path / "old.sqlite3"),
                )
            )
            await until_probe(old_port, "/readyz", 200)
            # 1. The Secret has the new password: a pod (re)started now gets it, the broker not yet.
            new = await stack.enter_async_context(
                running(
                    tmp_path / "new.log",
                    base_environment(new_url, topology.namespace, new_port, allow_empty_store="true"),
                    "-m",
                    "workers.compute",
                    "serve",
                    "--db",
                    str(tmp_path / "new.sqlite3"),
                )
            )
            await until_startup_says(new_port, "ACCESS_REFUSED")
            # 2. The broker's user gets the new password; the running pod keeps its connection.
            await rabbitmqctl("change_password", user, "rotated-not-secret")
            await until_probe(new_port, "/readyz", 200)
            assert (await probed(old_port, "/readyz"))[0] == 200
            assert old.returncode is None and new.returncode is None
    records = json_lines(tmp_path / "new.log")
    refused = [r["event"] for r in records if str(r.get("event", "")).startswith("waiting for the broker")]
    assert refused and f"user {user!r}" in refused[0], refused
    assert "rabbitmq-server -detached" not in refused[0]
