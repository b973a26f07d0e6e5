"""Check a whole batch of samples in memory, resource by resource, for the store's bulk path.

``StorageStore.record_samples`` checks each sample against the database with a few SELECTs, which
takes minutes for millions of samples. Into an EMPTY store, the same rules can be checked on the
batch itself: the rows returned are exactly those ``record_samples`` would insert, in its order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from workers.storage.usage import SizeSample

Row = tuple[str, str, str, str, int | None]
"""(resource_id, account_id, kind, at as stored text, size_bytes)."""


@dataclass
class _Resource:
    account_id: str
    kind: str
    sizes: dict[str, int | None] = field(default_factory=dict)  # by stored time text
    deleted: str | None = None  # the earliest deletion's time text


def checked_rows(samples: Iterable[SizeSample], time_text: Callable[[datetime], str]) -> list[Row]:
    """The rows to insert for ``samples`` into an empty store, with ``record_samples``'s rules.

    An identical sample given twice is kept once. Raises ``ValueError`` naming the resource for a
    different sample at the same instant, a second account or kind, or a sample after a deletion
    (whatever the order the samples come in, as with ``record_samples``).
    """
    rows: list[Row] = []
    resources: dict[str, _Resource] = {}
    texts: dict[datetime, str] = {}  # samples taken on a schedule share their times
    for sample in samples:
        if not isinstance(sample, SizeSample):
            raise ValueError(f"sample must be a SizeSample, got {type(sample).__name__}")
        resource_id, size = sample.resource_id, sample.size_bytes
        at = texts.get(sample.at)
        if at is None:
            at = texts[sample.at] = time_text(sample.at)
        resource = resources.get(resource_id)
        if resource is None:
            resource = resources[resource_id] = _Resource(sample.account_id, sample.kind)
        elif sample.account_id != resource.account_id or sample.kind != resource.kind:
            raise _other_owner(sample, resource)
        elif at in resource.sizes:
            if resource.sizes[at] == size:
                continue  # the same sample again: stored once
            raise ValueError(f"resource {resource_id!r}: a different sample is already stored at {at}")
        resource.sizes[at] = size
        if size is None and (resource.deleted is None or at < resource.deleted):
            resource.deleted = at
        rows.append((resource_id, sample.account_id, sample.kind, at, size))
    for resource_id, resource in resources.items():
        _check_nothing_after_deletion(resource_id, resource)
    return rows


def _other_owner(sample: SizeSample, resource: _Resource) -> ValueError:
    where = f"resource {sample.resource_id!r}"
    if sample.account_id != resource.account_id:
        return ValueError(
            f"{where}: account_id {sample.account_id!r} differs from the stored {resource.account_id!r}"
        )
    return ValueError(f"{where}: kind {sample.kind!r} differs from the stored {resource.kind!r}")


def _check_nothing_after_deletion(resource_id: str, resource: _Resource) -> None:
    if resource.deleted is None:
        return
    later = [at for at in resource.sizes if at > resource.deleted]
    if later:
        raise ValueError(
            f"resource {resource_id!r}: at {min(later)} is after the resource's deletion "
            f"at {resource.deleted}"
        )
