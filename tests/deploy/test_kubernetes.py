"""deploy/: every overlay rendered by the real `kubectl kustomize` and checked object by object."""

from __future__ import annotations

import base64
import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.tools import (
    DEPLOY,
    OVERLAYS,
    ROOT,
    Manifest,
    component_coordinator_env,
    config_maps_mounted,
    containers,
    coordinator_env,
    credentials,
    definitions,
    deploy_config,
    effective_service_users,
    effective_services,
    env_value,
    is_custom_resource,
    is_demo_password,
    kustomize,
    load_all,
    name_of,
    named,
    of_kind,
    overlay,
    pod_spec,
    pod_template,
    repo_config,
    run,
    secret_key_refs,
    secrets_referenced,
    tool,
    vhost,
    workloads,
)

# The oldest Kubernetes minor still commonly run, and the newest kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

# Sub-services in the services list whose Deployment is not in deploy/ (run by their own team).
DEPLOYED_ELSEWHERE: frozenset[str] = frozenset()

# Workers whose store is a SQLite file on a ReadWriteOnce claim: one replica, recreated rather than
# rolled (deploy/examples/subservice-pvc.yaml), so exempt from "rolls without losing a replica".
RECREATED: frozenset[str] = frozenset({"reckon-network"})

COORDINATOR = "reckon-coordinator"
CRONJOB = "reckon-close-period"
DEFAULT_SHUTDOWN_GRACE_SECONDS = 10


def secret_data(manifests: list[Manifest], name: str) -> dict[str, str]:
    secret = named(manifests, "Secret", name)
    decoded = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
    return decoded | dict(secret.get("stringData", {}))


def is_reckon(manifest: Manifest) -> bool:
    labels: dict[str, str] = pod_template(manifest).get("metadata", {}).get("labels", {})
    return labels.get("app.kubernetes.io/part-of") == "reckon"


