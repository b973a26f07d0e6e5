"""The broker users and permissions of deploy/dev-infra/rabbitmq/definitions.json (compose and dev).

Each role's AMQP operations are derived from the real topology (contracts/topology.py) and checked
against its permission regexes the way RabbitMQ does (docs: access-control, "How Permissions
Work"): configure to declare, write to publish and to bind a queue (on the queue), read to consume
and to bind (on the exchange); declaring a queue with a dead-letter exchange also needs read on
the queue and write on the DLX (so the deployed coordinator leaves the DLX to a broker policy); the
default exchange is checked as `amq.default`; a server-named
queue is `amq.gen-...`, and aio-pika's robust channel names an anonymous queue itself,
`amq_<uuid hex>` (so it can declare it again after a reconnect): the coordinator's reply queue.
Each role must be able to do what it does and nothing it must not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal

import pytest

from contracts import Topology
from contracts.topology import ExchangeSpec, QueueSpec
from tests.deploy.tools import all_service_users, all_services, definitions, is_demo_password

Permission = Literal["configure", "write", "read"]
Operation = tuple[Permission, str]

VHOST = "reckon"
DEFAULT_EXCHANGE = "amq.default"
SERVER_NAMED = "amq.gen-JzTY20BRgKO-HjmUJj0wLg"
CLIENT_NAMED = "amq_7779ed609acf4b0c9aaaf1897ec30168"  # aio_pika.RobustChannel.declare_queue("")
REPLY_QUEUES = (SERVER_NAMED, CLIENT_NAMED)
TOPOLOGY = Topology("")  # the permissions are written for RECKON_NAMESPACE = ""


def permitted(user: str, permission: Permission, resource: str) -> bool:
    [entry] = [p for p in definitions()["permissions"] if p["user"] == user and p["vhost"] == VHOST]
    pattern = entry[permission] or "^$"  # RabbitMQ: the empty string is a synonym for '^$'
    return re.search(pattern, resource) is not None  # Erlang re:run: a search, anchored only by ^ and $


def declare_exchange(exchange: ExchangeSpec) -> Iterator[Operation]:
    yield "configure", exchange.name


def declare_and_bind(queue: QueueSpec) -> Iterator[Operation]:
    yield "configure", queue.name
    dead_letter_exchange = queue.dead_letter_exchange
    if dead_letter_exchange is not None:
        yield "read", queue.name
        yield "write", dead_letter_exchange
    yield "write", queue.name  # queue.bind
    yield "read", queue.exchange.name


def coordinator_operations() -> Iterator[Operation]:
    # As deployed (dead_letters = "policy"): a broker policy names the dead-letter exchange, the
    # queues are declared without it (tests/deploy/test_dead_letter_permissions.py).
    for exchange in TOPOLOGY.exchanges():
        yield from declare_exchange(exchange)
    for queue in (
        TOPOLOGY.period_closed_queue,
        TOPOLOGY.payments_queue,
        TOPOLOGY.corrections_queue,
        TOPOLOGY.dead_letters_queue,
    ):
        yield from declare_and_bind(queue.for_policy())
    for service in services():  # it declares each configured service's request queue
        yield from declare_and_bind(TOPOLOGY.usage_queue(service).for_policy())
    yield "read", TOPOLOGY.period_closed_queue.name  # takes PeriodClosed
    for reply_queue in REPLY_QUEUES:  # its exclusive reply queue
        yield "configure", reply_queue
        yield "read", reply_queue
    for exchange in (TOPOLOGY.usage, TOPOLOGY.invoices, TOPOLOGY.reports):
        yield "write", exchange.name  # UsageRequest; InvoiceIssued; ReportCompleted/Aborted


def worker_operations(service: str) -> Iterator[Operation]:
    # Its queue is declared and bound by the coordinator; the worker looks it up (a passive
    # declare needs no permission) and consumes it.
    yield "read", TOPOLOGY.usage_queue(service).name
    yield "write", DEFAULT_EXCHANGE  # replies to the coordinator's reply queue


def payments_operations() -> Iterator[Operation]:
    yield "read", TOPOLOGY.payments_queue.name
    yield "read", TOPOLOGY.corrections_queue.name


def operator_operations() -> Iterator[Operation]:
    yield "read", TOPOLOGY.dead_letters_queue.name  # `reckon dlq`: a passive declare needs nothing more


def scheduler_operations() -> Iterator[Operation]:
    yield "write", TOPOLOGY.periods.name  # PeriodClosed; it declares nothing of the topology
    # `close-period --wait`: a server-named listener bound to the reports exchange.
    for listener in REPLY_QUEUES:
        yield "configure", listener
        yield "write", listener
        yield "read", listener
    yield "read", TOPOLOGY.reports.name


def services() -> list[str]:
    """config/reckon.toml's services and those an opt-in component adds (network-usage): each
    needs its broker user, whether or not an overlay includes the component."""
    return all_services()


def service_user(service: str) -> str:
    return all_service_users()[service]


def roles() -> dict[str, list[Operation]]:
    needed = {
        "reckon-coordinator": list(coordinator_operations()),
        "reckon-payments": list(payments_operations()),
        "reckon-scheduler": list(scheduler_operations()),
        "reckon-operator": list(operator_operations()),
    }
    for service in services():
        needed[service_user(service)] = list(worker_operations(service))
    return needed


def test_every_user_is_in_the_reckon_vhost_with_a_demo_password() -> None:
    defined = definitions()
    assert [vhost["name"] for vhost in defined["vhosts"]] == [VHOST]
    users = {user["name"]: user for user in defined["users"]}
    assert set(users) == {"reckon-admin", *roles()}
    for name, user in users.items():
        assert is_demo_password(user["password"]), f"{name}: committed passwords say they are demo values"
        assert "password_hash" not in user
        assert (user["tags"] == "administrator") == (name == "reckon-admin"), f"{name}: management access"
    granted = [(p["user"], p["vhost"]) for p in defined["permissions"]]
    assert sorted(granted) == sorted((name, VHOST) for name in users)


@pytest.mark.parametrize("user", sorted(roles()))
def test_each_role_may_do_what_it_does(user: str) -> None:
    missing = [
        (permission, resource)
        for permission, resource in roles()[user]
        if not permitted(user, permission, resource)
    ]
    assert not missing, f"{user} would be refused: {missing}"


def others_usage_queues(service: str) -> list[str]:
    return [TOPOLOGY.usage_queue(other).name for other in [*services(), "gpu"] if other != service]


# What a role must never be able to do: each would let a broken or compromised process forge or
# steal what another role owns.
@pytest.mark.parametrize(
    ("user", "permission", "resource"),
    [
        *[
            (role, permission, resource)
            for role in ("reckon-coordinator", "reckon-scheduler", "reckon-payments")
            for permission, resource in [("write", DEFAULT_EXCHANGE)]
        ],
        *[
            (role, permission, resource)
            for role in ("reckon-scheduler", "reckon-payments")
            for permission, resource in [("read", TOPOLOGY.usage_queue("compute").name)]
        ],
        # Nobody writes to the dead-letter exchange: the broker dead-letters by policy.
        *[
            (role, "write", TOPOLOGY.dead_letter_exchange.name)
            for role in ("reckon-coordinator", "reckon-scheduler", "reckon-payments")
        ],
        ("reckon-scheduler", "configure", TOPOLOGY.periods.name),
        ("reckon-scheduler", "configure", TOPOLOGY.period_closed_queue.name),
        ("reckon-coordinator", "write", TOPOLOGY.periods.name),
        ("reckon-scheduler", "write", TOPOLOGY.invoices.name),
        ("reckon-scheduler", "write", TOPOLOGY.usage.name),
        ("reckon-scheduler", "read", TOPOLOGY.payments_queue.name),
        ("reckon-payments", "configure", CLIENT_NAMED),
        ("reckon-coordinator", "configure", "amq_not-a-uuid"),
        ("reckon-scheduler", "configure", "amq_not-a-uuid"),
        ("reckon-payments", "configure", TOPOLOGY.payments_queue.name),
        ("reckon-payments", "write", TOPOLOGY.invoices.name),
        ("reckon-payments", "read", TOPOLOGY.period_closed_queue.name),
    ],
)
def test_no_role_may_do_what_another_owns(user: str, permission: Permission, resource: str) -> None:
    assert not permitted(user, permission, resource)


@pytest.mark.parametrize("service", services())
def test_a_sub_service_touches_only_its_own_queue(service: str) -> None:
    user = service_user(service)
    forbidden: list[Operation] = [
        ("write", TOPOLOGY.invoices.name),
        ("write", TOPOLOGY.reports.name),
        ("write", TOPOLOGY.periods.name),
        ("write", TOPOLOGY.usage.name),  # it cannot send usage requests to itself or others
        # It cannot delete or redeclare the exchanges others use, nor bind any queue to them.
        *[("configure", exchange.name) for exchange in TOPOLOGY.exchanges()],
        ("configure", TOPOLOGY.usage_queue(service).name),
        ("write", TOPOLOGY.usage_queue(service).name),
        ("read", TOPOLOGY.usage.name),
        ("write", TOPOLOGY.dead_letter_exchange.name),
        ("read", TOPOLOGY.payments_queue.name),
        ("read", TOPOLOGY.period_closed_queue.name),
        ("configure", TOPOLOGY.payments_queue.name),
        ("configure", SERVER_NAMED),
        ("configure", CLIENT_NAMED),
        ("read", CLIENT_NAMED),
        *[
            (permission, queue)
            for queue in others_usage_queues(service)
            for permission in ("configure", "read")
        ],
        *[("write", queue) for queue in others_usage_queues(service)],
    ]
    allowed = [
        (permission, resource) for permission, resource in forbidden if permitted(user, permission, resource)
    ]
    assert not allowed, f"{user} may {allowed}"


def test_no_service_user_answers_for_two_services() -> None:
    users = [service_user(service) for service in services()]
    assert len(set(users)) == len(users)
    assert not {"reckon-coordinator", "reckon-payments", "reckon-scheduler"} & set(users)
