"""requirements.lock and requirements-build.lock: current with pyproject.toml and the Dockerfile, and
nothing in them but exact pins with sha256 hashes. No network: each lock's header records the hash of
the requirements it was resolved from and the Python it targets (scripts/lock.py, `make lock`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from scripts import lock as locking
from scripts.lock import Lock

PROJECT = str(locking.load_pyproject()["project"]["name"])
REGENERATE = (
    f"Run `{locking.COMMAND}` (or `{locking.COMMAND_WITHOUT_MAKE}`; it needs PyPI) and commit "
    + " and ".join(lock.path.name for lock in locking.LOCKS)
)
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")

by_file = pytest.mark.parametrize("lock", locking.LOCKS, ids=lambda lock: lock.path.name)


@dataclass(frozen=True)
class Pin:
    name: NormalizedName
    version: Version
    hashes: tuple[str, ...]


def entries(path: Path) -> list[str]:
    """Each requirement of a requirements file on one line: continuations joined, comments dropped."""
    found: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        found.append((pending + line).strip())
        pending = ""
    if pending:
        found.append(pending.strip())
    return found


def pins(lock: Lock) -> list[Pin]:
    """The lock's pins; fails on any line that is not `name==version --hash=sha256:...`."""
    if not lock.path.exists():
        pytest.fail(f"{lock.path.name} is missing: {REGENERATE}", pytrace=False)
    found: list[Pin] = []
    problems: list[str] = []
    for entry in entries(lock.path):
        words = entry.split()
        hashes = tuple(word for word in words if word.startswith("--hash="))
        text = " ".join(word for word in words if not word.startswith("--hash="))
        if text.startswith("-"):
            problems.append(f"{entry!r}: an option (-e, -r, an index...), not a pin")
            continue
        try:
            requirement = Requirement(text)
        except InvalidRequirement as error:
            problems.append(f"{entry!r}: {error}")
            continue
        specifiers = list(requirement.specifier)
        if (
            requirement.url
            or len(specifiers) != 1
            or specifiers[0].operator != "=="
            or "*" in str(specifiers[0])
        ):
            problems.append(f"{text!r}: not an exact `name==version` pin")
            continue
        if not hashes or not all(HASH.fullmatch(word) for word in hashes):
            problems.append(f"{text!r}: needs --hash=sha256:<64 hex> for every file (has {list(hashes)})")
            continue
        found.append(Pin(canonicalize_name(requirement.name), Version(specifiers[0].version), hashes))
    if problems:
        pytest.fail(f"{lock.path.name}:\n  " + "\n  ".join(problems) + f"\n{REGENERATE}", pytrace=False)
    return found


def image_environment() -> dict[str, str]:
    """Marker values of the image the locks are resolved for (CPython on Linux x86_64)."""
    goal = locking.target()
    environment: dict[str, str] = {key: str(value) for key, value in default_environment().items()}
    environment.update(
        python_full_version=goal.python_version,
        python_version=".".join(goal.python_version.split(".")[:2]),
        implementation_name="cpython",
        platform_python_implementation="CPython",
        os_name="posix",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine="x86_64",
    )
    return environment


@by_file
def test_the_lock_was_resolved_from_pyproject_as_it_is_now(lock: Lock) -> None:
    recorded = locking.read_header(lock.path).get(lock.header) if lock.path.exists() else None
    expected = locking.requirements_hash(lock.requirements())
    assert recorded == expected, (
        f"{lock.path.name} is not current with pyproject.toml {lock.source}: it records "
        f"{lock.header} {recorded}, pyproject now hashes to {expected}. {REGENERATE}"
    )


@by_file
def test_the_lock_targets_the_python_of_the_dockerfile(lock: Lock) -> None:
    goal = locking.target()
    header = locking.read_header(lock.path)
    recorded = (header.get("python-version"), header.get("python-platform"), header.get("base-image"))
    assert recorded == (goal.python_version, goal.python_platform, goal.image), (
        f"{lock.path.name} was resolved for {recorded}, the Dockerfile builds on {goal.image} "
        f"(CPython {goal.python_version}, {goal.python_platform}). {REGENERATE}"
    )


@by_file
def test_every_line_is_an_exact_pin_with_sha256_hashes(lock: Lock) -> None:
    assert pins(lock), f"{lock.path.name} pins nothing. {REGENERATE}"


@by_file
def test_no_package_is_pinned_twice(lock: Lock) -> None:
    names = [pin.name for pin in pins(lock)]
    twice = sorted({name for name in names if names.count(name) > 1})
    assert not twice, f"{lock.path.name} pins {twice} more than once. {REGENERATE}"


@by_file
def test_every_requirement_of_pyproject_is_pinned_to_a_version_it_accepts(lock: Lock) -> None:
    pinned = {pin.name: pin.version for pin in pins(lock)}
    environment = image_environment()
    problems: list[str] = []
    for text in lock.requirements():
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue  # not installed on the image's platform
        version = pinned.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{text!r} is not in the lock")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{text!r} does not accept the pinned {version}")
    assert not problems, f"{lock.path.name}: " + "; ".join(problems) + f". {REGENERATE}"


def test_the_image_lock_holds_no_reckon_and_no_build_backend() -> None:
    pinned = {pin.name for pin in pins(locking.RUNTIME)}
    assert canonicalize_name(PROJECT) not in pinned, "Reckon itself is installed from its wheel, --no-deps"
    backend = {canonicalize_name(Requirement(text).name) for text in locking.BUILD.requirements()}
    runtime = {canonicalize_name(Requirement(text).name) for text in locking.RUNTIME.requirements()}
    leaked = sorted((backend - runtime) & pinned)
    assert not leaked, (
        f"{locking.RUNTIME.path.name} pins the build backend {leaked}: it belongs in the build lock"
    )


def test_the_recorded_hash_ignores_spelling_and_order_but_not_a_change() -> None:
    one = locking.requirements_hash(["aio-pika>=9.4,<11", "SQLAlchemy[asyncio]>=2.0.30,<2.2", "babel>=2.14"])
    same = locking.requirements_hash(
        ["babel >= 2.14", "sqlalchemy[asyncio] <2.2, >=2.0.30", "aio_pika<11,>=9.4"]
    )
    assert one == same
    assert one != locking.requirements_hash(["aio-pika>=9.4,<11", "sqlalchemy[asyncio]>=2.0.30,<2.2"])
    assert one != locking.requirements_hash(
        ["aio-pika>=9.4,<12", "sqlalchemy[asyncio]>=2.0.30,<2.2", "babel>=2.14"]
    )
    assert one != locking.requirements_hash(["aio-pika>=9.4,<11", "sqlalchemy>=2.0.30,<2.2", "babel>=2.14"])


def test_the_target_comes_from_the_exact_tag_of_the_base_image() -> None:
    digest = "0" * 64
    pinned = locking.target(f"ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm@sha256:{digest}\n")
    assert pinned == locking.Target("python:3.11.17-slim-bookworm", "3.11.17", "x86_64-manylinux_2_36")
    for loose in ("python:3.11-slim-bookworm", "python:3-slim", "python:latest", "python:3.11.17"):
        with pytest.raises(locking.LockError):
            locking.target(f"ARG PYTHON_IMAGE={loose}\n")