def generator_name(name: str) -> str:
    """The name before kustomize's hash suffix (dev generates its Secrets; prod names them as they are)."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def service_users() -> dict[str, str]:
    """Which broker user answers for each service, from the deployed coordinator config."""
    users: dict[str, str] = deploy_config()["service_users"]
    return users


def dockerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE)
    return int(users[-1].split(":")[0])


# --- the real tools ---


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", OVERLAYS)
def test_every_object_of_the_overlay_is_valid_kubernetes(name: str, version: str, tmp_path: Path) -> None:
    rendered = overlay(name)
    manifests = tmp_path / f"{name}.yaml"
    manifests.write_text(rendered.text, encoding="utf-8")

    completed = run([tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, manifests])

    report = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"overlay {name} against Kubernetes {version}:\n{report}"
    passed = re.findall(r"passed for resource (\S+)", report)
    # Custom resources have no schema here (kubernetes-validate warns): test_monitoring.py checks them.
    custom = [m for m in rendered.manifests if is_custom_resource(m)]
    assert len(passed) == len(rendered.manifests) - len(custom), f"not every object was validated:\n{report}"
    unknown = set(re.findall(r"Couldn't find schema for kind (\S+) with api version (\S+)", report))
    assert unknown == {(m["kind"], m["apiVersion"]) for m in custom}, report


def test_the_base_renders_on_its_own() -> None:
    manifests = load_all(kustomize(DEPLOY / "base"))

    assert {name_of(m) for m in of_kind(manifests, "Deployment")} == {
        COORDINATOR,
        "reckon-compute",
        "reckon-storage",
    }
    assert not of_kind(manifests, "Secret"), "the base never carries credentials"


def test_each_overlay_holds_what_the_runbook_says() -> None:
    dev, prod = overlay("dev").manifests, overlay("prod").manifests

    assert {name_of(m) for m in of_kind(dev, "Deployment")} == {
        COORDINATOR,
        "reckon-compute",
        "reckon-storage",
        "reckon-network",
        "reckon-payments",
    }
    assert {name_of(m) for m in of_kind(dev, "StatefulSet")} == {"rabbitmq", "postgres"}
    assert {name_of(m) for m in of_kind(prod, "Deployment")} == {
        COORDINATOR,
        "reckon-compute",
        "reckon-storage",
    }
    assert not of_kind(prod, "StatefulSet"), "prod brings no broker or database of its own"
    for rendered in (overlay("dev"), overlay("prod")):
        assert [name_of(m) for m in of_kind(rendered.manifests, "CronJob")] == [CRONJOB]
    assert {m["metadata"].get("namespace") for m in dev if m["kind"] != "Namespace"} == {"reckon-dev"}
    assert {m["metadata"].get("namespace") for m in prod if m["kind"] != "Namespace"} == {"reckon"}


# --- rollouts, probes, resources, disruption ---


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_deployment_rolls_without_losing_a_replica(name: str) -> None:
    for deployment in of_kind(overlay(name).manifests, "Deployment"):
        strategy = deployment["spec"].get("strategy", {})
        if name_of(deployment) in RECREATED:
            assert_recreated_on_its_own_claim(overlay(name).manifests, deployment)
            continue
        assert strategy.get("type") == "RollingUpdate", name_of(deployment)
        assert strategy["rollingUpdate"].get("maxUnavailable") in (0, "0%"), name_of(deployment)
        assert strategy["rollingUpdate"].get("maxSurge") not in (None, 0, "0%"), name_of(deployment)


def assert_recreated_on_its_own_claim(manifests: list[Manifest], deployment: Manifest) -> None:
    """One replica on a ReadWriteOnce claim, stopped before its successor starts: a rolling update's
    new pod would wait for the volume forever (Multi-Attach)."""
    where = name_of(deployment)
    assert deployment["spec"]["replicas"] == 1, where
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, where
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(deployment)["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims, f"{where} is recreated but has no claim"
    for claim in claims:
        assert named(manifests, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"], (
            where
        )


def http_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert numbers, f"probe port {port!r} names no port of container {container['name']}"
    return int(numbers[0])


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_deployment_is_probed_on_healthz_and_readyz(name: str) -> None:
    for deployment in of_kind(overlay(name).manifests, "Deployment"):
        for container in containers(pod_spec(deployment), init=False):
            where = f"{name_of(deployment)}/{container['name']}"
            kinds = ("readinessProbe", "livenessProbe", "startupProbe")
            assert all(kind in container for kind in kinds), f"{where} lacks one of {kinds}"
            probes: dict[str, dict[str, Any]] = {kind: container[kind] for kind in kinds}
            assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz", where
            assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz", where
            assert probes["startupProbe"]["httpGet"]["path"] == "/startupz", where
            served = int(env_value(container, "RECKON_HTTP_PORT") or 8080)
            for probe in probes.values():
                assert http_port(container, probe) == served, f"{where} probes a port it does not serve"


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_container_has_resource_requests_and_limits(name: str) -> None:
    for workload in workloads(overlay(name).manifests):
        for container in containers(pod_spec(workload)):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), (
                    f"{name_of(workload)}/{container['name']} has no {bound} for cpu and memory"
                )


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_reckon_pod_runs_as_the_images_unprivileged_user(name: str) -> None:
    uid = dockerfile_uid()
    reckon = [workload for workload in workloads(overlay(name).manifests) if is_reckon(workload)]
    assert len(reckon) >= 4
    for workload in reckon:
        spec = pod_spec(workload)
        context = spec.get("securityContext", {})
        assert context.get("runAsNonRoot") is True, name_of(workload)
        assert context.get("runAsUser") == uid, f"{name_of(workload)} must run as the image's USER {uid}"
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", name_of(workload)
        assert spec.get("automountServiceAccountToken") is False, name_of(workload)
        for container in containers(spec):
            own = container.get("securityContext", {})
            where = f"{name_of(workload)}/{container['name']}"
            assert own.get("allowPrivilegeEscalation") is False, where
            assert own.get("readOnlyRootFilesystem") is True, where
            assert own.get("capabilities", {}).get("drop") == ["ALL"], where


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_deployment_has_a_disruption_budget_that_allows_a_drain(name: str) -> None:
    manifests = overlay(name).manifests
    budgets = of_kind(manifests, "PodDisruptionBudget")
    for deployment in of_kind(manifests, "Deployment"):
        labels = pod_template(deployment)["metadata"]["labels"]
        matching = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, f"{name_of(deployment)} needs exactly one PodDisruptionBudget"
        spec = matching[0]["spec"]
        replicas = deployment["spec"].get("replicas", 1)
        if "maxUnavailable" in spec:
            assert spec["maxUnavailable"] not in (0, "0%"), (
                f"{name_of(deployment)}: no eviction would ever pass"
            )
        else:
            assert spec["minAvailable"] < replicas, f"{name_of(deployment)}: no eviction would ever pass"


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_coordinator_is_given_its_shutdown_grace_before_sigkill(name: str) -> None:
    coordinator = named(overlay(name).manifests, "Deployment", COORDINATOR)
    spec = pod_spec(coordinator)
    [container] = containers(spec, init=False)
    grace = float(env_value(container, "RECKON_SHUTDOWN_GRACE_SECONDS") or DEFAULT_SHUTDOWN_GRACE_SECONDS)

    # The report in flight gets `grace`, then the relay's last flush up to `grace` again.
    assert spec["terminationGracePeriodSeconds"] >= 2 * grace + 5


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_cronjob_closes_last_month_at_00_30_utc_on_the_1st(name: str) -> None:
    cronjob = named(overlay(name).manifests, "CronJob", CRONJOB)
    spec = cronjob["spec"]
    [container] = containers(pod_spec(cronjob), init=False)

    assert spec["schedule"] == "30 0 1 * *"
    assert spec["timeZone"] in ("Etc/UTC", "UTC")
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0, "a late start must still run"
    assert container["args"][:2] == ["close-period", "--last-month"]
    assert "command" not in container, "the image's entrypoint (reckon) runs it"
    secret, key = secret_key_refs(container)["AMQP_URL"]
    assert (generator_name(secret), key) == ("reckon-scheduler-credentials", "AMQP_URL")


# --- the configuration ---


def coordinator_config(manifests: list[Manifest]) -> dict[str, tuple[str, str]]:
    """File name → (ConfigMap name, content) of what the coordinator sees in /etc/reckon."""
    coordinator = named(manifests, "Deployment", COORDINATOR)
    files: dict[str, tuple[str, str]] = {}
    for config_map in sorted(config_maps_mounted(pod_spec(coordinator))):
        for file, content in named(manifests, "ConfigMap", config_map).get("data", {}).items():
            assert file not in files, f"{file} is in two ConfigMaps"
            files[file] = (config_map, content)
    return files


@pytest.mark.parametrize("name", OVERLAYS)
def test_the_generated_config_maps_carry_the_repositorys_config_and_rate_card(name: str) -> None:
    manifests = overlay(name).manifests
    files = coordinator_config(manifests)
    [container] = containers(pod_spec(named(manifests, "Deployment", COORDINATOR)), init=False)
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}

    config_path = env_value(container, "RECKON_CONFIG")
    assert config_path == "/etc/reckon/reckon.toml" and "/etc/reckon" in mounts
    config_map, text = files["reckon.toml"]
    deployed = tomllib.loads(text)
    assert deployed["services"] == repo_config()["services"]
    for key, value in repo_config().items():
        assert deployed.get(key) == value, f"deploy/base/config/reckon.toml: {key} differs from config/"
    assert re.fullmatch(r"reckon-config-[a-z0-9]{10}", config_map), "generated, hashed name"

    # rate_card is relative, read beside reckon.toml: both files are in the same mounted directory.
    assert deployed["rate_card"] == "rate-card.toml"
    rate_card_map, rate_card = files["rate-card.toml"]
    assert rate_card == (ROOT / "config" / "rate-card.toml").read_text(encoding="utf-8")
    assert re.fullmatch(r"reckon-rate-card-[a-z0-9]{10}", rate_card_map)


def test_the_deployed_config_is_accepted_by_the_coordinators_settings() -> None:
    from accounting.runtime.settings import Settings, load_rate_card, load_settings

    if "service_users" not in Settings.model_fields:
        pytest.skip("service_users is not a coordinator setting yet (the Python side adds it)")
    settings = load_settings(DEPLOY / "base" / "config" / "reckon.toml")
    assert settings.services == tuple(repo_config()["services"])
    load_rate_card(settings.rate_card)


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_service_the_coordinator_asks_has_a_worker_and_its_own_broker_user(name: str) -> None:
    """What the rendered coordinator asks — RECKON_SERVICES (an opt-in component's) over the file's
    services — not only config/reckon.toml: each has a worker in the overlay and its own user, and
    RECKON_SERVICE_USERS names one for each (a service left out would be answered for by the
    coordinator's own user, so its real worker's replies would be refused)."""
    manifests = overlay(name).manifests
    [container] = containers(pod_spec(named(manifests, "Deployment", COORDINATOR)), init=False)
    env = coordinator_env(container)
    users = {user["name"] for user in definitions()["users"]}
    answering = effective_service_users(env)

    for service in effective_services(env):
        assert answering.get(service) in users, f"{name}: {service} has no broker user in service_users"
        assert answering[service] not in ("reckon-coordinator", "reckon-payments", "reckon-scheduler")
        if service in DEPLOYED_ELSEWHERE:
            continue
        worker = named(manifests, "Deployment", f"reckon-{service}")
        [worker_container] = containers(pod_spec(worker), init=False)
        assert worker_container["args"] == ["worker", service]
    assert set(answering) <= set(effective_services(env)), f"{name}: a user for a service nobody asks"


def test_an_opt_in_component_asks_the_bases_services_and_one_more() -> None:
    """RECKON_SERVICES and RECKON_SERVICE_USERS replace the file's lists: a component that sets them
    must repeat the base's, or including it would silently stop asking compute or storage."""
    base_services, base_users = tuple(deploy_config()["services"]), deploy_config()["service_users"]
    assert component_coordinator_env(), "network-usage patches the coordinator's services"
    for component, (services, users) in component_coordinator_env().items():
        assert services is not None and users is not None, f"{component} must set both lists"
        assert services[: len(base_services)] == base_services, component
        assert {k: v for k, v in users.items() if k in base_services} == base_users, component
        assert set(users) == set(services), component


def test_every_configured_service_has_a_worker_and_its_own_broker_user() -> None:
    users = {user["name"] for user in definitions()["users"]}
    for service in repo_config()["services"]:
        assert service_users().get(service) in users, f"{service} has no broker user in service_users"
        if service in DEPLOYED_ELSEWHERE:
            continue
        for name in OVERLAYS:
            worker = named(overlay(name).manifests, "Deployment", f"reckon-{service}")
            [container] = containers(pod_spec(worker), init=False)
            assert container["args"] == ["worker", service]


SERVICES_LINE = re.compile(r"^services = \[.*\]$", re.MULTILINE)


def edit(path: Path, change: str) -> None:
    text = path.read_text(encoding="utf-8")
    if change == "add a service":
        changed = SERVICES_LINE.sub('services = ["compute", "storage", "network"]', text)
    else:
        changed = text.replace('unit_price = "0.0320"', 'unit_price = "0.0330"')
    assert changed != text, f"could not {change} in {path}"
    path.write_text(changed, encoding="utf-8")


@pytest.mark.parametrize(
    ("file", "change", "generator"),
    [
        ("reckon.toml", "add a service", "reckon-config"),
        ("rate-card.toml", "change a price", "reckon-rate-card"),
    ],
)
@pytest.mark.parametrize("name", OVERLAYS)
def test_a_config_change_renames_its_config_map_and_rolls_the_pods_that_mount_it(
    name: str, file: str, change: str, generator: str, tmp_path: Path
) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    edit(copy / "base" / "config" / file, change)

    before = overlay(name).manifests
    after = load_all(kustomize(copy / "overlays" / name))

    def generated(manifests: list[Manifest]) -> str:
        [found] = [
            n for m in of_kind(manifests, "ConfigMap") if (n := name_of(m)).startswith(f"{generator}-")
        ]
        return found

    old, new = generated(before), generated(after)
    assert old != new, "the ConfigMap kept its name: nothing would roll"
    for workload in workloads(before):
        if workload["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "reckon":
            continue
        kind, workload_name = workload["kind"], name_of(workload)
        old_template = json.dumps(pod_template(workload), sort_keys=True)
        new_template = json.dumps(pod_template(named(after, kind, workload_name)), sort_keys=True)
        if old in config_maps_mounted(pod_spec(workload)):
            assert old_template != new_template, f"{workload_name} would not roll"
            assert old_template.replace(old, new) == new_template, f"{workload_name}: only the name changes"
        else:
            assert old_template == new_template, f"{workload_name} does not read {file} and must not roll"
    assert old in config_maps_mounted(pod_spec(named(before, "Deployment", COORDINATOR)))


# --- credentials ---


SECRET_NAMES = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY", re.IGNORECASE)


@pytest.mark.parametrize("name", OVERLAYS)
def test_no_credential_is_written_in_a_plain_environment_value(name: str) -> None:
    for workload in workloads(overlay(name).manifests):
        for container in containers(pod_spec(workload)):
            for variable in container.get("env", []):
                if "value" not in variable:
                    continue
                where = f"{name_of(workload)}/{container['name']} {variable['name']}"
                assert not SECRET_NAMES.search(variable["name"]), f"{where}: take it from a Secret"
                assert credentials(str(variable["value"]))[1] is None, f"{where}: a URL with a password"


def test_prod_commits_no_secret_and_names_each_one_it_needs_in_the_runbook() -> None:
    manifests = overlay("prod").manifests
    runbook = (DEPLOY / "README.md").read_text(encoding="utf-8")

    assert not of_kind(manifests, "Secret"), "prod Secrets are created out of band, never rendered"
    needed = set().union(*(secrets_referenced(pod_spec(w)) for w in workloads(manifests)))
    assert needed == {
        "reckon-coordinator-credentials",
        "reckon-compute-credentials",
        "reckon-storage-credentials",
        "reckon-scheduler-credentials",
    }
    for secret in needed:
        assert secret in runbook, f"deploy/README.md must say how to create {secret}"


def test_dev_secrets_hold_only_public_demo_values() -> None:
    manifests = overlay("dev").manifests
    secrets = of_kind(manifests, "Secret")
    assert secrets
    for secret in secrets:
        for key, value in secret_data(manifests, name_of(secret)).items():
            where = f"Secret {name_of(secret)} {key}"
            if key.endswith(".json"):
                for user in json.loads(value)["users"]:
                    assert is_demo_password(user["password"]), f"{where}: {user['name']}"
            elif "://" in value:
                password = credentials(value)[1]
                assert password is not None and is_demo_password(password), where
            else:
                assert is_demo_password(value), where


# Which broker user each workload connects as.
EXPECTED_USERS = {
    COORDINATOR: "reckon-coordinator",
    "reckon-payments": "reckon-payments",
    CRONJOB: "reckon-scheduler",
}


def test_dev_credentials_are_the_broker_and_database_users_the_dev_infra_creates() -> None:
    manifests = overlay("dev").manifests
    users = {user["name"]: user["password"] for user in definitions()["users"]}
    granted = {(p["user"], p["vhost"]) for p in definitions()["permissions"]}
    [coordinator] = containers(pod_spec(named(manifests, "Deployment", COORDINATOR)), init=False)
    answering = effective_service_users(coordinator_env(coordinator))
    workers = {f"reckon-{service}": user for service, user in answering.items()}
    services = {name_of(m) for m in of_kind(manifests, "Service")}

    connected = 0
    for workload in workloads(manifests):
        if not is_reckon(workload):
            continue
        for container in containers(pod_spec(workload), init=False):
            refs = secret_key_refs(container)
            url = secret_data(manifests, refs["AMQP_URL"][0])["AMQP_URL"]
            user, password = credentials(url)
            expected = EXPECTED_USERS.get(name_of(workload)) or workers[name_of(workload)]
            assert user == expected, f"{name_of(workload)} connects as {user}, not {expected}"
            assert password == users[expected]
            assert (expected, vhost(url)) in granted
            assert urlsplit(url).hostname in services
            connected += 1
            if "RECKON_STORE_URL" in refs:
                store = secret_data(manifests, refs["RECKON_STORE_URL"][0])["RECKON_STORE_URL"]
                postgres = named(manifests, "StatefulSet", "postgres")
                [database] = containers(pod_spec(postgres), init=False)
                password_ref = secret_key_refs(database)["POSTGRES_PASSWORD"]
                assert urlsplit(store).scheme == "postgresql+asyncpg"
                assert credentials(store) == (
                    env_value(database, "POSTGRES_USER"),
                    secret_data(manifests, password_ref[0])[password_ref[1]],
                )
                assert urlsplit(store).path == "/" + str(env_value(database, "POSTGRES_DB"))
                assert urlsplit(store).hostname in services
    assert connected == 6


# --- demo data and images ---


def seed_containers(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    seeds: dict[str, dict[str, Any]] = {}
    for workload in workloads(manifests):
        for container in pod_spec(workload).get("initContainers", []):
            if " seed" in " ".join(container.get("command", []) + container.get("args", [])):
                seeds[name_of(workload)] = container
    return seeds


def test_demo_data_and_the_reference_payment_consumer_stay_out_of_prod() -> None:
    prod = overlay("prod").manifests
    assert not seed_containers(prod), "prod must never bill made-up usage"
    for workload in workloads(prod):
        for container in containers(pod_spec(workload)):
            assert container.get("args", [None])[0] != "payments"


def test_dev_seeds_each_workers_own_store_before_it_starts() -> None:
    dev = overlay("dev").manifests
    seeds = seed_containers(dev)
    assert set(seeds) == {"reckon-compute", "reckon-storage", "reckon-network"}
    for workload_name, seed in seeds.items():
        service = workload_name.removeprefix("reckon-")
        variable = f"RECKON_{service.upper()}_DB"
        [worker] = containers(pod_spec(named(dev, "Deployment", workload_name)), init=False)
        store = env_value(worker, variable)
        assert store is not None and env_value(seed, variable) == store
        mount = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
        seed_mount = {m["mountPath"]: m["name"] for m in seed["volumeMounts"]}
        directory = str(Path(store).parent)
        assert mount.get(directory) is not None and seed_mount.get(directory) == mount[directory]
        assert seed["image"] == worker["image"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_one_image_runs_every_role(name: str) -> None:
    images = {
        container["image"]
        for workload in workloads(overlay(name).manifests)
        if is_reckon(workload)
        for container in containers(pod_spec(workload))
    }
    assert len(images) == 1, images
    [image] = images
    if name == "prod":
        assert "/" in image and not image.endswith((":latest", ":dev")) and ":" in image.rsplit("/", 1)[1]
