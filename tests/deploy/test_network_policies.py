"""deploy/'s NetworkPolicies, evaluated on the rendered overlays without a cluster.

A small evaluator of the NetworkPolicy semantics (podSelector, namespaceSelector, ipBlock, ports,
policyTypes; a connection needs the source's egress and the destination's ingress) decides, for
every pod an overlay runs, what it may reach: what its environment says it connects to (the broker
of AMQP_URL, the database of RECKON_STORE_URL, DNS), and nothing else; and who may reach it (the
monitoring namespace on its metrics port, and in dev Reckon's pods on the broker and the database).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.tools import (
    OVERLAYS,
    Manifest,
    containers,
    name_of,
    named,
    of_kind,
    overlay,
    pod_spec,
    pod_template,
    secret_key_refs,
    workloads,
)

MONITORING_NAMESPACE = "monitoring"
METRICS_PORT = 8080
BROKER_PORTS = (5672, 5671)  # AMQP, AMQPS
DATABASE_PORT = 5432


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, int] = field(default_factory=dict)
    """Named container ports (what a NetworkPolicy's named port resolves to)."""


@dataclass(frozen=True)
class External:
    """An address outside the cluster's pods (a managed broker or database, the API server)."""

    ip: str


Endpoint = Pod | External

KUBE_DNS = Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53, "dns-tcp": 53})
PROMETHEUS = Pod("prometheus-k8s-0", MONITORING_NAMESPACE, {"app.kubernetes.io/name": "prometheus"})
ELSEWHERE = Pod("curious", "default", {"app": "curious"})
# Production's broker and database are outside the cluster (documentation addresses, RFC 5737).
PROD_BROKER = External("203.0.113.10")
PROD_DATABASE = External("203.0.113.20")
API_SERVER = External("10.96.0.1")
INTERNET = External("198.51.100.7")


def is_reckon(workload: Manifest) -> bool:
    labels: dict[str, str] = pod_template(workload)["metadata"].get("labels", {})
    return labels.get("app.kubernetes.io/part-of") == "reckon"


def secret_data(manifests: list[Manifest], name: str) -> dict[str, str]:
    secret = named(manifests, "Secret", name)
    return {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}


def namespace_labels(namespace: str) -> dict[str, str]:
    """The label every namespace carries since Kubernetes 1.22."""
    return {"kubernetes.io/metadata.name": namespace}


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector: {} selects everything."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def policy_types(policy: Manifest) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress"] + (["Egress"] if "egress" in spec else [])


def peer_matches(peer: Mapping[str, Any], policy_namespace: str, endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        if not isinstance(endpoint, External):
            return False  # pod addresses are not modelled: Reckon's policies never name them by CIDR
        address = ipaddress.ip_address(endpoint.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(excepted) for excepted in block.get("except", [])
        )
    if not isinstance(endpoint, Pod):
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], namespace_labels(endpoint.namespace)):
            return False
    elif endpoint.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), endpoint.labels)


def port_matches(ports: Sequence[Mapping[str, Any]], protocol: str, port: int, destination: Endpoint) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            if isinstance(destination, Pod) and destination.ports.get(wanted) == port:
                return True
            continue
        if int(wanted) <= port <= int(entry.get("endPort", wanted)):
            return True
    return False


def applying(policies: Sequence[Manifest], pod: Pod, direction: str) -> list[Manifest]:
    return [
        policy
        for policy in policies
        if policy["metadata"]["namespace"] == pod.namespace
        and direction in policy_types(policy)
        and selects(policy["spec"]["podSelector"], pod.labels)
    ]


def egress_allowed(
    policies: Sequence[Manifest], source: Pod, destination: Endpoint, protocol: str, port: int
) -> bool:
    selecting = applying(policies, source, "Egress")
    if not selecting:
        return True
    return any(
        port_matches(rule.get("ports", []), protocol, port, destination)
        and (
            "to" not in rule or any(peer_matches(peer, source.namespace, destination) for peer in rule["to"])
        )
        for policy in selecting
        for rule in policy["spec"].get("egress", [])
    )


def ingress_allowed(
    policies: Sequence[Manifest], destination: Pod, source: Endpoint, protocol: str, port: int
) -> bool:
    selecting = applying(policies, destination, "Ingress")
    if not selecting:
        return True
    return any(
        port_matches(rule.get("ports", []), protocol, port, destination)
        and (
            "from" not in rule
            or any(peer_matches(peer, destination.namespace, source) for peer in rule["from"])
        )
        for policy in selecting
        for rule in policy["spec"].get("ingress", [])
    )


