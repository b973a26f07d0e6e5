"""The reference payment consumer as the deployment runs it (`reckon payments`, a process of its own):
ready once it consumes, and its /metrics shows its own series only, none of the coordinator's."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from contracts import Topology
from tests.integration.support import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_reckon_payments_serves_only_its_own_metrics(
    amqp_url: str, topology: Topology, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "RECKON_NAMESPACE": topology.namespace,
        "RECKON_HTTP_PORT": str(port),
        "RECKON_HTTP_HOST": "127.0.0.1",
        "RECKON_PAYMENTS_DB": str(tmp_path / "payments.sqlite3"),
    }
    log = tmp_path / "payments.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "accounting.cli", "payments",
            env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(ready, timeout=60)
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                metrics = await response.text()
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)

    assert code == 0, log.read_text(errors="replace")
    reckon_series = {
        line.split("{")[0].split(" ")[0] for line in metrics.splitlines() if line.startswith("reckon_")
    }
    assert "reckon_payments_deliveries_total" in reckon_series
    assert "reckon_build_info" in reckon_series  # every process says which release it runs
    others = reckon_series - {"reckon_build_info"}
    assert all(name.startswith("reckon_payments_") for name in others), sorted(reckon_series)
