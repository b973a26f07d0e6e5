"""contracts/asyncapi.yaml: valid for the AsyncAPI CLI, and the very topology and schemas of contracts/.

Without network: every exchange, queue (with its arguments and bindings) and routing key the document
names is the one contracts/topology.py declares, every one Topology declares appears, and each
message's payload is the committed JSON Schema of its current major version. The AsyncAPI CLI (pinned
in tools/asyncapi/package-lock.json: `make asyncapi`, or .ci/run) validates the document; without
node or the CLI the test skips on a developer's machine and fails under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts import (
    CONTENT_TYPE,
    ROUTING_REPORT_ABORTED,
    ROUTING_REPORT_COMPLETED,
    QueueSpec,
    Topology,
)
from contracts import json_schema as generator

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "contracts" / "asyncapi.yaml"
TOOLS = ROOT / "tools" / "asyncapi"
CLI = TOOLS / "node_modules" / ".bin" / "asyncapi"
INSTALL = "make asyncapi (or: npm ci --prefix tools/asyncapi --ignore-scripts)"
SERVICE = "{service}"
"""The document's parameter for a sub-service's name, where Topology takes the name."""
PARTIES = {"scheduler", "coordinator", "sub-service", "payment-service", "operator"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


def amqp(channel: dict[str, Any]) -> dict[str, Any]:
    binding: dict[str, Any] = channel["bindings"]["amqp"]
    assert binding["bindingVersion"] == "0.3.0"
    return binding


def channels(kind: str) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, channel, its AMQP binding) of every channel that ``is`` ``kind`` (queue, routingKey)."""
    for name, channel in document()["channels"].items():
        binding = amqp(channel)
        if binding.get("is", "routingKey") == kind:
            yield name, channel, binding


def declared_queues() -> list[QueueSpec]:
    topology = Topology()
    return [
        topology.period_closed_queue,
        topology.payments_queue,
        topology.corrections_queue,
        topology.dead_letters_queue,
        topology.usage_queue(SERVICE),
    ]


# The topology ------------------------------------------------------------------------------------


def test_every_exchange_is_the_one_topology_declares_and_every_one_appears() -> None:
    named = {
        (binding["exchange"]["name"], binding["exchange"]["type"], binding["exchange"]["durable"])
        for _, _, binding in channels("routingKey")
    }

    assert named == {(spec.name, spec.kind.value, True) for spec in Topology().exchanges()}
    assert all(not binding["exchange"]["autoDelete"] for _, _, binding in channels("routingKey"))


def test_every_named_queue_is_the_one_topology_declares_with_its_arguments_and_bindings() -> None:
    named = {
        binding["queue"]["name"]: binding for _, _, binding in channels("queue") if "name" in binding["queue"]
    }
    declared = {spec.name: spec for spec in declared_queues()}

    assert set(named) == set(declared)
    for name, spec in declared.items():
        binding = named[name]
        assert binding["queue"] == {"name": name, "durable": True, "exclusive": False, "autoDelete": False}
        assert binding["x-arguments"] == spec.arguments, name
        assert binding["x-bindings"] == [
            {"exchange": spec.exchange.name, "routingKey": key}
            for key in (spec.routing_key, *spec.also_bound)
        ], name
        assert binding["x-declared-by"] == "coordinator"


def test_queue_channels_are_addressed_by_their_queue_name() -> None:
    for name, channel, binding in channels("queue"):
        queue = binding["queue"]
        if "name" in queue:
            assert channel["address"] == queue["name"], name
        else:  # a reply or listener queue, named at run time: exclusive and auto-delete
            assert channel["address"] is None, name
            assert (queue["exclusive"], queue["autoDelete"], queue["durable"]) == (True, True, False), name


def test_every_routing_key_is_one_topology_declares_and_every_one_appears() -> None:
    topology = Topology()
    published = {
        (spec.exchange.name, key)
        for spec in declared_queues()
        if spec.exchange != topology.dead_letter_exchange  # the broker dead-letters under the original key
        for key in (spec.routing_key, *spec.also_bound)
    } | {(topology.reports.name, ROUTING_REPORT_COMPLETED), (topology.reports.name, ROUTING_REPORT_ABORTED)}
    named = {
        (binding["exchange"]["name"], channel["address"])
        for _, channel, binding in channels("routingKey")
        if channel["address"] is not None
    }
    listener = {
        (item["exchange"], item["routingKey"])
        for _, _, binding in channels("queue")
        if "name" not in binding["queue"]
        for item in binding.get("x-bindings", [])
    }

    assert named == published
    assert listener <= published
    dynamic = [name for name, channel, _ in channels("routingKey") if channel["address"] is None]
    assert dynamic == ["deadLetterExchange"]


def test_the_service_parameter_is_a_service_name() -> None:
    parameter = document()["components"]["parameters"]["service"]

    assert set(parameter["examples"]) >= {"compute", "storage"}
    for name in ("usageRequests", "usageRequestQueue"):
        assert "service" in document()["channels"][name]["parameters"]


# The messages ------------------------------------------------------------------------------------


