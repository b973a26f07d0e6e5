"""The limits a reply and an answer must respect (``ReplyLimits``: bytes, records per chunk,
chunks and records per answer, attributes per record and their length), and the check of a
chunk against them.

A reply beyond a limit fails its service as ``invalid_reply``, naming the limit; the byte size is
checked by the machine in ``gather`` before the reply is parsed, the rest here once it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts import UsageReply
from contracts.limits import (
    MAX_ATTRIBUTE_LENGTH,
    MAX_ATTRIBUTES,
    MAX_CHUNKS_PER_ANSWER,
    MAX_RECORDS_PER_ANSWER,
    MAX_RECORDS_PER_CHUNK,
    MAX_REPLY_BYTES,
)


@dataclass(frozen=True)
class ReplyLimits:
    """What one reply and one answer may hold; beyond it the service's reply is ``invalid_reply``.

    The defaults are the contract's (``contracts/limits.py``, stated in the published schema of
    ``UsageReply``) and the coordinator's settings' (``max_reply_bytes`` and the others).
    """

    max_reply_bytes: int = MAX_REPLY_BYTES
    max_records_per_chunk: int = MAX_RECORDS_PER_CHUNK
    max_chunks_per_answer: int = MAX_CHUNKS_PER_ANSWER
    max_records_per_answer: int = MAX_RECORDS_PER_ANSWER
    max_attributes: int = MAX_ATTRIBUTES
    max_attribute_length: int = MAX_ATTRIBUTE_LENGTH


DEFAULT_LIMITS = ReplyLimits()


def beyond_limits(limits: ReplyLimits, reply: UsageReply, accepted: int) -> str | None:
    """Why this chunk exceeds a limit (naming the limit), or None.

    ``accepted`` is the number of records already accepted of the same answer."""
    chunk, records = reply.chunk, reply.records
    if len(records) > limits.max_records_per_chunk:
        limit = f"max_records_per_chunk {limits.max_records_per_chunk}"
        return f"chunk {chunk.seq} holds {len(records)} records, more than {limit}"
    if chunk.seq >= limits.max_chunks_per_answer:
        return f"chunk {chunk.seq} is beyond max_chunks_per_answer {limits.max_chunks_per_answer}"
    announced = chunk.total_records if chunk.last else 0
    if max(announced, accepted + len(records)) > limits.max_records_per_answer:
        return f"the answer holds more than max_records_per_answer {limits.max_records_per_answer} records"
    for number, record in enumerate(records):
        attributes = record.attributes
        if len(attributes) > limits.max_attributes:
            limit = f"max_attributes {limits.max_attributes}"
            return f"records.{number} has {len(attributes)} attributes, more than {limit}"
        for name, value in attributes.items():
            if len(name) > limits.max_attribute_length or len(value) > limits.max_attribute_length:
                limit = f"max_attribute_length {limits.max_attribute_length}"
                return f"records.{number}.attributes.{name[:40]} is longer than {limit}"
    return None
