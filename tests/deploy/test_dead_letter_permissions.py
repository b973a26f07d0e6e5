"""Who may touch the dead letters, by deploy/dev-infra/rabbitmq/definitions.json: the operator reads
``billing.dead-letters`` and does nothing else; no client user, the coordinator included, may
publish to ``billing.dlx``, so nobody can plant a dead letter (the broker dead-letters with no
permission of the user that rejected). The coordinator can do without it because a broker policy,
not a queue argument, names the dead-letter exchange (``dead_letters = "policy"``): the policy must
cover every queue that dead-letters. ``tests/e2e/test_dlq_as_deployed.py`` tries the same on the
real broker."""

from __future__ import annotations

import re

import pytest

from tests.deploy.test_broker_permissions import (
    CLIENT_NAMED,
    DEFAULT_EXCHANGE,
    SERVER_NAMED,
    TOPOLOGY,
    Permission,
    permitted,
    services,
)
from tests.deploy.tools import definitions, deploy_config

OPERATOR = "reckon-operator"
# Write on the dead-letter exchange: the broker's own dead-lettering needs none, and the admin is
# the administrator.
MAY_WRITE_DEAD_LETTERS = {"reckon-admin"}


def queues() -> list[str]:
    return [
        TOPOLOGY.period_closed_queue.name,
        TOPOLOGY.payments_queue.name,
        TOPOLOGY.corrections_queue.name,
        *[TOPOLOGY.usage_queue(service).name for service in services()],
        SERVER_NAMED,
        CLIENT_NAMED,
    ]


def test_the_operator_has_a_demo_password_and_one_permissions_entry() -> None:
    [user] = [user for user in definitions()["users"] if user["name"] == OPERATOR]
    [entry] = [entry for entry in definitions()["permissions"] if entry["user"] == OPERATOR]
    assert user["password"] == "demo-operator-not-secret"
    assert user["tags"] == ""  # no management UI, no administrator
    assert entry["vhost"] == "reckon"


def test_the_operator_reads_the_dead_letters_and_does_nothing_else() -> None:
    assert permitted(OPERATOR, "read", TOPOLOGY.dead_letters_queue.name)
    exchanges = [exchange.name for exchange in TOPOLOGY.exchanges()]
    forbidden: list[tuple[Permission, str]] = [
        *[("write", name) for name in [*exchanges, DEFAULT_EXCHANGE, *queues()]],
        *[("configure", name) for name in [*exchanges, *queues(), TOPOLOGY.dead_letters_queue.name]],
        *[("read", name) for name in [*exchanges, *queues()]],
        ("write", TOPOLOGY.dead_letters_queue.name),
    ]
    allowed = [(permission, name) for permission, name in forbidden if permitted(OPERATOR, permission, name)]
    assert not allowed, f"{OPERATOR} may {allowed}"


@pytest.mark.parametrize(
    "user", sorted({entry["user"] for entry in definitions()["permissions"]} - MAY_WRITE_DEAD_LETTERS)
)
def test_nobody_else_may_publish_to_the_dead_letter_exchange(user: str) -> None:
    assert not permitted(user, "write", TOPOLOGY.dead_letter_exchange.name)
    if user != "reckon-coordinator":  # it binds the queue to billing.dlx (write on the queue)
        assert not permitted(user, "write", TOPOLOGY.dead_letters_queue.name)  # nor bind it elsewhere


def test_the_deployed_coordinator_names_no_dead_letter_exchange_and_the_policy_names_it_for_it() -> None:
    assert deploy_config()["dead_letters"] == "policy"
    [policy] = [entry for entry in definitions()["policies"] if entry["vhost"] == "reckon"]
    assert policy["apply-to"] == "queues"
    assert policy["definition"] == {"dead-letter-exchange": TOPOLOGY.dead_letter_exchange.name}
    covered = [queue.name for queue in TOPOLOGY.dead_lettered_queues([*services(), "a-new-service"])]
    assert [name for name in covered if not re.search(policy["pattern"], name)] == []
    others = [TOPOLOGY.dead_letters_queue.name, SERVER_NAMED, CLIENT_NAMED, "payments.invoices-copy"]
    assert [name for name in others if re.search(policy["pattern"], name)] == []
