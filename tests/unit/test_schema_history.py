"""Compatibility in CI: the committed schemas against the previous commit that changed them.

docs/architecture.md ("Message contracts"): "a minor version may only add what an old reader can
ignore without harm; anything that changes what is owed, or who may send what, is a new message type
or a major version". When ``contracts/schemas/`` differs from HEAD, the working tree is compared with
HEAD; otherwise HEAD's schemas with those of the last earlier commit that changed them. A change an
old reader cannot ignore, within one major version, fails (scripts/schema_compat.py). Without git
history (no repository, a shallow clone) the test skips on a developer's machine and fails under CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from contracts import json_schema as generator
from contracts.messages import InvoiceIssued
from scripts.schema_compat import FOLDER, ROOT, baseline, compare_schema_sets


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def test_the_schemas_changed_compatibly_since_the_previous_commit_that_changed_them() -> None:
    if shutil.which("git") is None:
        _no_history("git is not installed")
    found = baseline(ROOT)
    if found.old is None or found.new is None:
        if found.history_missing:
            _no_history(found.reason)
        pytest.skip(found.reason)
    problems = compare_schema_sets(found.old, found.new)

    assert not problems, (
        f"{FOLDER}/ ({found.new_label}) breaks readers of {found.old_label} within a major version: "
        + "; ".join(problems)
        + ". docs/architecture.md: a minor version may only add what an old reader can ignore without "
        "harm; anything else is a new message type or a major version (raise the message's VERSION: a "
        "new file). Undo the change or make it a major version, then run `make schemas`."
    )


def _no_history(reason: str) -> None:
    message = f"cannot compare {FOLDER}/ with its previous version: {reason}"
    if in_ci():
        pytest.fail(f"{message}. CI={os.environ['CI']}: fetch the whole history (not a shallow clone).")
    pytest.skip(message)


# Which two versions are compared, on throwaway repositories -------------------------------------------


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def write_schemas(repo: Path, change: bool = False, breaking: bool = False) -> None:
    folder = repo / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    schemas = generator.message_schemas()
    invoice = schemas[generator.schema_file(InvoiceIssued)]
    if change:
        invoice["properties"]["purchase_order"] = {"type": "string"}  # optional: compatible
    if breaking:
        invoice["required"].append("number")
    for name, schema in schemas.items():
        (folder / name).write_text(generator.render(schema))


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git(tmp_path, "init", "--quiet")
    return tmp_path


def test_a_working_tree_that_changed_the_schemas_is_compared_with_head(repo: Path) -> None:
    write_schemas(repo)
    commit(repo, "schemas")
    write_schemas(repo, breaking=True)

    found = baseline(repo)

    assert (found.old_label, found.new_label) == ("HEAD", "the working tree")
    assert found.old is not None and found.new is not None
    assert compare_schema_sets(found.old, found.new) == ["InvoiceIssued.v2.json: number: field made required"]


def test_a_clean_tree_compares_head_with_the_last_earlier_commit_that_changed_the_schemas(repo: Path) -> None:
    write_schemas(repo)
    commit(repo, "first schemas")
    first = git(repo, "rev-parse", "HEAD").strip()
    write_schemas(repo, change=True, breaking=True)
    commit(repo, "a breaking change")
    second = git(repo, "rev-parse", "HEAD").strip()
    (repo / "README.md").write_text("unrelated\n")
    commit(repo, "unrelated")

    found = baseline(repo)

    assert (found.old_label, found.new_label) == (first[:12], second[:12])
    assert found.old is not None and found.new is not None
    assert compare_schema_sets(found.old, found.new) == ["InvoiceIssued.v2.json: number: field made required"]


def test_a_compatible_commit_passes(repo: Path) -> None:
    write_schemas(repo)
    commit(repo, "first schemas")
    write_schemas(repo, change=True)
    commit(repo, "an optional field")

    found = baseline(repo)

    assert found.old is not None and found.new is not None
    assert compare_schema_sets(found.old, found.new) == []
    assert json.loads((repo / FOLDER / "InvoiceIssued.v2.json").read_text())["properties"]["purchase_order"]


def test_the_first_version_of_the_schemas_has_nothing_to_compare_and_is_not_missing_history(
    repo: Path,
) -> None:
    write_schemas(repo)
    commit(repo, "first schemas")

    found = baseline(repo)

    assert found.old is None and not found.history_missing
    assert "no earlier version" in found.reason


def test_no_repository_or_a_shallow_clone_is_missing_history(
    repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    plain = tmp_path_factory.mktemp("plain")
    assert baseline(plain).history_missing

    write_schemas(repo)
    commit(repo, "first schemas")
    write_schemas(repo, change=True)
    commit(repo, "second")
    shallow = tmp_path_factory.mktemp("shallow") / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", "--depth", "1", f"file://{repo}", str(shallow)],
        check=True,
        capture_output=True,
    )

    found = baseline(shallow)

    assert found.old is None and found.history_missing
