"""What ``reckon dlq replay`` reads from the environment besides the coordinator's settings.

- ``RECKON_DLQ_MAX_REPLAYS`` (``max_replays``, default 3, 0 to 100): a dead letter already replayed
  this often (its ``x-reckon-replays`` header) is not replayed again: a message that keeps dying
  needs its cause fixed, not another loop. ``--max-replays`` raises it for one command.
- ``RECKON_DLQ_REPLAY_URL`` (``replay_url``): the AMQP URL of the broker user that first published
  the letters being replayed (the coordinator's for invoices, credit notes, usage requests and
  report events; the scheduler's for a ``PeriodClosed``). A replay keeps the letter's ``user_id``,
  and the broker lets only that user publish it. Unset: the replay publishes through ``AMQP_URL``'s
  connection, the one that reads (one user for everything, in development). It uses the same
  ``tls_*`` files as ``AMQP_URL``.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from accounting.dlq.letters import DEFAULT_MAX_REPLAYS
from transport.urls import amqp_url_problem

MAX_REPLAYS_LIMIT = 100


class ReplaySettings(BaseSettings):
    """``RECKON_DLQ_*`` (the environment only: the config file is the coordinator's)."""

    model_config = SettingsConfigDict(env_prefix="RECKON_DLQ_", extra="ignore", hide_input_in_errors=True)

    max_replays: int = Field(default=DEFAULT_MAX_REPLAYS, ge=0, le=MAX_REPLAYS_LIMIT)
    replay_url: str | None = None

    @field_validator("replay_url")
    @classmethod
    def _valid_replay_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        problem = amqp_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value