def test_each_message_is_a_message_type_whose_payload_is_its_committed_schema_of_the_current_major() -> None:
    messages = document()["components"]["messages"]

    assert set(messages) == {model.__name__ for model in generator.MESSAGE_TYPES}
    for model in generator.MESSAGE_TYPES:
        message = messages[model.__name__]
        ref = message["payload"]["$ref"]
        assert ref == f"./schemas/{generator.schema_file(model)}", model.__name__
        target = (DOCUMENT.parent / ref).resolve()
        assert target.exists(), ref
        assert json.loads(target.read_text())["$id"] == generator.schema_id(model)
        assert message["name"] == model.__name__
        assert message["contentType"] == CONTENT_TYPE
        assert message["x-amqp-properties"]["content_type"] == CONTENT_TYPE
        assert "user_id" in message["x-amqp-properties"], model.__name__
        if "bindings" in message:
            assert message["bindings"]["amqp"]["messageType"] == model.__name__
            assert message["x-amqp-properties"]["type"] == model.__name__


def test_a_request_and_its_replies_are_correlated_by_the_request_id() -> None:
    components = document()["components"]
    messages = components["messages"]

    for name in ("UsageRequest", "UsageReply"):
        assert messages[name]["correlationId"] == {"$ref": "#/components/correlationIds/requestId"}
        assert "correlation_id" in messages[name]["x-amqp-properties"]
    assert components["correlationIds"]["requestId"]["location"] == "$message.header#/correlation_id"
    assert {"reply_to", "expiration", "message_id"} <= set(messages["UsageRequest"]["x-amqp-properties"])
    for name in ("requestUsage", "answerUsageRequest"):
        reply = document()["operations"][name]["reply"]
        assert reply["address"]["location"] == "$message.header#/reply_to"
        assert reply["channel"] == {"$ref": "#/channels/usageReplies"}


def test_each_message_type_is_sent_by_one_party_and_received_by_another() -> None:
    doc = document()
    sent: dict[str, set[str]] = {}
    received: dict[str, set[str]] = {}
    for name, operation in doc["operations"].items():
        [tag] = operation["tags"]
        party = tag["$ref"].rsplit("/", 1)[1]
        assert party in PARTIES, name
        channel = operation["channel"]["$ref"].rsplit("/", 1)[1]
        for ref in operation["messages"]:
            prefix = f"#/channels/{channel}/messages/"
            assert ref["$ref"].startswith(prefix), (name, ref)
            message = ref["$ref"][len(prefix) :]
            assert message in doc["channels"][channel]["messages"], (name, message)
            (sent if operation["action"] == "send" else received).setdefault(message, set()).add(party)

    every = {model.__name__ for model in generator.MESSAGE_TYPES}
    assert set(sent) == every
    assert set(received) == every
    for message in every:
        assert not sent[message] & received[message], f"{message}: sent and received by the same party"
    assert sent["PeriodClosed"] == {"scheduler"}
    assert sent["UsageReply"] == {"sub-service"}
    assert received["InvoiceIssued"] >= {"payment-service"}
    assert {
        tag["$ref"].rsplit("/", 1)[1] for operation in doc["operations"].values() for tag in operation["tags"]
    } == PARTIES


def test_what_must_not_be_lost_is_published_persistent_and_requests_are_mandatory() -> None:
    operations = document()["operations"]

    for name in ("closePeriod", "issueInvoice", "issueCreditNote", "issueCorrectedInvoice", "completeReport"):
        assert operations[name]["bindings"]["amqp"]["deliveryMode"] == 2, name
    for name in ("closePeriod", "requestUsage", "sendUsageReply", "issueInvoice"):
        assert operations[name]["bindings"]["amqp"]["mandatory"] is True, name


# The AsyncAPI CLI --------------------------------------------------------------------------------


def _pinned_version() -> str:
    pinned: str = json.loads((TOOLS / "package.json").read_text())["dependencies"]["@asyncapi/cli"]
    return pinned


def _cli_or_skip() -> Path:
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed"
    elif not CLI.exists():
        missing = f"the AsyncAPI CLI is not installed in {CLI.parent.parent.relative_to(ROOT)}: run {INSTALL}"
    if missing is not None:
        if in_ci():
            pytest.fail(f"{missing}. CI={os.environ['CI']}: failing rather than skipping.", pytrace=False)
        pytest.skip(missing)
    installed = json.loads((TOOLS / "node_modules" / "@asyncapi" / "cli" / "package.json").read_text())[
        "version"
    ]
    assert installed == _pinned_version(), (
        f"the CLI installed is {installed}, the pin {_pinned_version()}: run {INSTALL}"
    )
    return CLI


def test_the_cli_version_is_pinned_exactly_and_locked() -> None:
    lock = json.loads((TOOLS / "package-lock.json").read_text())

    assert _pinned_version()[0].isdigit(), "an exact version, not a range"
    assert lock["packages"]["node_modules/@asyncapi/cli"]["version"] == _pinned_version()


def test_the_asyncapi_cli_validates_the_document(tmp_path: Path) -> None:
    cli = _cli_or_skip()
    # No telemetry and no update check: an analytics file saying "disabled", and the oclif switch.
    analytics = tmp_path / "asyncapi-analytics.json"
    analytics.write_text(
        json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "reckon"})
    )
    env = {
        **os.environ,
        "ASYNCAPI_METRICS_CONFIG_PATH": str(analytics),
        "ASYNCAPI_SKIP_NEW_VERSION_CHECK": "true",
        "NO_COLOR": "1",
    }

    done = subprocess.run(
        [str(cli), "validate", str(DOCUMENT.relative_to(ROOT)), "--fail-severity", "warn"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "is valid" in output, output
