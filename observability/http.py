"""The operations endpoints of a long-running process, on ``RECKON_HTTP_PORT``:

- ``GET /healthz``: 200 while the process (its event loop) answers: liveness, never a dependency.
- ``GET /readyz``: 200 when every readiness check passes, else 503; the JSON body names each
  check and, for a failing one, a short reason (``{"status": "not ready", "checks": {"broker":
  "not connected", "store": "ok"}}``). A check that raises shows only the exception's type
  (``"failed (OperationalError), see the log"``): an exception's text can carry a URL, and
  ``/readyz`` is read by whoever reaches the port. The exception itself is logged at WARNING once
  each time a check starts failing differently (not at every probe), and its recovery at INFO.
  Until the process installs its checks it answers 503 ``starting``.
- ``GET /startupz``: 200 unless a start-up step that must not be interrupted is under way (the
  store's migration, which another process may hold under its lock): then 503 with that step. The
  startup probe uses it, so the liveness probe never restarts a pod in the middle of a migration;
  a process that waits for the broker or the database is started (alive, not ready).
- ``GET /metrics``: the Prometheus text format (prometheus-client's default registry, process and
  Python metrics included). Hooks registered with ``before_scrape`` refresh gauges that are read at
  scrape time (the outbox backlog, the dead-letter count), each bounded by a timeout.

``RECKON_HTTP_PORT`` unset or empty: no server (a process in a terminal or a test; the image sets
8080). ``0``: any free port, logged and kept in ``OpsServer.port``. ``RECKON_HTTP_HOST``: the
address to listen on (default ``0.0.0.0``, as a container needs for the kubelet and a scraper).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest

from observability.build import register_build_info

log = logging.getLogger("reckon.http")

HTTP_PORT_ENV = "RECKON_HTTP_PORT"
HTTP_HOST_ENV = "RECKON_HTTP_HOST"
DEFAULT_HOST = "0.0.0.0"  # probes and scrapers reach a container from outside
CHECK_TIMEOUT_SECONDS = 3.0
"""How long one readiness check or one scrape hook may take before it counts as failed."""

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format: what ``generate_latest`` writes, read by every Prometheus version."""

Check = Callable[[], Awaitable[str | None]]
"""A readiness check: None when ready, else why not (one short line)."""
ScrapeHook = Callable[[], Awaitable[None]]

SCRAPE_ERRORS = Counter(
    "reckon_scrape_errors",
    "Scrape-time reads (outbox status, dead-letter count) that failed or timed out",
    ["source"],
)


class HttpUnavailable(RuntimeError):
    """The operations server could not listen where it was told to; the message says where."""


@dataclass(frozen=True)
class HttpSettings:
    port: int | None
    """None: no server; 0: any free port."""
    host: str = DEFAULT_HOST

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HttpSettings:
        """``RECKON_HTTP_PORT`` and ``RECKON_HTTP_HOST``; a port that is not 0-65535 is an error."""
        env = os.environ if environ is None else environ
        raw = env.get(HTTP_PORT_ENV, "").strip()
        host = env.get(HTTP_HOST_ENV, "").strip() or DEFAULT_HOST
        if not raw:
            return cls(None, host)
        try:
            port = int(raw)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise ValueError(f"{HTTP_PORT_ENV}={raw!r}: expected a port number 0-65535 (0: any free port)")
        return cls(port, host)


class OpsServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` on an aiohttp server (see the module's doc)."""

    def __init__(
        self, registry: CollectorRegistry = REGISTRY, timeout: float = CHECK_TIMEOUT_SECONDS
    ) -> None:
        self._registry = registry
        self._timeout = timeout
        self._checks: dict[str, Check] = {"startup": _starting}
        self._raised: dict[str, str] = {}
        """Per check that raised at its last run: the type and text of what it raised, logged once."""
        self._hooks: dict[str, ScrapeHook] = {}
        self._startup_hold: str | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.host: str | None = None

    def set_checks(self, checks: Mapping[str, Check]) -> None:
        """Replace the readiness checks (at start-up, once the process has what they look at)."""
        self._checks = dict(checks)

    def hold_startup(self, step: str) -> None:
        """``/startupz`` answers 503 naming ``step`` until ``release_startup``."""
        self._startup_hold = step

    def release_startup(self) -> None:
        self._startup_hold = None

    def before_scrape(self, name: str, hook: ScrapeHook) -> None:
        """Run ``hook`` before each scrape (at most ``timeout`` seconds; a failure is logged and
        counted in ``reckon_scrape_errors_total{source=name}``, and the last values stay)."""
        self._hooks[name] = hook

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in (None, "0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    async def start(self, settings: HttpSettings) -> None:
        if settings.port is None:
            raise ValueError("no port to listen on")
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/startupz", self._startupz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.host, settings.port).start()
        except OSError as error:
            await runner.cleanup()
            raise HttpUnavailable(
                f"{HTTP_PORT_ENV}={settings.port}: cannot listen on {settings.host}:{settings.port} ({error})"
            ) from None
        self._runner = runner
        address = runner.addresses[0]
        self.host, self.port = settings.host, int(address[1])
        log.info("serving /healthz, /readyz and /metrics on %s:%d", settings.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        """Every check at once, each bounded by the timeout: (ready, name → "ok" or why not)."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._run_check(name, self._checks[name]) for name in names))
        checks = {name: result or "ok" for name, result in zip(names, results, strict=True)}
        return all(result is None for result in results), checks

    async def _run_check(self, name: str, check: Check) -> str | None:
        try:
            result = await asyncio.wait_for(check(), self._timeout)
        except TimeoutError:
            return f"no answer within {self._timeout:g}s"
        except Exception as error:
            kind = type(error).__name__
            detail = f"{kind}: {error}"
            if self._raised.get(name) != detail:
                self._raised[name] = detail
                log.warning("readiness check %s failed: %s", name, detail, exc_info=error)
            return f"failed ({kind}), see the log"
        self._recovered(name)
        return result

    def _recovered(self, name: str) -> None:
        if self._raised.pop(name, None) is not None:
            log.info("readiness check %s no longer raises", name)

    async def refresh(self) -> None:
        """Run every scrape hook (what ``/metrics`` does before it renders)."""
        names = list(self._hooks)
        results = await asyncio.gather(
            *(asyncio.wait_for(self._hooks[name](), self._timeout) for name in names), return_exceptions=True
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                SCRAPE_ERRORS.labels(name).inc()
                log.warning("metrics: %s could not be read: %s", name, f"{type(result).__name__}: {result}")

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _startupz(self, _request: web.Request) -> web.Response:
        if self._startup_hold is not None:
            return web.json_response({"status": "starting", "step": self._startup_hold}, status=503)
        return web.json_response({"status": "started"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, checks = await self.readiness()
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503
        )

    async def _metrics(self, _request: web.Request) -> web.Response:
        await self.refresh()
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )


async def start_server(settings: HttpSettings | None = None) -> OpsServer | None:
    """The operations server as ``RECKON_HTTP_PORT`` says (None when it is unset: no server)."""
    settings = settings or HttpSettings.from_env()
    if settings.port is None:
        return None
    register_build_info()
    server = OpsServer()
    await server.start(settings)
    return server


async def _starting() -> str:
    return "starting"
