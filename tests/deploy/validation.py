"""kubernetes-validate --strict on rendered manifests, against the versions deploy/README.md names."""

from __future__ import annotations

import functools
import re
import tempfile
from pathlib import Path

from tests.deploy.tools import Manifest, run, tool

MINIMUM_KUBERNETES = "1.27.0"
"""The oldest Kubernetes deploy/README.md supports: PodDisruptionBudget `unhealthyPodEvictionPolicy`
is beta and on by default from 1.27 (GA in 1.31). 1.25's API rejects the field; 1.26's schema has it,
but as alpha behind a feature gate that is off by default, where the API server drops it."""

NEWEST_KUBERNETES = "1.37.0"
"""The newest version kubernetes-validate ships (as in test_kubernetes.py)."""


def validate(manifests: Path, version: str) -> tuple[int, str]:
    """kubernetes-validate's exit code and report for the YAML stream in ``manifests``."""
    completed = run([tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, manifests])
    return completed.returncode, completed.stdout + completed.stderr


def built_in(manifest: Manifest) -> bool:
    """An object of Kubernetes' own API (core, apps, policy, *.k8s.io), not of a CRD (a PodMonitor):
    kubernetes-validate has schemas for these only, and only warns about the others."""
    group = str(manifest["apiVersion"]).rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def passed(report: str) -> int:
    return len(re.findall(r"passed for resource", report))


def assert_all_valid(manifests: list[Manifest], report: str) -> None:
    """Every built-in object passed; every other one is a kind without a schema, nothing worse."""
    assert passed(report) == sum(map(built_in, manifests)), f"not every object was validated:\n{report}"
    for manifest in manifests:
        if not built_in(manifest):
            assert f"Couldn't find schema for kind {manifest['kind']}" in report, report


@functools.cache
def knows(version: str) -> bool:
    """Whether kubernetes-validate ships the schemas of ``version`` (it says so only by failing)."""
    with tempfile.TemporaryDirectory() as directory:
        namespace = Path(directory) / "namespace.yaml"
        namespace.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: probe\n", encoding="utf-8")
        code, report = validate(namespace, version)
    return code == 0 and "passed for resource namespace/probe" in report
