"""deploy/examples/subservice-pvc.yaml, added to the base as the runbook says ("Add a sub-service"):
copied as ``<name>.yaml`` with every "network" / "NETWORK" replaced by the new service's name (the
example's own instructions; network itself is deployed by deploy/components/network-usage, which dev
includes), both overlays still render, every object validates (--strict) on the minimum and the
newest Kubernetes, and the new worker is a copy of compute's with a real store: one replica on a
ReadWriteOnce claim, recreated rather than rolled, never an emptyDir."""

from __future__ import annotations

import functools
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import (
    DEPLOY,
    OVERLAYS,
    Manifest,
    config_maps_mounted,
    containers,
    env_value,
    kustomize,
    load_all,
    named,
    of_kind,
    pod_spec,
    pod_template,
    secret_key_refs,
)
from tests.deploy.validation import MINIMUM_KUBERNETES, NEWEST_KUBERNETES, assert_all_valid, validate

EXAMPLE = DEPLOY / "examples" / "subservice-pvc.yaml"
EXAMPLE_SERVICE = "network"
SERVICE = "gpu"
WORKER = f"reckon-{SERVICE}"


@functools.cache
def rendered(name: str, workdir: Path) -> str:
    """Overlay ``name`` of a copy of deploy/ whose base lists the example as ``<service>.yaml``."""
    copy = workdir / "deploy"
    if not copy.exists():
        shutil.copytree(DEPLOY, copy)
        text = EXAMPLE.read_text(encoding="utf-8")
        renamed = text.replace(EXAMPLE_SERVICE, SERVICE).replace(EXAMPLE_SERVICE.upper(), SERVICE.upper())
        (copy / "base" / f"{SERVICE}.yaml").write_text(renamed, encoding="utf-8")
        kustomization = copy / "base" / "kustomization.yaml"
        loaded: dict[str, Any] = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
        loaded["resources"].append(f"{SERVICE}.yaml")
        kustomization.write_text(yaml.safe_dump(loaded, sort_keys=False), encoding="utf-8")
    return kustomize(copy / "overlays" / name)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("subservice-example")


def manifests_of(name: str, workdir: Path) -> list[Manifest]:
    return load_all(rendered(name, workdir))


def test_the_runbook_points_at_the_example() -> None:
    assert "deploy/examples/subservice-pvc.yaml" in (DEPLOY / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("version", [MINIMUM_KUBERNETES, NEWEST_KUBERNETES])
@pytest.mark.parametrize("name", OVERLAYS)
def test_with_the_example_in_the_base_every_object_is_valid_kubernetes(
    name: str, version: str, workdir: Path, tmp_path: Path
) -> None:
    text = rendered(name, workdir)
    manifests = tmp_path / f"{name}.yaml"
    manifests.write_text(text, encoding="utf-8")

    code, report = validate(manifests, version)

    assert code == 0, f"overlay {name} with the example, Kubernetes {version}:\n{report}"
    assert_all_valid(load_all(text), report)
    assert f"deployment/{WORKER} " in report and f"persistentvolumeclaim/{WORKER}-store " in report


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_new_worker_has_one_replica_on_its_own_read_write_once_claim_and_is_recreated(
    name: str, workdir: Path
) -> None:
    manifests = manifests_of(name, workdir)
    worker = named(manifests, "Deployment", WORKER)
    spec = pod_spec(worker)
    [container] = containers(spec, init=False)

    assert worker["spec"]["replicas"] == 1
    assert worker["spec"]["strategy"] == {"type": "Recreate"}, "an RWO volume cannot surge a second pod"
    assert container["args"] == ["worker", SERVICE]

    store = env_value(container, f"RECKON_{SERVICE.upper()}_DB")
    assert store is not None
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    store_volume = volumes[mounts[str(Path(store).parent)]]
    assert "emptyDir" not in store_volume, "an emptyDir store answers every account with no usage"
    claim = named(manifests, "PersistentVolumeClaim", store_volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["metadata"]["namespace"] == worker["metadata"]["namespace"]

    secret, key = secret_key_refs(container)["AMQP_URL"]
    assert re.sub(r"-[a-z0-9]{10}$", "", secret) == f"reckon-{SERVICE}-credentials" and key == "AMQP_URL"
    [budget] = [
        b
        for b in of_kind(manifests, "PodDisruptionBudget")
        if b["spec"]["selector"]["matchLabels"].items() <= pod_template(worker)["metadata"]["labels"].items()
    ]
    assert budget["spec"]["maxUnavailable"] == 1, "a drain may evict the one pod"


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_new_worker_is_otherwise_a_copy_of_compute(name: str, workdir: Path) -> None:
    manifests = manifests_of(name, workdir)
    compute, worker = named(manifests, "Deployment", "reckon-compute"), named(manifests, "Deployment", WORKER)
    [theirs] = containers(pod_spec(compute), init=False)
    [ours] = containers(pod_spec(worker), init=False)

    assert config_maps_mounted(pod_spec(worker)) == config_maps_mounted(pod_spec(compute))
    assert ours["image"] == theirs["image"]
    for key in ("ports", "startupProbe", "readinessProbe", "livenessProbe", "securityContext", "resources"):
        assert ours[key] == theirs[key], key
    for key in ("securityContext", "serviceAccountName", "automountServiceAccountToken"):
        assert pod_spec(worker)[key] == pod_spec(compute)[key], key
    assert env_value(ours, "RECKON_CONFIG") == env_value(theirs, "RECKON_CONFIG")
    assert pod_template(worker)["metadata"]["labels"]["app.kubernetes.io/part-of"] == "reckon"
