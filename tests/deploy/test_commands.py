"""Every command compose.yaml and deploy/ run exists in the `reckon` CLI with the options they pass.

The `reckon ...` invocations are parsed by the CLI's own parser (nothing runs); the demo seed
steps are shell commands, so they are run for real against a temporary store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import typer

from accounting.cli.processes import is_worker_program
from accounting.cli.reckon import app
from tests.deploy.tools import (
    OVERLAYS,
    containers,
    env_value,
    last_month,
    name_of,
    overlay,
    pod_spec,
    reckon_services,
    run_ok,
    unescape_dollars,
    venv_environment,
    workloads,
)

# Options the contract adds and the Python side has not shipped yet: skipped, not failed, until then.
PENDING_OPTIONS: set[str] = set()


def invocations() -> dict[str, list[str]]:
    """Where → the arguments given to the image's entrypoint (`reckon`)."""
    found: dict[str, list[str]] = {}
    for name, service in reckon_services().items():
        if not service.get("entrypoint"):
            found[f"compose.yaml {name}"] = list(service["command"])
    for overlay_name in OVERLAYS:
        for workload in workloads(overlay(overlay_name).manifests):
            for container in containers(pod_spec(workload)):
                if container["image"].split("/")[-1].startswith("reckon") and "command" not in container:
                    found[f"{overlay_name} {name_of(workload)}/{container['name']}"] = list(container["args"])
    return found


def parse(argv: Sequence[str]) -> Exception | None:
    """Parse ``reckon ARGV`` with the CLI's own parser; the error, or None when it parses."""
    command: Any = typer.main.get_command(app)
    words = list(argv)
    while hasattr(command, "commands") and words and words[0] in command.commands:
        command = command.commands[words.pop(0)]
    if hasattr(command, "commands"):
        return LookupError(f"no command {words[:1]} in {sorted(command.commands)}")
    try:
        command.make_context(command.name, words)
    except Exception as error:
        return error
    return None


def test_the_artifacts_run_the_long_running_roles_and_the_scheduler() -> None:
    roles = {tuple(argv[:2]) if argv[0] == "worker" else (argv[0],) for argv in invocations().values()}
    assert roles == {
        ("coordinator",),
        ("worker", "compute"),
        ("worker", "storage"),
        ("worker", "network"),
        ("payments",),
        ("close-period",),
    }


@pytest.mark.parametrize("where", sorted(invocations()))
def test_every_reckon_invocation_parses(where: str) -> None:
    argv = invocations()[where]
    error = parse(argv)
    if error is not None and getattr(error, "option_name", None) in PENDING_OPTIONS:
        pytest.skip(f"`reckon {' '.join(argv)}`: {error} (the Python side adds it)")
    assert error is None, f"{where}: `reckon {' '.join(argv)}` is refused: {error}"
    if argv[0] == "worker":
        assert is_worker_program(argv[1]), f"no workers/{argv[1]}/__main__.py"


@pytest.mark.parametrize("workload", ["reckon-compute", "reckon-storage", "reckon-network"])
def test_the_dev_seed_init_container_fills_a_store_for_last_month(workload: str, tmp_path: Path) -> None:
    [deployment] = [w for w in workloads(overlay("dev").manifests) if name_of(w) == workload]
    [seed] = pod_spec(deployment)["initContainers"]
    variable = f"RECKON_{workload.removeprefix('reckon-').upper()}_DB"
    accounts = env_value(seed, "DEMO_ACCOUNTS")
    assert accounts is not None

    # The kubelet expands `$(VAR)` of the container's env and turns `$$` into `$`: none of the
    # former is used, so only the latter matters here.
    argv = [unescape_dollars(part) for part in seed["command"] + seed["args"]]
    env = venv_environment(**{variable: str(tmp_path / "store.sqlite3"), "DEMO_ACCOUNTS": accounts})
    out = run_ok(argv, env=env)

    assert f"for {last_month()}: {accounts} accounts" in out
