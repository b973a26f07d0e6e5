"""The fault suite's ledger: what each fault scenario ended with, summed up in one line after the run.

A fault test records, from what it observed itself: the reports that completed and aborted, the
invoice ids its completed reports issued, and every invoice id the payment side handled (after
de-duplication by ``invoice_id``). "Lost" is an issued invoice never handled; a "duplicate" is an
invoice id handled more than once despite de-duplication. Both must be 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID


@dataclass
class FaultLedger:
    scenarios: list[str] = field(default_factory=list)
    completed: int = 0
    aborted: int = 0
    lost: int = 0
    duplicates: int = 0
    attacks: list[str] = field(default_factory=list)
    refused: int = 0
    accepted: int = 0
    """Attacks (least privilege): attempts the broker or a party refused, and any it accepted."""

    def record(
        self,
        scenario: str,
        *,
        completed: int = 0,
        aborted: int = 0,
        issued: Iterable[UUID] = (),
        handled: Iterable[UUID] = (),
    ) -> None:
        """``handled``: every invoice id the payment handler ran for, once per run of the handler."""
        counts = Counter(handled)
        self.scenarios.append(scenario)
        self.completed += completed
        self.aborted += aborted
        self.lost += len(set(issued) - set(counts))
        self.duplicates += sum(count - 1 for count in counts.values() if count > 1)

    def attack(self, name: str, *, refused: int = 0, accepted: int = 0) -> None:
        """An attack scenario: how many of its attempts were refused, how many accepted (must be 0)."""
        self.attacks.append(name)
        self.refused += refused
        self.accepted += accepted

    def summary(self) -> str:
        line = (
            f"fault summary: {len(self.scenarios)} scenarios run, reports completed {self.completed}, "
            f"aborted {self.aborted}, invoices lost = {self.lost}, "
            f"duplicate invoice ids after de-duplication = {self.duplicates}"
        )
        if self.attacks:
            line += (
                f"; attacks: {len(self.attacks)} run, attempts refused {self.refused}, "
                f"accepted = {self.accepted}"
            )
        return line


LEDGER = FaultLedger()
"""The run's ledger (``tests/conftest.py`` prints its summary at the end of ``make test``)."""