def connects(
    policies: Sequence[Manifest], source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    """Whether a connection passes the source's egress and the destination's ingress policies (pods
    of other namespaces, kube-dns or Prometheus, have no policy of these manifests)."""
    if isinstance(source, Pod) and not egress_allowed(policies, source, destination, protocol, port):
        return False
    return not (
        isinstance(destination, Pod) and not ingress_allowed(policies, destination, source, protocol, port)
    )


# --- the overlays' pods ---


def pod_of(workload: Manifest) -> Pod:
    labels: dict[str, str] = pod_template(workload)["metadata"].get("labels", {})
    ports = {
        port["name"]: int(port["containerPort"])
        for container in containers(pod_spec(workload))
        for port in container.get("ports", [])
        if "name" in port
    }
    return Pod(name_of(workload), workload["metadata"]["namespace"], labels, ports)


def pods(manifests: list[Manifest]) -> dict[str, Pod]:
    return {name_of(workload): pod_of(workload) for workload in workloads(manifests)}


def reckon_workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [workload for workload in workloads(manifests) if is_reckon(workload)]


def connects_to(workload: Manifest) -> set[str]:
    """What a workload's environment says it connects to: "broker" (AMQP_URL), "database"
    (RECKON_STORE_URL)."""
    needs: set[str] = set()
    for container in containers(pod_spec(workload), init=False):
        refs = secret_key_refs(container)
        if "AMQP_URL" in refs:
            needs.add("broker")
        if "RECKON_STORE_URL" in refs:
            needs.add("database")
    return needs


def in_cluster_backend(manifests: list[Manifest], url: str) -> tuple[Pod, int]:
    """The pod and container port a URL's host:port reaches through a Service of the overlay (dev)."""
    parts = urlsplit(url)
    service = named(manifests, "Service", str(parts.hostname))
    [service_port] = [p for p in service["spec"]["ports"] if p["port"] == parts.port]
    backends = [
        workload
        for workload in workloads(manifests)
        if selects({"matchLabels": service["spec"]["selector"]}, pod_of(workload).labels)
    ]
    [backend] = backends
    pod = pod_of(backend)
    target = service_port.get("targetPort", service_port["port"])
    return pod, pod.ports[target] if isinstance(target, str) else int(target)


def destinations(manifests: list[Manifest], workload: Manifest, need: str) -> list[tuple[Endpoint, int]]:
    """Where a workload's broker or database is: in dev the pod behind the URL's Service, in prod
    (credentials out of band, services outside the cluster) an external address on each port."""
    variable = "AMQP_URL" if need == "broker" else "RECKON_STORE_URL"
    secrets = {name_of(secret) for secret in of_kind(manifests, "Secret")}
    for container in containers(pod_spec(workload), init=False):
        ref = secret_key_refs(container).get(variable)
        if ref is not None and ref[0] in secrets:
            url = secret_data(manifests, ref[0])[ref[1]]
            return [in_cluster_backend(manifests, url)]
    if need == "broker":
        return [(PROD_BROKER, port) for port in BROKER_PORTS]
    return [(PROD_DATABASE, DATABASE_PORT)]


def policies_of(name: str) -> list[Manifest]:
    return of_kind(overlay(name).manifests, "NetworkPolicy")


# --- the tests ---


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_pod_of_the_namespace_is_denied_by_default_both_ways(name: str) -> None:
    manifests = overlay(name).manifests
    [default_deny] = [
        p
        for p in of_kind(manifests, "NetworkPolicy")
        if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]
    assert set(policy_types(default_deny)) == {"Ingress", "Egress"}
    for pod in pods(manifests).values():
        assert applying([default_deny], pod, "Ingress") and applying([default_deny], pod, "Egress"), pod.name


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_pod_resolves_names(name: str) -> None:
    policies = policies_of(name)
    for pod in pods(overlay(name).manifests).values():
        for protocol in ("UDP", "TCP"):
            assert connects(policies, pod, KUBE_DNS, 53, protocol), f"{pod.name}: no DNS over {protocol}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_each_reckon_pod_reaches_exactly_the_broker_and_database_its_environment_names(name: str) -> None:
    manifests = overlay(name).manifests
    policies = policies_of(name)
    reckon = reckon_workloads(manifests)
    assert {name_of(w) for w in reckon} >= {
        "reckon-coordinator",
        "reckon-compute",
        "reckon-storage",
        "reckon-close-period",
    }
    database = destinations(manifests, named(manifests, "Deployment", "reckon-coordinator"), "database")
    for workload in reckon:
        pod = pod_of(workload)
        needs = connects_to(workload)
        assert "broker" in needs, f"{pod.name} talks to the broker"
        for endpoint, port in destinations(manifests, workload, "broker"):
            assert connects(policies, pod, endpoint, port), f"{pod.name} cannot reach the broker on {port}"
        for endpoint, port in database:
            reaches = connects(policies, pod, endpoint, port)
            if "database" in needs:
                assert reaches, f"{pod.name} cannot reach the database"
            else:
                assert not reaches, f"{pod.name} has no database credentials and must not reach the database"
        for elsewhere, port in (
            (INTERNET, 443),
            (INTERNET, 80),
            (API_SERVER, 443),
            (ELSEWHERE, METRICS_PORT),
        ):
            assert not connects(policies, pod, elsewhere, port), f"{pod.name} reaches {elsewhere}:{port}"


def test_the_roles_connect_as_the_task_says() -> None:
    for name in OVERLAYS:
        manifests = overlay(name).manifests
        assert connects_to(named(manifests, "Deployment", "reckon-coordinator")) == {"broker", "database"}
        assert connects_to(named(manifests, "Deployment", "reckon-compute")) == {"broker"}
        assert connects_to(named(manifests, "Deployment", "reckon-storage")) == {"broker"}
        assert connects_to(named(manifests, "CronJob", "reckon-close-period")) == {"broker"}
    assert connects_to(named(overlay("dev").manifests, "Deployment", "reckon-network")) == {"broker"}


@pytest.mark.parametrize("name", OVERLAYS)
def test_metrics_are_reachable_from_the_monitoring_namespace_only(name: str) -> None:
    manifests = overlay(name).manifests
    policies = policies_of(name)
    served = [pod for pod in pods(manifests).values() if METRICS_PORT in pod.ports.values()]
    assert {pod.name for pod in served} >= {"reckon-coordinator", "reckon-compute", "reckon-storage"}
    neighbour = Pod("debug", served[0].namespace, {"run": "debug"})
    for pod in served:
        assert connects(policies, PROMETHEUS, pod, METRICS_PORT), f"Prometheus cannot scrape {pod.name}"
        assert not connects(policies, PROMETHEUS, pod, 9090), f"{pod.name}: only the metrics port is open"
        for stranger in (ELSEWHERE, neighbour):
            assert not connects(policies, stranger, pod, METRICS_PORT), f"{stranger.name} reaches {pod.name}"
        for other in pods(manifests).values():
            if other != pod:
                assert not connects(policies, other, pod, METRICS_PORT), f"{other.name} reaches {pod.name}"


def test_dev_broker_and_database_are_reachable_by_reckon_and_nothing_else() -> None:
    manifests = overlay("dev").manifests
    policies = policies_of("dev")
    everything = pods(manifests)
    rabbitmq, postgres = everything["rabbitmq"], everything["postgres"]
    reckon = {name_of(w) for w in reckon_workloads(manifests)}
    assert reckon >= {
        "reckon-coordinator",
        "reckon-compute",
        "reckon-storage",
        "reckon-close-period",
        "reckon-payments",
    }

    for pod_name in reckon:
        pod = everything[pod_name]
        assert connects(policies, pod, rabbitmq, rabbitmq.ports["amqp"]), f"{pod_name} cannot reach RabbitMQ"
        assert not connects(policies, pod, rabbitmq, rabbitmq.ports["management"]), pod_name
        reaches_database = connects(policies, pod, postgres, postgres.ports["postgres"])
        assert reaches_database == (pod_name == "reckon-coordinator"), pod_name
    for infrastructure in (rabbitmq, postgres):
        for port in infrastructure.ports.values():
            assert not connects(policies, ELSEWHERE, infrastructure, port), infrastructure.name
            assert not connects(policies, PROMETHEUS, infrastructure, port), infrastructure.name
        # They need nothing but DNS (their own hostname): no other way out.
        assert not connects(policies, infrastructure, INTERNET, 443), infrastructure.name
    assert not connects(policies, rabbitmq, postgres, postgres.ports["postgres"])


def test_prod_brings_no_policy_for_a_broker_or_database_it_does_not_run() -> None:
    names = {name_of(policy) for policy in policies_of("prod")}
    assert names == {
        "reckon-default-deny",
        "reckon-allow-dns-egress",
        "reckon-allow-broker-egress",
        "reckon-coordinator-allow-database-egress",
        "reckon-allow-metrics-ingress",
    }


def test_the_evaluator_follows_the_networkpolicy_rules() -> None:
    """The evaluator itself, on small cases: isolation only once a policy selects a pod, peers
    scoped to the policy's namespace, namespaceSelector, ipBlock with except, named ports."""
    web = Pod("web", "a", {"app": "web"}, {"http": 8080})
    client = Pod("client", "a", {"app": "client"})

    def policy(spec: dict[str, Any], namespace: str = "a") -> Manifest:
        return {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": namespace}, "spec": spec}

    assert connects([], client, web, 8080), "nothing selects them: not isolated"
    ingress = policy(
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": "http"}]}],
        }
    )
    assert connects([ingress], client, web, 8080)
    assert not connects([ingress], client, web, 9090)
    assert not connects([ingress], Pod("x", "b", {}), web, 8080), "podSelector alone: the policy's namespace"
    across = policy(
        {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": namespace_labels("b")}}]}],
        }
    )
    assert connects([across], Pod("x", "b", {}), web, 1)
    assert not connects([across], Pod("x", "c", {}), web, 1)
    egress = policy(
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.20/32"]}}]}],
        }
    )
    assert connects([egress], client, PROD_BROKER, 5671)
    assert not connects([egress], client, PROD_DATABASE, 5432)
    assert not connects([egress], client, web, 8080)
    assert selects({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, web.labels)
    assert not selects({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, web.labels)
