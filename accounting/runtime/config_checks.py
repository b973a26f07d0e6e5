"""The checks behind the settings' validators: pure functions that return a problem, or None.

Every message names the value only through ``redact_url``: a setting that holds a password never
echoes it, however malformed it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from transport.redact import redact_url

SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
"""The contract's rule for a service name (``contracts.messages.ServiceName``)."""
SERVICE_NAME_MAX = 64
BROKER_USER = re.compile(r"^[^\s,=]{1,255}$")
STORE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def service_name_problem(name: str) -> str | None:
    if len(name) > SERVICE_NAME_MAX:
        return f"service name {name[:20]!r}… is {len(name)} characters long; at most {SERVICE_NAME_MAX}"
    if not SERVICE_NAME.match(name):
        return f"service name {name!r} must be lowercase letters, digits and dashes, starting with a letter"
    return None


def parse_service_users(text: str) -> dict[str, str]:
    """``compute=reckon-compute,storage=reckon-storage`` → a mapping; raises ValueError naming a
    malformed entry."""
    users: dict[str, str] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        service, equals, user = (piece.strip() for piece in entry.partition("="))
        if not equals or not service or not user:
            raise ValueError(f"entry {entry!r} must be service=broker-user")
        if service in users:
            raise ValueError(f"service {service!r} listed twice")
        users[service] = user
    return users


def service_users_problem(users: Mapping[str, str], services: tuple[str, ...]) -> str | None:
    for service, user in users.items():
        problem = service_name_problem(service)
        if problem is not None:
            return problem
        if not BROKER_USER.match(user):
            return f"broker user {user!r} for {service} must be 1-255 characters without spaces, ',' or '='"
    unknown = sorted(set(users) - set(services))
    if unknown:
        configured = ", ".join(services) or "none"
        return f"{', '.join(unknown)} not among the configured services ({configured})"
    return None


def store_url_problem(url: str) -> str | None:
    """None for a SQLAlchemy URL of a supported async driver, else what is wrong with it."""
    shown = redact_url(url)
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - parsing the port raises on a port that is not a number
    except (ArgumentError, ValueError):
        return f"is not a SQLAlchemy URL (driver://user:password@host:port/database): {shown}"
    if parsed.drivername not in STORE_DRIVERS:
        return (
            f"driver {parsed.drivername!r} is not supported; use sqlite+aiosqlite:///path/to/file.sqlite3 "
            f"or postgresql+asyncpg://user:password@host:5432/database: {shown}"
        )
    if parsed.drivername.startswith("sqlite"):
        if not parsed.database or parsed.database == ":memory:":
            return f"needs a file (an in-memory SQLite store is gone when the process stops): {shown}"
        return None
    if "@" in (parsed.host or "") or "@" in (parsed.username or ""):
        return f"has an '@' in its user or password; percent-encode it as %40: {shown}"
    rest = url.partition("://")[2]
    if _BAD_ESCAPE.search(rest[: max(rest.rfind("@"), 0)]):
        return (
            "has a '%' in its user or password that does not start a percent-escape; "
            f"percent-encode it as %25: {shown}"
        )
    if not parsed.host and "host" not in parsed.query:
        return f"names no host: {shown}"
    if not parsed.database:
        return f"names no database: {shown}"
    return None
