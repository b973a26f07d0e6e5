"""compose.yaml: the compose specification's schema, the Compose CLI's own loader, and the wiring."""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.tools import (
    COMPOSE,
    DEFINITIONS,
    DEPLOY,
    ROOT,
    component_coordinator_env,
    compose_model,
    compose_services,
    coordinator_env,
    credentials,
    definitions,
    effective_service_users,
    effective_services,
    is_demo_password,
    last_month,
    reckon_services,
    run,
    run_ok,
    tool,
    unescape_dollars,
    venv_environment,
    vhost,
)

LONG_RUNNING = {"coordinator", "compute", "storage", "network", "payments"}
EXPECTED_USERS = {
    "coordinator": "reckon-coordinator",
    "payments": "reckon-payments",
    "scheduler": "reckon-scheduler",
}


def test_compose_yaml_is_valid_against_the_compose_specification() -> None:
    run_ok([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", COMPOSE])


def test_docker_compose_loads_it() -> None:
    assert compose_model()["name"] == "reckon"
    assert set(compose_services()) == {
        "rabbitmq",
        "postgres",
        "coordinator",
        "compute-seed",
        "compute",
        "storage-seed",
        "storage",
        "network-seed",
        "network",
        "payments",
        "scheduler",
    }


def test_every_long_running_service_has_a_health_check() -> None:
    for name in LONG_RUNNING:
        test = compose_services()[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and "/readyz" in " ".join(test), name
    assert "rabbitmq-diagnostics" in compose_services()["rabbitmq"]["healthcheck"]["test"]
    assert "pg_isready" in compose_services()["postgres"]["healthcheck"]["test"]


def test_every_dependency_waits_for_health_or_completion() -> None:
    for name, service in compose_services().items():
        for dependency, condition in service.get("depends_on", {}).items():
            target = compose_services()[dependency]
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency}, which has no health check"
            elif condition["condition"] == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} must be a one-shot step"
            else:
                pytest.fail(f"{name} starts before {dependency} is ready ({condition['condition']})")
    depends = {name: set(service.get("depends_on", {})) for name, service in compose_services().items()}
    assert depends["coordinator"] == {"rabbitmq", "postgres"}
    assert depends["compute"] == {"rabbitmq", "compute-seed"}
    assert depends["storage"] == {"rabbitmq", "storage-seed"}
    assert depends["network"] == {"rabbitmq", "network-seed"}
    assert depends["payments"] == {"coordinator"}
    assert depends["scheduler"] == {"coordinator", "compute", "storage", "network", "payments"}


def test_one_image_runs_every_role_and_the_scheduler_closes_last_month() -> None:
    commands: dict[str, list[str]] = {
        name: service.get("command", []) for name, service in reckon_services().items()
    }
    assert set(reckon_services()) == set(compose_services()) - {"rabbitmq", "postgres"}
    assert commands["coordinator"] == ["coordinator"]
    assert commands["compute"] == ["worker", "compute"]
    assert commands["storage"] == ["worker", "storage"]
    assert commands["network"] == ["worker", "network"]
    assert commands["payments"] == ["payments"]
    assert commands["scheduler"][:2] == ["close-period", "--last-month"]
    assert compose_services()["scheduler"]["restart"] == "no"
    for service in reckon_services().values():
        assert service["build"]["context"] == str(ROOT)
        assert service.get("user") in (None, ""), "the image's non-root USER, not an override"
        assert service["read_only"] is True


def test_the_coordinator_is_given_its_shutdown_grace_before_sigkill() -> None:
    coordinator = compose_services()["coordinator"]
    grace = float(coordinator["environment"].get("RECKON_SHUTDOWN_GRACE_SECONDS", 10))
    assert int(coordinator["stop_grace_period"].removesuffix("s")) >= 2 * grace + 5


def test_reckon_reads_the_same_config_as_kubernetes_and_the_coordinator_stores_on_postgresql() -> None:
    for name in ("coordinator", "payments", "scheduler", "compute", "storage", "network"):
        service = compose_services()[name]
        [mount] = [volume for volume in service["volumes"] if volume["target"] == "/etc/reckon"]
        assert Path(mount["source"]) == DEPLOY / "base" / "config" and mount["read_only"] is True, name
        assert service["environment"]["RECKON_CONFIG"] == "/etc/reckon/reckon.toml", name
    coordinator = compose_services()["coordinator"]
    assert coordinator["environment"]["RECKON_STORE_URL"].startswith("postgresql+asyncpg://")


def test_each_process_connects_as_its_own_broker_user_with_the_defined_password() -> None:
    users = {user["name"]: user["password"] for user in definitions()["users"]}
    service_users = effective_service_users(coordinator_env(compose_services()["coordinator"]))
    for name, service in reckon_services().items():
        url = service.get("environment", {}).get("AMQP_URL")
        if url is None:
            assert name.endswith("-seed"), f"{name} has no AMQP_URL"
            continue
        user, password = credentials(url)
        expected = EXPECTED_USERS.get(name) or service_users[name]
        assert user == expected, f"{name} connects as {user}, not {expected}"
        assert password is not None and password == users[expected] and is_demo_password(password)
        assert vhost(url) == "reckon"


def test_the_broker_imports_the_definitions_and_the_store_password_matches() -> None:
    rabbitmq = compose_services()["rabbitmq"]
    sources = {
        volume["target"]: Path(volume["source"]) for volume in rabbitmq["volumes"] if "source" in volume
    }
    assert sources["/etc/rabbitmq/definitions.json"] == DEFINITIONS
    conf = sources["/etc/rabbitmq/conf.d/20-reckon.conf"].read_text(encoding="utf-8")
    assert "definitions.local.path = /etc/rabbitmq/definitions.json" in conf

    database = compose_services()["postgres"]["environment"]
    assert is_demo_password(database["POSTGRES_PASSWORD"])
    store = compose_services()["coordinator"]["environment"]["RECKON_STORE_URL"]
    assert credentials(store) == (database["POSTGRES_USER"], database["POSTGRES_PASSWORD"])
    assert store.endswith("@postgres:5432/" + database["POSTGRES_DB"])


def test_the_coordinator_asks_every_worker_compose_runs_as_the_network_component_says() -> None:
    """compose runs the network sub-service, opt-in in Kubernetes: its coordinator's environment
    must be the component's (the base's lists plus network), and ask exactly the workers it runs."""
    env = coordinator_env(compose_services()["coordinator"])
    workers = {
        argv[1] for s in reckon_services().values() if (argv := s.get("command", []))[:1] == ["worker"]
    }

    assert env == component_coordinator_env()["network-usage"]
    assert set(effective_services(env)) == workers == {"compute", "storage", "network"}


@pytest.mark.parametrize("service", ["compute", "storage", "network"])
def test_the_seed_step_fills_the_workers_store_for_last_month(service: str, tmp_path: Path) -> None:
    seed, worker = compose_services()[f"{service}-seed"], compose_services()[service]
    variable = f"RECKON_{service.upper()}_DB"
    store = worker["environment"][variable]
    assert seed["environment"][variable] == store
    volume = {v["target"]: v["source"] for v in worker["volumes"]}[str(Path(store).parent)]
    assert {v["target"]: v["source"] for v in seed["volumes"]}[str(Path(store).parent)] == volume

    # Run the very shell command the container runs, with this venv's python and a temporary store.
    argv = [unescape_dollars(part) for part in seed["entrypoint"] + seed["command"]]
    out = run_ok(argv, env=venv_environment(**{variable: str(tmp_path / "store.sqlite3")}))

    assert f"for {last_month()}: 40 accounts" in out
    assert (tmp_path / "store.sqlite3").stat().st_size > 0


class Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def readyz() -> Iterator[tuple[http.server.HTTPServer, type[Answer]]]:
    handler = type("ReadyzAnswer", (Answer,), {})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def test_the_health_check_command_passes_on_200_and_fails_on_503(
    readyz: tuple[http.server.HTTPServer, type[Answer]],
) -> None:
    server, handler = readyz
    test = compose_services()["coordinator"]["healthcheck"]["test"][1:]
    port = server.server_address[1]
    argv = [sys.executable if test[0] == "python" else test[0]] + [
        part.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for part in test[1:]
    ]
    run_ok(argv)
    handler.status = 503
    assert run(argv).returncode != 0, "an unready process must fail its health check"
