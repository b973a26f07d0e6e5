"""What the coordinator does, over the store and the broker's adapters: build a report from
PeriodClosed to invoices (``coordinator``, ``gather_sink``, ``pricer``), keep it while it builds
(``leases``), replay and reconcile it, relay its outbox (``relay``), and the read-side queries
behind ``reckon reports / invoices / outbox`` (``queries``).

May import ``amqp``, ``documents``, ``dlq``, ``store``, ``infra`` and ``core``; never ``runtime`` or ``cli``.
"""
