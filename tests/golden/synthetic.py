"""A deterministic 50,000-record answer (records only; no Reckon imports, so any version can use it)."""

from __future__ import annotations

import random
from collections.abc import Iterator

PERIOD_ID = "2031-03"
RECORDS = 50_000

_METRICS = (
    ("vcpu", "vCPU-second", "instance"),
    ("memory", "MiB-second", "instance"),
    ("block_storage", "byte-second", "volume"),
    ("object_storage", "byte-second", "bucket"),
)


def synthetic_records(count: int = RECORDS, seed: int = 31) -> Iterator[dict[str, str]]:
    """``count`` records of about 7,000 accounts, as JSON-ready dicts; the same on every run."""
    rng = random.Random(seed)
    for number in range(count):
        metric, unit, kind = _METRICS[number % len(_METRICS)]
        account = f"acct-{rng.randrange(7000):05d}"
        whole = rng.randrange(10**12)
        fraction = rng.randrange(10**6)
        yield {
            "account_id": account,
            "resource_id": f"{kind}-{number:06d}",
            "resource_type": kind,
            "metric": metric,
            "quantity": f"{whole}.{fraction:06d}" if number % 3 else str(whole),
            "unit": unit,
        }
