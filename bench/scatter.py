"""Scatter-gather to 8 services x 10 records: Reckon's gatherer with SDK responders against aio-pika's
own RPC pattern (``aio_pika.patterns.JsonRPC``) doing the same fan-out, in the same run.

Both sides answer from the same process over their own connections, as separate processes would;
Reckon's side validates every record (the gather machine parses each reply) but stores nothing.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aio_pika
from aio_pika.patterns import JsonRPC

from accounting.amqp.gatherer import UsageGatherer
from accounting.amqp.topology import delete_namespace
from accounting.core.gather_events import Action
from contracts import Period, Topology, UsageRecord
from workers.sdk import Responder, WorkerSettings

SERVICES = tuple(f"svc-{number}" for number in range(8))
RECORDS = 10
PERIOD = Period.month("2026-07")  # over: the billing calendar refuses a month that is not


@dataclass(frozen=True)
class Latency:
    name: str
    samples: tuple[float, ...]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.samples, n=100)[98]


def records(service: str) -> list[UsageRecord]:
    return [
        UsageRecord(
            account_id=f"acct-{number:04d}",
            resource_id=f"{service}-vm-{number}",
            resource_type="instance",
            metric="vcpu",
            quantity=Decimal(3600 * (number + 1)),
            unit="vCPU-second",
        )
        for number in range(RECORDS)
    ]


class FixedService:
    def __init__(self, name: str) -> None:
        self.name = name
        self._records = records(name)

    async def usage(self, period: Period) -> Sequence[UsageRecord]:
        return self._records


class NullSink:
    async def asked(self, requests: Mapping[str, str]) -> None:
        return None

    async def write(self, actions: Sequence[Action]) -> list[tuple[str, str]]:
        return []


async def reckon_gathers(amqp_url: str, rounds: int, warmup: int) -> Latency:
    topology = Topology(f"bench-{uuid.uuid4().hex[:8]}")
    workers = await aio_pika.connect_robust(amqp_url)
    coordinator = await aio_pika.connect_robust(amqp_url)
    try:
        settings = WorkerSettings(namespace=topology.namespace)
        responders = [await Responder.create(workers, FixedService(name), settings) for name in SERVICES]
        gatherer = await UsageGatherer.create(coordinator, topology)
        samples = []
        for number in range(warmup + rounds):
            started = time.perf_counter()
            gather = await gatherer.gather(
                uuid.uuid4(), PERIOD, SERVICES, datetime.now(UTC) + timedelta(seconds=30), NullSink()
            )
            elapsed = time.perf_counter() - started
            if gather.reasons or gather.records != len(SERVICES) * RECORDS:
                raise RuntimeError(f"gather failed: {gather.reasons}")
            if number >= warmup:
                samples.append(elapsed)
        await gatherer.close()
        for responder in responders:
            await responder.close()
    finally:
        await coordinator.close()
        await workers.close()
        await delete_namespace(amqp_url, topology, SERVICES)
    return Latency("Reckon gather", tuple(samples))


async def rpc_fan_outs(amqp_url: str, rounds: int, warmup: int) -> Latency:
    server_connection = await aio_pika.connect_robust(amqp_url)
    client_connection = await aio_pika.connect_robust(amqp_url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        server = await JsonRPC.create(await server_connection.channel())
        client = await JsonRPC.create(await client_connection.channel())
        answers = {name: [record.model_dump(mode="json") for record in records(name)] for name in SERVICES}

        def answer(name: str) -> Any:
            async def usage(period: dict[str, Any]) -> list[dict[str, Any]]:
                return answers[name]

            return usage

        for name in SERVICES:
            await server.register(f"{prefix}.{name}", answer(name), auto_delete=True)
        period = PERIOD.model_dump(mode="json")
        samples = []
        for number in range(warmup + rounds):
            started = time.perf_counter()
            results = await asyncio.gather(
                *(client.call(f"{prefix}.{name}", kwargs={"period": period}) for name in SERVICES)
            )
            elapsed = time.perf_counter() - started
            if sum(len(result) for result in results) != len(SERVICES) * RECORDS:
                raise RuntimeError("rpc fan-out lost records")
            if number >= warmup:
                samples.append(elapsed)
        await client.close()
        await server.close()
    finally:
        await client_connection.close()
        await server_connection.close()
    return Latency("aio-pika JsonRPC", tuple(samples))


async def run_scatter_bench(amqp_url: str, rounds: int = 300, warmup: int = 30) -> tuple[Latency, Latency]:
    """Reckon first, then the peer, then Reckon again is not needed: both run back to back."""
    reckon = await reckon_gathers(amqp_url, rounds, warmup)
    peer = await rpc_fan_outs(amqp_url, rounds, warmup)
    return reckon, peer
