"""Coordinator configuration: environment (``RECKON_*``, ``AMQP_URL``) over a TOML file over defaults."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_settings import (
    NoDecode,
    SettingsConfigDict,
)

from accounting.amqp.topology import DeadLetters
from accounting.core.calendar import BillingCalendar, time_zone
from accounting.core.numbering import Numbering, prefix_problem
from accounting.core.rate_card import RateCard
from accounting.documents.parties import Party, locale_problem, party
from accounting.runtime.config_checks import (
    parse_service_users,
    service_name_problem,
    service_users_problem,
    store_url_problem,
)
from contracts import limits
from transport.settings import BrokerClientSettings, config_path
from transport.settings import load_settings as load_from

MiB = 1024 * 1024


class SellerSettings(BaseModel):
    """Who issues the invoices, as printed on every document (``[seller]`` in the config file)."""

    model_config = ConfigDict(extra="forbid")

    legal_name: str = Field(min_length=1, max_length=200)
    address: tuple[Annotated[str, Field(max_length=200)], ...] = Field(default=(), max_length=8)
    """Address lines, in the order printed."""
    tax_id: str | None = Field(default=None, min_length=1, max_length=64)
    """The seller's VAT or tax number (an EU invoice must show it)."""
    email: str | None = Field(default=None, max_length=200)


