"""A worker and the payment consumer as real processes started against a broker that is not there,
or with a broker URL that is not one: no RabbitMQ is needed.

- A malformed ``AMQP_URL`` is refused at start: one line, exit code 2.
- A closed port: waited for (a broker may come later) in one line, not one per attempt (the
  libraries' own lines about the attempts are not shown); SIGTERM stops it with exit code 0.
- A port that takes the TCP connection and never answers (a connect attempt that hangs): SIGTERM
  a second into it stops the process within a few seconds, with one line.

Whatever happens, the output never holds the password, in any form.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "S3cr@t:/?#%pw"
ENCODED = quote(PASSWORD, safe="")
FORMS = (PASSWORD, ENCODED, "S3cr@t", "/?#%pw")
STARTUP = 20.0
"""Seconds a process may take to start (imports on a slow machine): never a measurement."""
EXIT_WITHIN = 5.0
"""Seconds a process may take to exit once it got SIGTERM while connecting."""


def programs(tmp_path: Path) -> dict[str, list[str]]:
    return {
        "worker": [
            sys.executable,
            "-m",
            "workers.compute",
            "serve",
            "--db",
            str(tmp_path / "compute.sqlite3"),
        ],
        "payments": [sys.executable, "-m", "payments", "--db", str(tmp_path / "payments.sqlite3")],
    }


def environment(url: str) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if key != "AMQP_URL" and not key.startswith("RECKON_")
    }
    # The worker's store is empty here, which is not what these tests are about (test_empty_store.py).
    return {
        **env,
        "AMQP_URL": url,
        "RECKON_HTTP_PORT": "",
        "PYTHONUNBUFFERED": "1",
        "RECKON_ALLOW_EMPTY_STORE": "true",
    }


def start(command: list[str], url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, cwd=ROOT, env=environment(url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def lines_of(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def assert_no_password(output: str) -> None:
    for form in FORMS:
        assert form not in output, f"{form!r} in {output!r}"


class SilentBroker:
    """Accepts TCP connections and never says a word: a connect attempt hangs until its timeout."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self.accepted = threading.Event()
        self._held: list[socket.socket] = []
        self._closing = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closing:
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(connection)
            self.accepted.set()

    def close(self) -> None:
        self._closing = True
        self._thread.join(5)
        for connection in self._held:
            connection.close()
        self._socket.close()


@pytest.fixture
def silent_broker() -> Iterator[SilentBroker]:
    broker = SilentBroker()
    yield broker
    broker.close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("program", ["worker", "payments"])
def test_sigterm_while_connecting_stops_the_process_at_once(
    program: str, silent_broker: SilentBroker, tmp_path: Path
) -> None:
    process = start(programs(tmp_path)[program], f"amqp://reckon:{ENCODED}@127.0.0.1:{silent_broker.port}/")
    try:
        assert silent_broker.accepted.wait(STARTUP), "the process never tried to connect"
        time.sleep(1.0)
        assert process.poll() is None, "it should still be connecting"
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        output, _ = process.communicate(timeout=EXIT_WITHIN + STARTUP)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert took < EXIT_WITHIN, f"took {took:.1f}s to exit after SIGTERM: {output}"
    assert process.returncode in (0, 2), output
    assert len(lines_of(output)) <= 1, output
    assert "stopped before" in output
    assert_no_password(output)


@pytest.mark.parametrize("program", ["worker", "payments"])
def test_a_closed_port_is_waited_for_in_one_line_until_sigterm(
    program: str, closed_port: int, tmp_path: Path
) -> None:
    process = start(programs(tmp_path)[program], f"amqp://reckon:{ENCODED}@127.0.0.1:{closed_port}/")
    try:
        time.sleep(STARTUP / 2)  # several attempts, with backoff
        assert process.poll() is None, "it should wait for the broker, not exit"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=EXIT_WITHIN + STARTUP)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, output
    waiting = [line for line in lines_of(output) if "waiting for the broker" in line]
    assert len(waiting) == 1, output
    assert f"AMQP_URL=amqp://reckon:***@127.0.0.1:{closed_port}/" in waiting[0]
    assert "Traceback" not in output
    assert_no_password(output)


@pytest.mark.parametrize("program", ["worker", "payments"])
@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"reckon:{PASSWORD}@127.0.0.1:5672/", id="no-scheme"),
        pytest.param(f"amqp:/reckon:{PASSWORD}@127.0.0.1/", id="one-slash"),
        pytest.param(f"amqp://reckon:{PASSWORD}@127.0.0.1/", id="unencoded-password"),
        pytest.param(f"amqp://reckon:?{ENCODED}@127.0.0.1/", id="question-mark-first"),
    ],
)
def test_a_malformed_url_is_refused_at_start_in_one_line(program: str, url: str, tmp_path: Path) -> None:
    process = start(programs(tmp_path)[program], url)
    try:
        output, _ = process.communicate(timeout=STARTUP)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 2, output
    [line] = lines_of(output)
    assert "error:" in line and "amqp_url" in line.lower()
    assert_no_password(output)


@pytest.mark.parametrize("command", ["coordinator", "relay"])
def test_sigterm_while_the_coordinator_or_the_relay_connects_stops_it_at_once(
    command: str, silent_broker: SilentBroker, tmp_path: Path
) -> None:
    url = f"amqp://reckon:{ENCODED}@127.0.0.1:{silent_broker.port}/"
    env = {
        **environment(url),
        "RECKON_SERVICES": "compute",
        "RECKON_STORE_URL": f"sqlite+aiosqlite:///{tmp_path / 'reckon.sqlite3'}",
        "RECKON_RATE_CARD": str(ROOT / "config" / "rate-card.toml"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "accounting.cli", command],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert silent_broker.accepted.wait(STARTUP), "the process never tried to connect"
        time.sleep(1.0)
        assert process.poll() is None, "it should still be connecting"
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        output, _ = process.communicate(timeout=EXIT_WITHIN + STARTUP)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert took < EXIT_WITHIN, f"took {took:.1f}s to exit after SIGTERM: {output}"
    assert process.returncode == 0, output
    assert "stopped before it was ready" in output
    assert "Traceback" not in output
    assert_no_password(output)
