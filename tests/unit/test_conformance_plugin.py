"""``conformance.pytest_plugin`` enabled as a team would (``-p`` or ``pytest_plugins``) gives their
tests the ``conformance`` fixture (run against a broker in tests/integration/test_conformance.py)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.mark.parametrize("how", ["option", "conftest"])
def test_the_plugin_gives_a_teams_tests_the_conformance_fixture(pytester: pytest.Pytester, how: str) -> None:
    pytester.makepyfile(
        test_team="""
        import inspect

        from conformance.pytest_plugin import Conformance


        def test_it(conformance):
            assert isinstance(conformance, Conformance)
            assert inspect.iscoroutinefunction(conformance.__call__)
        """
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    if how == "conftest":
        pytester.makeconftest('pytest_plugins = ["conformance.pytest_plugin"]')
        result = pytester.runpytest_inprocess()
    else:
        result = pytester.runpytest_inprocess("-p", "conformance.pytest_plugin")

    result.assert_outcomes(passed=1)
