"""Shared AMQP plumbing: what every party of Reckon (the coordinator, the sub-services' SDK, the
reference payment consumer, the demo, the benchmarks and the tests) does the same way.

Connecting to RabbitMQ with TLS as a broker user (``connection``), declaring a queue the contract
describes and waiting for one to exist (``queues``), consuming a queue on a channel of its own
(``consumer``), naming a URL without its secrets (``redact``), and checking a broker URL before
connecting (``urls``).

It knows the contracts' topology types and nothing of any party: never ``accounting``,
``workers`` or ``payments``.
"""
