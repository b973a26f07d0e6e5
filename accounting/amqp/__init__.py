"""The coordinator's side of RabbitMQ: declaring the topology it owns (``topology``), asking the
sub-services and gathering their replies (``gatherer``, with ``reply_queues`` giving each gather
its own queue and ``replies`` turning each reply message into an event of the gather machine),
publishing events (``publisher``), and the
scheduler's PeriodClosed (``scheduler``). Connections, TLS and the queue consumer are shared
plumbing in ``transport``.

May import ``infra`` and ``core``; never ``store`` or anything above it.
"""
