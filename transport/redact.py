"""How to name the broker (or a store) to a person: the URL without its secrets, and what to do when
the broker is down.

``redact_url`` never trusts a parser to have understood the URL: an operator's typo (no scheme,
an ``@`` or ``/`` in the password, ``user:pass@host`` without ``//``, credentials percent-encoded,
a ``password=`` in the query, a port that is not a number) must not put the password in a log.
It over-redacts rather than under-redacts, and it never raises.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
MASK = "***"

_SECRET_PARAMETER = re.compile(
    r"(?P<key>(?:^|[?&;#])[^=&;#?]*(?:pass|pwd|secret|token|key|auth|cred)[^=&;#?]*=)(?P<value>[^&;#]*)",
    re.IGNORECASE,
)


def _redact_port(host_and_port: str, masked: list[str]) -> str:
    """``host:5672`` stays; ``host:whatever`` (a typo, or a password where a port should be) is masked."""
    host, separator, port = (
        host_and_port.partition("]:") if host_and_port.startswith("[") else host_and_port.partition(":")
    )
    if not separator or port.isdigit() or port in ("", MASK):
        return host_and_port
    masked.append(port)
    return f"{host}{separator}{MASK}"


def _redact_parameter(match: re.Match[str], masked: list[str]) -> str:
    if match["value"] not in ("", MASK):
        masked.append(match["value"])
    return f"{match['key']}{MASK}"


def _redact_once(url: str, masked: list[str]) -> str:
    """One pass over ``url`` as it is (not decoded); appends what it hid to ``masked``."""
    scheme_end = url.find("://")
    prefix, rest = (url[: scheme_end + 3], url[scheme_end + 3 :]) if scheme_end >= 0 else ("", url)
    at = rest.rfind("@")
    if at >= 0:
        # Everything before the last "@" is user information, whatever characters it contains.
        user, colon, password = rest[:at].partition(":")
        if colon and password not in ("", MASK):
            masked.append(password)
        userinfo = f"{user}:{MASK}@" if colon else f"{user}@"
        remainder = rest[at + 1 :]
    else:
        userinfo, remainder = "", rest
    end = min((i for i in (remainder.find(c) for c in "/?#") if i >= 0), default=len(remainder))
    # Several hosts (``h1:5432,h2:5432``, as libpq allows) are checked one by one.
    authority = ",".join(_redact_port(part, masked) for part in remainder[:end].split(","))
    tail = _SECRET_PARAMETER.sub(lambda match: _redact_parameter(match, masked), remainder[end:])
    return f"{prefix}{userinfo}{authority}{tail}"


def _decodings(url: str) -> list[str]:
    """``url`` and its percent-decodings, until decoding changes nothing (at most four deep)."""
    levels = [url]
    for _ in range(4):
        decoded = unquote(levels[-1])
        if decoded == levels[-1]:
            break
        levels.append(decoded)
    return levels


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/`` → ``amqp://user:***@host/``: credentials never reach a log.

    Masks the password of the user information (everything before the last ``@``), a port that is
    not a number, and every query or fragment parameter whose name suggests a secret
    (``password=``, ``sslpassword=``, ``token=``…). The URL is shown as given unless only its
    percent-decoded form reveals a secret: then the decoded form is redacted and shown.
    """
    redacted = _redact_once(url, [])
    levels = _decodings(redacted)
    revealed: list[str] = []
    for level in levels[1:]:
        _redact_once(level, revealed)
    return _redact_once(levels[-1], []) if revealed else redacted


def url_secrets(url: str) -> list[str]:
    """What ``redact_url`` hides, raw and decoded, and the pieces of each between URL delimiters,
    longest first: so that an error message quoting any of them (as some parser understood the
    URL) can be scrubbed too."""
    masked: list[str] = []
    for level in _decodings(url):
        _redact_once(level, masked)
    found: set[str] = set()
    for secret in masked:
        for form in (secret, unquote(secret)):
            found.add(form)
            found.update(piece for piece in re.split(r"[@/?#:;&=]", form) if len(piece) >= 4)
    return sorted((secret for secret in found if secret and secret != MASK), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` (an error message, say) with ``url`` and every secret in it replaced."""
    text = text.replace(url, redact_url(url))
    for secret in url_secrets(url):
        text = text.replace(secret, MASK)
    return text


def broker_unavailable(url: str, error: BaseException) -> str:
    """One line that says what the broker at ``url`` did, and what to do about that cause: a
    refused login names the user (not "start RabbitMQ"); nothing listening says how to start one."""
    detail = scrub(str(error) or type(error).__name__, url)
    where = redact_url(url)
    if "ACCESS_REFUSED" in detail or type(error).__name__ == "ProbableAuthenticationError":
        user, vhost = _user_and_vhost(url)
        return (
            f"RabbitMQ at AMQP_URL={where} refused the login of user {user!r} ({detail}). Check the "
            f"password in AMQP_URL (or its Secret) and that the user exists: `rabbitmqctl list_users`; "
            f"its rights on vhost {vhost!r}: `rabbitmqctl list_permissions -p {vhost}`."
        )
    return (
        f"RabbitMQ did not answer at AMQP_URL={where} ({detail}). "
        "Start it with `rabbitmq-server -detached` (or `docker compose up -d rabbitmq`), "
        "or point AMQP_URL at a running broker."
    )


def broker_refused_vhost(url: str) -> str:
    user, vhost = _user_and_vhost(url)
    return (
        f"RabbitMQ at AMQP_URL={redact_url(url)} closed the connection while opening vhost {vhost!r} "
        f"for user {user!r}: the vhost does not exist, or the user has no permission on it "
        f"(`rabbitmqctl list_vhosts`; `rabbitmqctl list_permissions -p {vhost}`)."
    )


def _user_and_vhost(url: str) -> tuple[str, str]:
    parsed = urlsplit(url)
    user = unquote(parsed.username or "guest")
    vhost = unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
    return user, vhost