class Settings(BrokerClientSettings):
    """Everything the coordinator needs; the services list is static, never discovered.

    Nonsense is refused at start with one line naming the key (``reckon`` prints pydantic's
    errors that way), and no error ever shows a password: ``hide_input_in_errors`` keeps the raw
    value out of the exception's text, and every URL check quotes the URL through ``redact_url``.

    Bounds, and why:

    - ``deadline_seconds`` (0, 3600]: a gather waits at most an hour.
    - ``publish_timeout_seconds`` [0.1, 300]: one publisher-confirm wait; a publish is tried 3 times.
    - ``relay_claim_seconds`` [1, 3600] and **more than 3 * publish_timeout_seconds**: a relay's
      claim must outlast one publish with its retries, or a second relay takes over rows the first
      is still sending (and every invoice of the window goes out twice).
    - ``relay_poll_seconds`` [0.01, 60]; ``relay_window`` [1, 10000]; ``reply_prefetch`` [1, 10000].
    - ``lease_seconds`` [3, 3600]: renewed every third, so at least a second between renewals.
    - ``resume_every_seconds`` [0.1, 3600]: an abandoned report waits at most its lease plus this.
    - ``shutdown_grace_seconds`` [0, 3600]; ``store_busy_timeout_seconds`` (0, 600].
    - reply limits: ``max_reply_bytes`` [1 KiB, 128 MiB] (no RabbitMQ default passes a larger message),
      ``max_records_per_chunk`` ≤ ``max_records_per_answer``.
    """

    model_config = SettingsConfigDict(env_prefix="RECKON_", extra="forbid", hide_input_in_errors=True)

    # From BrokerClientSettings: amqp_url, namespace, tls_ca_file, tls_cert_file, tls_key_file.

    services: Annotated[tuple[str, ...], NoDecode] = ()
    """Required by the coordinator (see ``require_services``); the scheduler needs none."""
    coordinator_user: str | None = Field(default=None, min_length=1, max_length=255, pattern=r"^[^\s,=]+$")
    """The broker user coordinators connect as, shared with every role from this file: the
    sub-services answer only its requests and the payment service takes only its invoices. A
    coordinator connected as another user refuses to start (every report would go unanswered).
    None: not checked (one user for everything, in development)."""
    scheduler_user: str | None = Field(default=None, min_length=1, max_length=255, pattern=r"^[^\s,=]+$")
    """The broker user a ``PeriodClosed`` must come from (its ``user_id``, verified by the broker);
    any other is refused and dead-lettered. None: any user (one user for everything, in
    development; logged at start)."""
    calendar: Literal["monthly"] = "monthly"
    """The billing calendar: which periods exist (calendar months: ``YYYY-MM``)."""
    calendar_time_zone: str = "UTC"
    """The IANA time zone the calendar's months are in (``Europe/Paris``: a month starts at local
    midnight). Changing it changes every later period's bounds: set it before the first close."""
    settle_seconds: float = Field(default=600.0, ge=0, le=31 * 86_400)
    """How long after a period ends it may be closed, so usage recorded late inside the
    sub-services is in (the CronJob runs at 00:30 on the 1st: keep this below 30 minutes)."""
    approval: Literal["auto", "manual"] = "auto"
    """``auto``: a priced report is issued at once. ``manual``: it waits as a draft (stored,
    reconcilable, nothing numbered or published) until ``reckon reports approve PERIOD``."""
    auto_approve_after_seconds: float | None = Field(default=None, gt=0, le=90 * 86_400)
    """With ``manual`` approval, a draft nobody approved or rejected within this many seconds is
    approved automatically (recorded as ``auto_approve_after``). None: it waits for a reviewer."""
    invoice_number_prefix: str = "INV-{year}-"
    """The invoice series: ``INV-{year}-`` numbers ``INV-2026-000123``, from 1 each year of issue."""
    credit_note_number_prefix: str = "CN-{year}-"
    number_digits: int = Field(default=6, ge=1, le=12)
    """Digits of the sequence in a number (zero-padded; a longer sequence just grows)."""
    payment_terms_days: int = Field(default=30, ge=0, le=365)
    """An invoice is due this many days after it is issued (its ``due_at``)."""
    seller: SellerSettings | None = None
    """The seller printed on invoices and credit notes; unset: documents name no seller."""
    account_directory: Path | None = None
    """A CSV file of the buyers (``account_id,name,address,tax_id,email``; ``address`` may span
    lines), read when a document is rendered; an account not in it is named by its id alone."""
    document_locale: str = "en"
    """How documents write money and dates (a CLDR locale: ``en``, ``de_DE``, ``fr_FR``, ``ja``)."""
    dead_letters: DeadLetters = "arguments"
    """How the coordinator's queues get their dead-letter exchange: ``"arguments"`` (declared with
    ``x-dead-letter-exchange``, which needs write on ``billing.dlx``: one user for everything, in
    development) or ``"policy"`` (a broker policy names it, as deploy/ does, so no client user may
    write to ``billing.dlx``; queues that exist are kept as they are)."""
    service_users: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """The broker user allowed to answer for each service (its replies' validated ``user_id``);
    every key must be a configured service. ``RECKON_SERVICE_USERS=compute=reckon-compute,...``
    or a TOML table ``service_users = { compute = "reckon-compute" }``."""
    deadline_seconds: float = Field(default=30.0, gt=0, le=3600)
    rate_card: Path = Path("config/rate-card.toml")
    publish_timeout_seconds: float = Field(default=10.0, ge=0.1, le=300)
    """How long one publish waits for the broker's confirm (a publish is tried 3 times)."""
    store_url: str = "sqlite+aiosqlite:///var/reckon.sqlite3"
    """SQLAlchemy async URL: ``sqlite+aiosqlite:///file`` by default, ``postgresql+asyncpg://user@host/db``
    in production; no other driver."""
    preview_store_url: str | None = None
    """Where ``reckon preview`` keeps its previews, apart from the period's reports. Unset: a SQLite
    file beside a SQLite ``store_url`` (``reckon.sqlite3`` → ``reckon-previews.sqlite3``); with
    PostgreSQL, name a database of its own."""
    relay: bool = True
    """Relay the outbox from this process; false when a separate ``reckon relay`` does it."""
    relay_poll_seconds: float = Field(default=1.0, ge=0.01, le=60)
    relay_claim_seconds: float = Field(default=45.0, ge=1, le=3600, validate_default=True)
    """How long a relay holds unsent rows before another relay may take them over; more than
    3 x ``publish_timeout_seconds`` (a publish with its retries)."""
    relay_window: int = Field(default=500, ge=1, le=10_000)
    """Outbox rows a relay claims and keeps in flight at once (their confirms awaited together)."""
    lease_seconds: float = Field(default=60.0, ge=3, le=3600)
    """How long a report stays with its builder without a renewal (renewed every third of it)."""
    pricing_page_records: int = Field(default=20_000, ge=10, le=1_000_000)
    """Records read back per pricing window (whole accounts): memory per window against queries."""
    pricing_processes: int = Field(default=2, ge=0, le=64)
    """Worker processes that normalize and price the windows of a report bigger than one window
    (0: a thread of this process). They use other cores while this one reads and writes."""
    reply_prefetch: int = Field(default=64, ge=1, le=10_000)
    """Reply chunks delivered to the coordinator and not yet stored, at most."""
    store_busy_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    """SQLite only: how long a write waits for another writer before failing (and being retried)."""
    resume_every_seconds: float = Field(default=15.0, ge=0.1, le=3600)
    """How often to look for reports abandoned by a coordinator that stopped or died."""
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=3600)
    """On SIGTERM, how long a report in flight may take to finish before it is left to a restart."""
    max_build_attempts: int = Field(default=3, ge=1, le=20)
    """How many attempts at building one report (the first and each resumption after a builder died)
    before it is aborted rather than tried again."""

    max_reply_bytes: int = Field(default=limits.MAX_REPLY_BYTES, ge=1024, le=128 * MiB)
    """Largest reply message (one chunk) accepted from a service, in bytes."""
    max_records_per_chunk: int = Field(default=limits.MAX_RECORDS_PER_CHUNK, ge=1, le=1_000_000)
    """Most records in one reply chunk."""
    max_chunks_per_answer: int = Field(default=limits.MAX_CHUNKS_PER_ANSWER, ge=1, le=10_000_000)
    """Most chunks in one service's answer."""
    max_records_per_answer: int = Field(
        default=limits.MAX_RECORDS_PER_ANSWER, ge=1, le=1_000_000_000, validate_default=True
    )
    """Most records in one service's answer; at least ``max_records_per_chunk``."""
    max_attributes: int = Field(default=limits.MAX_ATTRIBUTES, ge=0, le=1024)
    """Most attributes on one usage record."""
    max_attribute_length: int = Field(default=limits.MAX_ATTRIBUTE_LENGTH, ge=1, le=65_536)
    """Longest attribute key or value on a usage record, in characters."""

    @field_validator("calendar_time_zone")
    @classmethod
    def _valid_time_zone(cls, value: str) -> str:
        time_zone(value)
        return value

    @field_validator("invoice_number_prefix", "credit_note_number_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        problem = prefix_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("credit_note_number_prefix")
    @classmethod
    def _series_apart(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("invoice_number_prefix"):
            raise ValueError("must differ from invoice_number_prefix: each document kind has its own series")
        return value

    @field_validator("document_locale")
    @classmethod
    def _known_locale(cls, value: str) -> str:
        problem = locale_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def seller_party(self) -> Party | None:
        seller = self.seller
        return (
            None if seller is None else party(seller.legal_name, seller.address, seller.tax_id, seller.email)
        )

    def numbering(self) -> Numbering:
        return Numbering(
            invoice_prefix=self.invoice_number_prefix,
            credit_note_prefix=self.credit_note_number_prefix,
            digits=self.number_digits,
            payment_terms=timedelta(days=self.payment_terms_days),
            zone=time_zone(self.calendar_time_zone),
        )

    def billing_calendar(self) -> BillingCalendar:
        return BillingCalendar(time_zone(self.calendar_time_zone), timedelta(seconds=self.settle_seconds))

    @field_validator("services", mode="before")
    @classmethod
    def _split_services(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("services")
    @classmethod
    def _valid_services(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            problem = service_name_problem(name)
            if problem is not None:
                raise ValueError(problem)
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise ValueError(f"service(s) listed twice: {', '.join(duplicates)}")
        return value

    @field_validator("service_users", mode="before")
    @classmethod
    def _parse_service_users(cls, value: Any) -> Any:
        return parse_service_users(value) if isinstance(value, str) else value

    @field_validator("service_users")
    @classmethod
    def _valid_service_users(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if "services" in info.data:
            problem = service_users_problem(value, info.data["services"])
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("store_url", "preview_store_url")
    @classmethod
    def _valid_store_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = store_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("relay_claim_seconds")
    @classmethod
    def _claim_outlasts_a_publish(cls, value: float, info: ValidationInfo) -> float:
        timeout = info.data.get("publish_timeout_seconds")
        if timeout is not None and value <= 3 * timeout:
            raise ValueError(
                f"must be more than 3 * publish_timeout_seconds ({3 * timeout:g} s): a relay's claim "
                "must outlast one publish with its retries"
            )
        return value

    @field_validator("max_records_per_answer")
    @classmethod
    def _answer_holds_a_chunk(cls, value: int, info: ValidationInfo) -> int:
        chunk = info.data.get("max_records_per_chunk")
        if chunk is not None and value < chunk:
            raise ValueError(f"must be at least max_records_per_chunk ({chunk})")
        return value

    def require_services(self) -> tuple[str, ...]:
        if not self.services:
            raise ValueError(
                "no services configured: list them in the config file (services = [...]) "
                "or in RECKON_SERVICES=compute,storage"
            )
        return self.services


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config_file`` (or ``$RECKON_CONFIG``), the environment and ``overrides``.

    A relative ``rate_card`` in the file is taken relative to the file, so a config directory
    can be moved (or mounted) as a whole.
    """
    path = config_path(config_file)
    settings = load_from(Settings, path, **overrides)
    if path is not None and not settings.rate_card.is_absolute() and "rate_card" not in overrides:
        beside = path.parent / settings.rate_card
        if beside.is_file():
            settings = settings.model_copy(update={"rate_card": beside})
    return settings


def load_rate_card(path: Path) -> RateCard:
    """Read and validate the rate card; errors name the file and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise FileNotFoundError(f"rate card {path}: {error.strerror or error}") from None
    try:
        return RateCard.from_toml(text)
    except ValueError as error:
        raise ValueError(f"rate card {path}: {error}") from None
