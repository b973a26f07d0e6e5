"""Deterministic demo data for the network service: interfaces, counter readings and plans.

Accounts are named ``acct-0001``, ``acct-0002``, ... like the compute and storage services', so the
three inventories overlap. Each account has 1-3 interfaces (``nic-0001-1``...), whose transmitted-
bytes counter an agent reads every three hours (each interface at its own minute of the hour). The
sample exercises every rule of ``workers.network.usage``: interfaces attached before the period and
read all through it, attached or detached inside it, one whose counter is reset inside it, an idle
one (listed with zero egress), and one detached before it (never billed for it).

Plans: about a third of the accounts have none, a third ``10 GB`` and a third ``100 GB`` of free
egress per month; ``acct-0002`` (when there is one) is upgraded in the middle of the period, which
applies from the next one. Seeding REPLACES everything in the store, so seeding twice leaves the
same data, and the same arguments always write the same rows.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

from contracts import Period
from workers.network.plans import ALWAYS, Plan, parse_bytes
from workers.network.store import NetworkStore
from workers.network.usage import CounterReading

EVERY: Final = timedelta(hours=3)
"""How often the agent reads each interface's counter."""
PLANS: Final = (None, "10 GB", "100 GB")
"""The plans an account may have (None: no allowance), about a third each."""

# Scenario -> weight, for interfaces not forced into a scenario.
_WEIGHTS: Final = {
    "running": 8,  # attached before the period, read all through it
    "attached_inside": 2,  # first read inside the period
    "detached_inside": 2,  # last read inside the period
    "reset": 1,  # its counter restarts from zero once inside the period
    "idle": 1,  # its counter never moves: listed with zero egress
    "detached_before": 1,  # read only before the period: not listed
}
# At least this many of each, so every sample exercises the edge cases.
_FORCED: Final = {"idle": 1, "reset": 2, "detached_before": 2}


@dataclass(frozen=True)
class SeedSummary:
    """What ``seed`` wrote."""

    path: Path
    period_id: str
    accounts: int
    with_allowance: int
    interfaces: int
    readings: int

    def __str__(self) -> str:
        return (
            f"seeded {self.path} for {self.period_id}: {self.accounts} accounts "
            f"({self.with_allowance} with an egress allowance), "
            f"{self.interfaces} interfaces, {self.readings} counter readings"
        )


def seed(store_path: Path, period: Period, *, accounts: int = 40, rng_seed: int = 13) -> SeedSummary:
    """Replace the store's whole content with a deterministic sample around ``period``."""
    if accounts < 1:
        raise ValueError(f"accounts must be at least 1, got {accounts}")
    rng = random.Random(rng_seed)
    owners = [
        (f"acct-{number:04d}", f"nic-{number:04d}-{index}")
        for number in range(1, accounts + 1)
        for index in range(1, rng.randint(1, 3) + 1)
    ]
    scenarios = rng.choices(list(_WEIGHTS), weights=list(_WEIGHTS.values()), k=len(owners))
    forced = [kind for kind, count in _FORCED.items() for _ in range(count)][: len(owners)]
    for slot, kind in zip(rng.sample(range(len(owners)), len(forced)), forced, strict=True):
        scenarios[slot] = kind

    readings: list[CounterReading] = []
    for (account_id, interface_id), scenario in zip(owners, scenarios, strict=True):
        readings += _Interface(rng, period, account_id, interface_id).readings(scenario)

    plans: list[Plan] = []
    for number in range(1, accounts + 1):
        account_id = f"acct-{number:04d}"
        chosen = rng.choice(PLANS)
        if chosen is not None:
            plans.append(Plan(account_id, parse_bytes(chosen), ALWAYS))
        if number == 2:  # upgraded mid-period: the plan in effect at the start still applies
            plans.append(
                Plan(account_id, parse_bytes("1 TB"), period.start + (period.end - period.start) / 2)
            )

    store_path.parent.mkdir(parents=True, exist_ok=True)
    written = NetworkStore(store_path).replace_all(readings, plans)
    with_allowance = len({plan.account_id for plan in plans if plan.effective_from == ALWAYS})
    return SeedSummary(store_path, period.period_id, accounts, with_allowance, len(owners), written)


class _Interface:
    """One interface's readings: a counter from zero, growing at its own rate, read every EVERY."""

    def __init__(self, rng: random.Random, period: Period, account_id: str, interface_id: str) -> None:
        self.rng = rng
        self.period = period
        self.account_id = account_id
        self.interface_id = interface_id
        # Bytes sent per reading interval: log-uniform from 100 kB to 2 GB (up to ~500 GB a month).
        self.rate = int(10 ** rng.uniform(5, math.log10(2 * 10**9)))
        self.minute = timedelta(minutes=rng.randrange(180))

    def readings(self, scenario: str) -> list[CounterReading]:
        start, end = self.period.start, self.period.end
        first = start + self.minute - EVERY * self.rng.randint(1, 24)  # read before the period
        last = end
        if scenario == "attached_inside":
            first = start + self.minute + EVERY * self.rng.randrange(self._slots() // 2)
        elif scenario == "detached_inside":
            last = start + EVERY * self.rng.randrange(1, self._slots())
        elif scenario == "detached_before":
            first = start - timedelta(days=self.rng.randint(10, 20)) + self.minute
            last = start - timedelta(days=self.rng.randint(1, 5))
        times = []
        at = first
        while at < last:
            times.append(at)
            at += EVERY
        counter = self.rng.randint(0, 50 * 10**9) if scenario != "attached_inside" else 0
        reset_at = self.rng.randrange(len(times) // 2, len(times)) if scenario == "reset" else None
        result: list[CounterReading] = []
        for index, moment in enumerate(times):
            if index == reset_at:
                counter = 0  # the interface was re-created: its counter starts again
            if scenario != "idle":
                counter += self.rng.randint(self.rate // 5, self.rate * 9 // 5)
            result.append(CounterReading.trusted(self.interface_id, self.account_id, moment, counter))
        return result

    def _slots(self) -> int:
        """How many reading intervals the period holds."""
        return max(2, (self.period.end - self.period.start) // EVERY)
