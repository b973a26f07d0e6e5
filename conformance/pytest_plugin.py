"""The conformance kit for a Python team's own tests: a pytest fixture, ``conformance``.

Enable it in the ``conftest.py`` at the root of your tests (or with ``pytest -p
conformance.pytest_plugin``)::

    pytest_plugins = ["conformance.pytest_plugin"]

then, with your service running against a broker (``AMQP_URL`` as the coordinator's broker user,
``RECKON_NAMESPACE``, ``RECKON_CONFIG`` as for ``reckon conformance``) and an async test runner
(pytest-asyncio, anyio)::

    async def test_network_conforms(conformance):
        await conformance("network")  # fails the test with the table of checks if one did not pass

    async def test_what_the_kit_says(conformance):
        result = await conformance("network", expect_pass=False, namespace="ci-42", timeout=10)
        assert result.check("schema").status is Status.PASS, result.explain()

Every keyword of ``conformance.run_conformance`` is accepted (``period``, ``timeout``, ``quiet``,
``service_user``, ``impostor_url``), and any setting of ``ConformanceSettings`` (``amqp_url``,
``namespace``, ``coordinator_user``, ``service_users``…) overrides the environment.
"""

from __future__ import annotations

from typing import Any

import pytest

from conformance.amqp import run_conformance
from conformance.model import Result
from conformance.settings import ConformanceSettings

SETTINGS = frozenset(ConformanceSettings.model_fields)


class ConformanceFailed(AssertionError):
    """A service did not pass every check; the message is the table, each check with its reason."""


class Conformance:
    """``await conformance(SERVICE, **options)``: run every check; the ``Result``."""

    async def __call__(self, service: str, *, expect_pass: bool = True, **options: Any) -> Result:
        """Run the kit against ``service``. With ``expect_pass`` (the default) a result that did not
        pass raises ``ConformanceFailed`` (an ``AssertionError``) naming every check and why."""
        overrides = {key: options.pop(key) for key in list(options) if key in SETTINGS}
        settings = ConformanceSettings(**overrides)
        result = await run_conformance(service, settings=settings, **options)
        if expect_pass and not result.passed:
            raise ConformanceFailed(result.explain())
        return result


@pytest.fixture
def conformance() -> Conformance:
    """Runs the conformance kit against a named, running sub-service (see this module's docstring)."""
    return Conformance()
