"""The minimum Kubernetes version deploy/README.md states: every overlay validates against it, and
below it the PodDisruptionBudgets' `unhealthyPodEvictionPolicy` is what fails, so the statement
stays true as the manifests change."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import DEPLOY, OVERLAYS, Manifest, of_kind, overlay
from tests.deploy.validation import MINIMUM_KUBERNETES, assert_all_valid, knows, validate

POLICY = "unhealthyPodEvictionPolicy"


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def test_the_runbook_states_the_minimum_kubernetes_version_the_tests_validate() -> None:
    runbook = (DEPLOY / "README.md").read_text(encoding="utf-8")

    stated = re.findall(r"Kubernetes (\d+\.\d+) or newer", runbook)

    assert stated == [minor(MINIMUM_KUBERNETES)], "deploy/README.md must state the minimum, once"


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_object_of_the_overlay_is_valid_on_the_minimum_kubernetes(name: str, tmp_path: Path) -> None:
    rendered = overlay(name)
    manifests = tmp_path / f"{name}.yaml"
    manifests.write_text(rendered.text, encoding="utf-8")

    code, report = validate(manifests, MINIMUM_KUBERNETES)

    assert code == 0, f"overlay {name} against Kubernetes {MINIMUM_KUBERNETES}:\n{report}"
    assert_all_valid(rendered.manifests, report)


def without_the_policy(manifests: list[Manifest]) -> list[Manifest]:
    stripped = copy.deepcopy(manifests)
    for budget in of_kind(stripped, "PodDisruptionBudget"):
        budget["spec"].pop(POLICY, None)
    return stripped


@pytest.mark.parametrize("name", OVERLAYS)
def test_below_the_minimum_the_disruption_budgets_eviction_policy_is_what_fails(
    name: str, tmp_path: Path
) -> None:
    if not knows("1.25.0"):
        pytest.skip("this kubernetes-validate has no Kubernetes 1.25 schemas")
    rendered = overlay(name)
    budgets = of_kind(rendered.manifests, "PodDisruptionBudget")
    assert budgets and all(POLICY in budget["spec"] for budget in budgets)
    as_rendered = tmp_path / "rendered.yaml"
    as_rendered.write_text(rendered.text, encoding="utf-8")

    code, report = validate(as_rendered, "1.25.0")

    assert code != 0, "1.25 accepts the manifests: the stated minimum is no longer what limits them"
    errors = [line for line in report.splitlines() if line.startswith("ERROR")]
    assert len(errors) == len(budgets), report
    assert all("poddisruptionbudget/" in e and f"'{POLICY}' was unexpected" in e for e in errors), report

    # That field is the only one: without it, everything validates against 1.25.
    stripped = tmp_path / "stripped.yaml"
    stripped.write_text(yaml.safe_dump_all(without_the_policy(rendered.manifests)), encoding="utf-8")
    code, report = validate(stripped, "1.25.0")
    assert code == 0, report
    assert_all_valid(rendered.manifests, report)

    # 1.26's schema has the field (alpha, behind a feature gate that is off by default, so the API
    # server drops it): the schema alone would allow 1.26, the feature's default needs 1.27.
    if knows("1.26.0"):
        code, report = validate(as_rendered, "1.26.0")
        assert code == 0, report
