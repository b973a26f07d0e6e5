"""Checking a broker URL before connecting: one line saying what is wrong, never the password."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from transport.redact import redact_url

AMQP_SCHEMES = ("amqp", "amqps")
TLS_URL_PARAMETERS = frozenset({"cafile", "capath", "cadata", "certfile", "keyfile", "no_verify_ssl"})
"""aiormq's own TLS query parameters: TLS is configured by the ``tls_*`` settings instead."""


def amqp_url_problem(url: str) -> str | None:
    """None for ``amqp[s]://[user[:password]@]host[:port][/vhost]``, else what is wrong with it."""
    shown = redact_url(url)
    if not url or any(character.isspace() for character in url):
        return f"must be a URL without spaces: {shown!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"cannot be parsed (is the port a number from 1 to 65535?): {shown}"
    if parts.scheme not in AMQP_SCHEMES or not url.startswith(f"{parts.scheme}://"):
        return f"must start with amqp:// or amqps://: {shown}"
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
