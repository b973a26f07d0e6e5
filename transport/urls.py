"""Checking a broker URL before connecting: one line saying what is wrong, never the password.

Every process (the coordinator, the relay, the scheduler, the payment consumer, every worker)
runs the same check at start (through ``transport.settings.BrokerClientSettings``), and
``transport.connection.connect`` runs it once more before a URL reaches aio-pika: a URL that aio-pika
cannot use would otherwise be retried, and logged, forever.

The user information must read the same to every parser: a password with ``/ ? #`` ends the
host early (``amqp://u:?secret@host/`` names the host ``u``), and a ``%`` must start a
percent-escape. The message then says to percent-encode the password.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from transport.redact import redact_url

AMQP_SCHEMES = ("amqp", "amqps")
TLS_URL_PARAMETERS = frozenset({"cafile", "capath", "cadata", "certfile", "keyfile", "no_verify_ssl"})
"""aiormq's own TLS query parameters: TLS is configured by the ``tls_*`` settings instead."""

ENCODE_PASSWORD = (
    "a user or password with @ : / ? # % in it must be percent-encoded "
    "(%40 %3A %2F %3F %23 %25), e.g. amqp://user:p%40ss%2Fword@host:5672/"
)
"""What every credentials problem ends with: how to write such a password."""

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def amqp_url_problem(url: str) -> str | None:
    """None for ``amqp[s]://[user[:password]@]host[:port][/vhost]``, else what is wrong with it."""
    shown = redact_url(url)
    if not url or any(character.isspace() for character in url):
        return f"must be a URL without spaces: {shown!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"cannot be parsed (is the port a number from 1 to 65535? {ENCODE_PASSWORD}): {shown}"
    if parts.scheme not in AMQP_SCHEMES or not url.startswith(f"{parts.scheme}://"):
        return f"must start with amqp:// or amqps://: {shown}"
    credentials = credentials_problem(url, parts.netloc)
    if credentials is not None:
        # Only the authority, redacted: what follows may be the rest of a password (a '?' or '#'
        # in it ended the authority early, and no '@' says where it ends).
        scheme, _, rest = shown.partition("://")
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        return f"{credentials}; {ENCODE_PASSWORD}: {scheme}://{authority}…"
    if not parts.hostname:
        return f"names no host: {shown}"
    if port == 0:
        return f"port must be from 1 to 65535: {shown}"
    tls = sorted(TLS_URL_PARAMETERS & {key for key, _ in parse_qsl(parts.query)})
    if tls:
        return (
            f"{', '.join(tls)} in the URL: set tls_ca_file, tls_cert_file and tls_key_file "
            f"(RECKON_TLS_*) instead: {shown}"
        )
    return None


def credentials_problem(url: str, netloc: str) -> str | None:
    """What makes the user information of ``url`` (whose authority is ``netloc``) unreadable, or
    None. Never quotes any of it."""
    after_authority = url[url.find("://") + 3 + len(netloc) :]
    if "@" in after_authority:
        # ``amqp://u:?secret@host/``: the '?' (or '/', '#') ended the authority at "u:", so the
        # host would be "u" and the password would travel in the query, path or fragment.
        return "has an '@' after its host (a password with / ? or # in it cuts the URL short)"
    userinfo, at, host_and_port = netloc.rpartition("@")
    if not at:
        if host_and_port.endswith(":"):
            return "has an empty port after ':' (is that a password?)"
        return None
    user, _, password = userinfo.partition(":")
    if _BAD_ESCAPE.search(userinfo):
        return "has a '%' in its user or password that does not start a percent-escape like %25"
    if password and not user:
        return "has a password but no user name"
    if host_and_port.endswith(":"):
        return "has an empty port after ':'"
    return None
