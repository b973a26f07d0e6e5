"""TLS to the broker for a sub-service: ``amqps://`` with a CA and, for mutual TLS, a client cert.

The coordinator has the same rules (``accounting/broker.py``); the two sides share no code but
the contracts, so this small part is written twice on purpose.
"""

from __future__ import annotations

import ssl

from workers.sdk.settings import WorkerSettings


def tls_context(settings: WorkerSettings) -> ssl.SSLContext | None:
    """None for ``amqp://``; for ``amqps://`` a context verifying the broker's certificate and host
    name (against ``tls_ca_file``, or the system's CAs), TLS 1.2 at least, presenting the client
    certificate and key when set. A file that cannot be loaded raises ``ValueError`` naming it."""
    if not settings.amqp_url.lower().startswith("amqps://"):
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.tls_ca_file)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(
            f"RECKON_TLS_CA_FILE {settings.tls_ca_file}: not PEM CA certificates ({error})"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.tls_cert_file is not None:
        try:
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
        except (OSError, ssl.SSLError) as error:
            files = (
                f"RECKON_TLS_CERT_FILE {settings.tls_cert_file} / RECKON_TLS_KEY_FILE {settings.tls_key_file}"
            )
            raise ValueError(f"{files}: not a PEM certificate and its key ({error})") from None
    return context
