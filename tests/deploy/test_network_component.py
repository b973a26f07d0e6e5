"""deploy/components/network-usage: the network sub-service as a component an overlay includes.

Dev includes it (with its demo data, components/network-demo-usage); prod does not, so this renders
a copy of prod with it added, as an operator would, and checks what it brings: the worker (a copy of
compute's but with a real store on its own ReadWriteOnce claim), the coordinator asking it, the
Secret it needs named in the runbook, and no demo data.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from accounting.runtime.settings import load_settings
from tests.deploy.tools import (
    DEPLOY,
    Manifest,
    component_coordinator_env,
    config_maps_mounted,
    containers,
    coordinator_env,
    deploy_config,
    effective_service_users,
    effective_services,
    env_value,
    kustomize,
    load_all,
    named,
    of_kind,
    overlay,
    pod_spec,
    pod_template,
    secrets_referenced,
    workloads,
)
from tests.deploy.validation import MINIMUM_KUBERNETES, NEWEST_KUBERNETES, assert_all_valid, validate

COMPONENT = "network-usage"
WORKER = "reckon-network"


@functools.cache
def prod_with_network(workdir: Path) -> str:
    """The prod overlay of a copy of deploy/ whose kustomization lists the component."""
    copy = workdir / "deploy"
    if not copy.exists():
        shutil.copytree(DEPLOY, copy)
        kustomization = copy / "overlays" / "prod" / "kustomization.yaml"
        loaded: dict[str, Any] = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
        loaded["components"] = [*loaded.get("components", []), f"../../components/{COMPONENT}"]
        kustomization.write_text(yaml.safe_dump(loaded, sort_keys=False), encoding="utf-8")
    return kustomize(copy / "overlays" / "prod")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("network-component")


@pytest.fixture(scope="module")
def prod(workdir: Path) -> list[Manifest]:
    return load_all(prod_with_network(workdir))


def coordinator_of(manifests: list[Manifest]) -> dict[str, Any]:
    [container] = containers(pod_spec(named(manifests, "Deployment", "reckon-coordinator")), init=False)
    return container


@pytest.mark.parametrize("version", [MINIMUM_KUBERNETES, NEWEST_KUBERNETES])
def test_prod_with_the_component_is_valid_kubernetes(version: str, workdir: Path, tmp_path: Path) -> None:
    text = prod_with_network(workdir)
    manifests = tmp_path / "prod.yaml"
    manifests.write_text(text, encoding="utf-8")

    code, report = validate(manifests, version)

    assert code == 0, f"prod with {COMPONENT}, Kubernetes {version}:\n{report}"
    assert_all_valid(load_all(text), report)
    assert f"deployment/{WORKER} " in report and f"persistentvolumeclaim/{WORKER}-store " in report


def test_the_component_adds_the_worker_and_the_coordinator_asks_it(prod: list[Manifest]) -> None:
    env = coordinator_env(coordinator_of(prod))

    assert effective_services(env) == (*deploy_config()["services"], "network")
    assert effective_service_users(env) == deploy_config()["service_users"] | {"network": "reckon-network"}
    assert env == component_coordinator_env()[COMPONENT]
    [worker] = containers(pod_spec(named(prod, "Deployment", WORKER)), init=False)
    assert worker["args"] == ["worker", "network"]
    # Everything else of prod is as before: only the coordinator's environment changed.
    without = overlay("prod").manifests
    assert coordinator_env(coordinator_of(without)) == (None, None)
    for manifest in without:
        if manifest["kind"] == "Deployment" and manifest["metadata"]["name"] == "reckon-coordinator":
            continue
        assert manifest in prod, f"{manifest['kind']}/{manifest['metadata']['name']} changed"


def test_the_worker_has_one_replica_on_its_own_claim_in_the_overlays_namespace(prod: list[Manifest]) -> None:
    worker = named(prod, "Deployment", WORKER)
    spec = pod_spec(worker)
    [container] = containers(spec, init=False)

    assert worker["spec"]["replicas"] == 1 and worker["spec"]["strategy"] == {"type": "Recreate"}
    store = env_value(container, "RECKON_NETWORK_DB")
    assert store == "/var/lib/reckon/network.sqlite3"
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volume = {v["name"]: v for v in spec["volumes"]}[mounts[str(Path(store).parent)]]
    claim = named(prod, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert {m["metadata"].get("namespace") for m in prod if m["kind"] != "Namespace"} == {"reckon"}
    for manifest in (worker, claim, *of_kind(prod, "PodDisruptionBudget")):
        if manifest["metadata"]["name"].startswith(WORKER):
            assert manifest["metadata"]["labels"]["app.kubernetes.io/part-of"] == "reckon"
    assert pod_template(worker)["metadata"]["labels"]["app.kubernetes.io/part-of"] == "reckon"


def test_the_worker_is_otherwise_a_copy_of_compute(prod: list[Manifest]) -> None:
    compute, worker = named(prod, "Deployment", "reckon-compute"), named(prod, "Deployment", WORKER)
    [theirs] = containers(pod_spec(compute), init=False)
    [ours] = containers(pod_spec(worker), init=False)

    assert config_maps_mounted(pod_spec(worker)) == config_maps_mounted(pod_spec(compute))
    assert ours["image"] == theirs["image"]
    for key in ("ports", "startupProbe", "readinessProbe", "livenessProbe", "securityContext", "resources"):
        assert ours[key] == theirs[key], key
    for key in ("securityContext", "serviceAccountName", "automountServiceAccountToken"):
        assert pod_spec(worker)[key] == pod_spec(compute)[key], key
    assert env_value(ours, "RECKON_CONFIG") == env_value(theirs, "RECKON_CONFIG")


def test_prod_with_the_component_seeds_nothing_and_needs_a_secret_the_runbook_names(
    prod: list[Manifest],
) -> None:
    runbook = (DEPLOY / "README.md").read_text(encoding="utf-8")
    needed = set().union(*(secrets_referenced(pod_spec(w)) for w in workloads(prod)))

    assert not of_kind(prod, "Secret")
    assert needed - set().union(
        *(secrets_referenced(pod_spec(w)) for w in workloads(overlay("prod").manifests))
    ) == {"reckon-network-credentials"}
    assert "reckon-network-credentials" in runbook
    for workload in workloads(prod):
        for container in pod_spec(workload).get("initContainers", []):
            assert " seed" not in " ".join(container.get("command", []) + container.get("args", []))


def test_the_coordinators_settings_accept_the_components_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    [[container]] = [
        [c for c in document["spec"]["template"]["spec"]["containers"] if c["name"] == "coordinator"]
        for document in load_all(
            (DEPLOY / "components" / COMPONENT / "coordinator-services.yaml").read_text()
        )
    ]
    for variable in container["env"]:
        monkeypatch.setenv(variable["name"], variable["value"])
    monkeypatch.delenv("RECKON_CONFIG", raising=False)
    assert "RECKON_SERVICES" in os.environ

    settings = load_settings(DEPLOY / "base" / "config" / "reckon.toml")

    assert settings.services == ("compute", "storage", "network")
    assert settings.service_users == {
        "compute": "reckon-compute",
        "storage": "reckon-storage",
        "network": "reckon-network",
    }


def test_the_component_is_documented_where_the_runbook_adds_a_sub_service() -> None:
    runbook = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert re.search(r"components/network-usage", runbook)
