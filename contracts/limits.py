"""What one usage reply and one answer may hold: the coordinator's default limits. Pure data.

The coordinator enforces these (``accounting/core/gather_limits.py``; each is a setting of its own,
``max_records_per_chunk`` and so on, with these defaults): beyond any of them a service's reply is
``invalid_reply`` naming the limit. The published JSON Schema of ``UsageReply`` states those a schema
can (records per chunk, chunk numbers, records per answer, attributes per record and their length),
so a service is checked against them before it is configured in production. A deployment may set
other limits; the schema says the defaults.
"""

from __future__ import annotations

MAX_REPLY_BYTES = 8 * 2**20
"""Largest reply message (one chunk), in bytes, checked before the body is parsed."""
MAX_RECORDS_PER_CHUNK = 10_000
"""Most records in one reply chunk."""
MAX_CHUNKS_PER_ANSWER = 100_000
"""Most chunks in one service's answer: a chunk's ``seq`` is below it."""
MAX_RECORDS_PER_ANSWER = 10_000_000
"""Most records in one service's answer (records received and the last chunk's ``total_records``)."""
MAX_ATTRIBUTES = 32
"""Most attributes on one usage record."""
MAX_ATTRIBUTE_LENGTH = 256
"""Longest attribute name or value on a usage record, in characters."""
