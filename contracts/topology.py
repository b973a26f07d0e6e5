"""The queue topology: the only place exchange, queue and routing-key names are spelled.

Pure data. The code that owns a queue declares it from these specs at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

ROUTING_PERIOD_CLOSED = "period.closed"
ROUTING_INVOICE_ISSUED = "invoice.issued"
ROUTING_CREDIT_NOTE_ISSUED = "credit_note.issued"
ROUTING_INVOICE_CORRECTED = "invoice.corrected"
ROUTING_REPORT_COMPLETED = "report.completed"
ROUTING_REPORT_ABORTED = "report.aborted"
CONTENT_TYPE = "application/json"
DELIVERY_LIMIT = 5
DEAD_LETTER_EXCHANGE = "x-dead-letter-exchange"


class ExchangeKind(StrEnum):
    DIRECT = "direct"
    TOPIC = "topic"


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    kind: ExchangeKind


@dataclass(frozen=True)
class QueueSpec:
    """A durable quorum queue that dead-letters to the DLX after ``DELIVERY_LIMIT`` deliveries."""

    name: str
    exchange: ExchangeSpec
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)
    also_bound: tuple[str, ...] = ()
    """More routing keys the queue is bound to on the same exchange."""

    @property
    def dead_letter_exchange(self) -> str | None:
        """Where the queue dead-letters, when it does."""
        value = self.arguments.get(DEAD_LETTER_EXCHANGE)
        return None if value is None else str(value)

    def for_policy(self) -> QueueSpec:
        """The same queue without ``x-dead-letter-exchange``: a broker policy names its dead-letter
        exchange instead, so whoever declares it needs no write permission on that exchange."""
        arguments = {key: value for key, value in self.arguments.items() if key != DEAD_LETTER_EXCHANGE}
        return replace(self, arguments=arguments)


@dataclass(frozen=True)
class Topology:
    """All names, under an optional namespace prefix (``ns.``) so environments can share a broker."""

    namespace: str = ""

    def _name(self, base: str) -> str:
        return f"{self.namespace}.{base}" if self.namespace else base

    @property
    def periods(self) -> ExchangeSpec:
        return ExchangeSpec(self._name("billing.periods"), ExchangeKind.TOPIC)

    @property
    def usage(self) -> ExchangeSpec:
        return ExchangeSpec(self._name("billing.usage"), ExchangeKind.DIRECT)

    @property
    def invoices(self) -> ExchangeSpec:
        return ExchangeSpec(self._name("billing.invoices"), ExchangeKind.TOPIC)

    @property
    def reports(self) -> ExchangeSpec:
        return ExchangeSpec(self._name("billing.reports"), ExchangeKind.TOPIC)

    @property
    def dead_letter_exchange(self) -> ExchangeSpec:
        return ExchangeSpec(self._name("billing.dlx"), ExchangeKind.TOPIC)

    def _quorum(self, name: str, exchange: ExchangeSpec, routing_key: str, **extra: Any) -> QueueSpec:
        return QueueSpec(
            name=self._name(name),
            exchange=exchange,
            routing_key=routing_key,
            arguments={
                "x-queue-type": "quorum",
                DEAD_LETTER_EXCHANGE: self.dead_letter_exchange.name,
                "x-delivery-limit": DELIVERY_LIMIT,
                **extra,
            },
        )

    @property
    def period_closed_queue(self) -> QueueSpec:
        """Single active consumer: of several coordinator replicas, one takes periods at a time."""
        return self._quorum(
            "accounting.period-closed",
            self.periods,
            ROUTING_PERIOD_CLOSED,
            **{"x-single-active-consumer": True},
        )

    @property
    def payments_queue(self) -> QueueSpec:
        """First invoices only (``invoice.issued``): what every payment service understands."""
        return self._quorum("payments.invoices", self.invoices, ROUTING_INVOICE_ISSUED)

    @property
    def corrections_queue(self) -> QueueSpec:
        """Credit notes and corrected invoices, in the order they must be applied."""
        spec = self._quorum("payments.corrections", self.invoices, ROUTING_CREDIT_NOTE_ISSUED)
        return replace(spec, also_bound=(ROUTING_INVOICE_CORRECTED,))

    def usage_queue(self, service: str) -> QueueSpec:
        """A durable **classic** queue: a request is worth nothing once its gather ended (it expires
        at the deadline and its gather's reply queue is gone soon after), so it needs neither a replicated
        log nor the disk write a quorum queue makes before delivering it — which was most of a
        gather's latency. An expired or rejected request is still dead-lettered."""
        return QueueSpec(
            name=self._name(f"usage.requests.{service}"),
            exchange=self.usage,
            routing_key=service,
            arguments={"x-queue-type": "classic", DEAD_LETTER_EXCHANGE: self.dead_letter_exchange.name},
        )

    @property
    def dead_letters_queue(self) -> QueueSpec:
        return QueueSpec(
            name=self._name("billing.dead-letters"),
            exchange=self.dead_letter_exchange,
            routing_key="#",
            arguments={"x-queue-type": "quorum"},
        )

    def dead_lettered_queues(self, services: tuple[str, ...] | list[str]) -> tuple[QueueSpec, ...]:
        """Every queue that dead-letters to ``dead_letter_exchange`` (the configured ``services``'
        request queues among them): what a ``dead-letter-exchange`` broker policy must cover."""
        queues = (
            self.period_closed_queue,
            self.payments_queue,
            self.corrections_queue,
            *(self.usage_queue(service) for service in services),
        )
        return tuple(queue for queue in queues if queue.dead_letter_exchange)

    def exchanges(self) -> tuple[ExchangeSpec, ...]:
        return (self.periods, self.usage, self.invoices, self.reports, self.dead_letter_exchange)
