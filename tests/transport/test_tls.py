"""TLS to the broker: the SSL context ``connect`` builds from the settings for an ``amqps://`` URL.

There is no TLS broker here, and none is faked: these tests check the context itself, and that
``connect`` hands it to aio-pika (whose ``connect_robust`` is replaced by a recorder).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from accounting.runtime.settings import Settings
from transport.connection import BrokerUnavailable, connect, tls_context


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_key: Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a client certificate it signed, and a key that is not the certificate's."""
    assert shutil.which("openssl"), "these tests make their certificates with the openssl command"
    root = tmp_path_factory.mktemp("pki")
    ca, ca_key = root / "ca.pem", root / "ca.key"
    cert, key, csr, other_key = (
        root / "client.pem",
        root / "client.key",
        root / "client.csr",
        root / "other.key",
    )
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Reckon Test CA",
            "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=reckon-coordinator",
            "-keyout", str(key), "-out", str(csr))  # fmt: skip
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-out", str(cert))  # fmt: skip
    openssl("genrsa", "-out", str(other_key), "2048")
    return Pki(ca, cert, key, other_key)


def ca_names(context: ssl.SSLContext) -> list[str]:
    """The common names of the CA certificates the context trusts (loaded so far)."""
    names = []
    for cert in context.get_ca_certs():
        subject: Any = cert["subject"]
        names += [value for rdn in subject for key, value in rdn if key == "commonName"]
    return names


def test_no_tls_for_amqp() -> None:
    assert tls_context("amqp://u:p@broker/") is None


def test_amqps_without_files_verifies_the_broker_against_the_system_cas() -> None:
    context = tls_context("amqps://u:p@broker/")

    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert "Reckon Test CA" not in ca_names(context)


def test_a_ca_file_is_what_the_broker_is_verified_against(pki: Pki) -> None:
    context = tls_context("amqps://broker/", ca_file=pki.ca)

    assert context is not None
    assert ca_names(context) == ["Reckon Test CA"]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_a_client_certificate_and_its_key_are_loaded(pki: Pki) -> None:
    context = tls_context("amqps://broker/", ca_file=pki.ca, cert_file=pki.cert, key_file=pki.key)

    assert context is not None


def test_a_key_that_is_not_the_certificates_is_one_clear_error(pki: Pki) -> None:
    with pytest.raises(BrokerUnavailable, match=r"tls_cert_file .*client\.pem / tls_key_file .*other\.key"):
        tls_context("amqps://broker/", cert_file=pki.cert, key_file=pki.other_key)


def test_a_ca_file_that_is_not_pem_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")

    with pytest.raises(BrokerUnavailable, match=r"tls_ca_file .*ca\.pem"):
        tls_context("amqps://broker/", ca_file=bad)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, url: str, **kwargs: Any) -> str:
        self.calls.append((url, kwargs))
        return "connection"


async def test_connect_hands_the_configured_context_to_aio_pika(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    monkeypatch.setattr(aio_pika, "connect_robust", recorder)
    settings = Settings(
        amqp_url="amqps://reckon:p@mq.example.com:5671/",
        tls_ca_file=pki.ca,
        tls_cert_file=pki.cert,
        tls_key_file=pki.key,
    )

    await connect(settings)
    await connect("amqp://guest:guest@127.0.0.1:5672/")  # a URL alone, as before: no TLS

    (tls_url, tls_kwargs), (plain_url, plain_kwargs) = recorder.calls
    assert tls_url == "amqps://reckon:p@mq.example.com:5671/"
    context = tls_kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert ca_names(context) == ["Reckon Test CA"]
    assert context.check_hostname is True
    assert (plain_url, plain_kwargs["ssl_context"]) == ("amqp://guest:guest@127.0.0.1:5672/", None)


async def test_connect_with_an_amqps_url_alone_still_uses_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(aio_pika, "connect_robust", recorder)

    await connect("amqps://mq.example.com/")

    assert isinstance(recorder.calls[0][1]["ssl_context"], ssl.SSLContext)


async def test_a_failed_tls_handshake_is_one_line_naming_the_tls_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def handshake_fails(url: str, **_kwargs: Any) -> None:
        raise ssl.SSLCertVerificationError("certificate verify failed: self-signed certificate")

    monkeypatch.setattr(aio_pika, "connect_robust", handshake_fails)

    with pytest.raises(BrokerUnavailable) as raised:
        await connect("amqps://reckon:Sup3rS3cret@mq.example.com/")

    message = str(raised.value)
    assert "TLS to AMQP_URL=amqps://reckon:***@mq.example.com/ failed" in message
    assert "tls_ca_file" in message
    assert "Sup3rS3cret" not in message
