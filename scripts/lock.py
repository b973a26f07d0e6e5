"""Regenerate the image's hashed dependency locks from pyproject.toml: ``make lock``.

    requirements.lock        [project].dependencies: every package the image runs, pinned with its hashes
    requirements-build.lock  [build-system].requires: the backend the image builds Reckon's wheel with

Both are resolved by uv for the image, not for this machine: the CPython version of the Dockerfile's
base image tag (``ARG PYTHON_IMAGE``) on Linux x86_64 with that Debian release's glibc. Each lock's
header records the sha256 of the requirements it was resolved from (normalized and sorted, so comments
and order in pyproject.toml do not count) and that target; tests/deploy/test_lock.py compares them with
pyproject.toml and the Dockerfile without network, so CI fails until the locks are regenerated.

Pins already in a lock are kept while pyproject still accepts them (uv prefers them). Any argument is
passed on to ``uv pip compile``: ``make lock LOCK_ARGS=--upgrade`` moves every pin to the newest
version, ``make lock LOCK_ARGS="--upgrade-package aiohttp"`` only that one.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
DOCKERFILE = ROOT / "Dockerfile"
# What a developer runs; written into each lock's header and into every test failure about them.
COMMAND = "make lock"
COMMAND_WITHOUT_MAKE = ".venv/bin/python -m scripts.lock"

# The glibc of the Debian release in the base image's tag, as the manylinux platform uv resolves for
# (trixie has glibc 2.41; 2_40 is the newest uv names, and a wheel for 2_40 runs on 2.41).
PLATFORMS = {"bookworm": "x86_64-manylinux_2_36", "trixie": "x86_64-manylinux_2_40"}
IMAGE = re.compile(
    r"python:(?P<version>3\.\d+\.\d+)-slim-(?P<debian>[a-z]+)(?:@sha256:(?P<digest>[0-9a-f]{64}))?"
)
HEADER_LINE = re.compile(r"# (?P<key>[a-z0-9-]+): (?P<value>\S.*)")


class LockError(Exception):
    """Something a developer must fix before the locks can be generated or trusted."""


@dataclass(frozen=True)
class Lock:
    path: Path
    table: str  # the pyproject.toml table holding the requirements
    key: str  # the array of requirements in it
    header: str  # the header key recording their hash

    @property
    def source(self) -> str:
        return f"[{self.table}].{self.key}"

    def requirements(self, pyproject: dict[str, Any] | None = None) -> list[str]:
        pyproject = load_pyproject() if pyproject is None else pyproject
        found: list[str] = pyproject.get(self.table, {}).get(self.key, [])
        return list(found)


RUNTIME = Lock(ROOT / "requirements.lock", "project", "dependencies", "pyproject-dependencies-sha256")
BUILD = Lock(ROOT / "requirements-build.lock", "build-system", "requires", "pyproject-build-requires-sha256")
LOCKS = (RUNTIME, BUILD)


@dataclass(frozen=True)
class Target:
    """What the locks are resolved for: the Python of the Dockerfile's base image."""

    image: str  # its tag without a digest: a release adding the digest changes no lock
    python_version: str
    python_platform: str


def load_pyproject() -> dict[str, Any]:
    with PYPROJECT.open("rb") as file:
        return tomllib.load(file)


def normalized(requirements: Iterable[str]) -> list[str]:
    """Each requirement in one canonical spelling (name, sorted extras and specifiers, marker), sorted."""
    lines: list[str] = []
    for text in requirements:
        requirement = Requirement(text)
        line: str = canonicalize_name(requirement.name)
        if requirement.extras:
            line += "[" + ",".join(sorted(canonicalize_name(extra) for extra in requirement.extras)) + "]"
        if requirement.url:
            line += f" @ {requirement.url}"
        line += ",".join(sorted(str(specifier) for specifier in requirement.specifier))
        if requirement.marker is not None:
            line += f"; {requirement.marker}"
        lines.append(line)
    return sorted(lines)


def requirements_hash(requirements: Iterable[str]) -> str:
    return hashlib.sha256("".join(f"{line}\n" for line in normalized(requirements)).encode()).hexdigest()


def base_image(dockerfile: str | None = None) -> str:
    """The default of the Dockerfile's ``ARG PYTHON_IMAGE``, which every stage builds on."""
    text = DOCKERFILE.read_text(encoding="utf-8") if dockerfile is None else dockerfile
    found = re.findall(r"^ARG\s+PYTHON_IMAGE=(\S+)\s*$", text, flags=re.MULTILINE)
    if len(found) != 1:
        raise LockError("the Dockerfile should name its base image once, as `ARG PYTHON_IMAGE=python:...`")
    image: str = found[0]
    return image


def target(dockerfile: str | None = None) -> Target:
    image = base_image(dockerfile)
    match = IMAGE.fullmatch(image)
    if match is None:
        raise LockError(
            f"the Dockerfile's base image {image!r} is not an exact version tag like "
            "python:3.11.17-slim-bookworm (optionally @sha256:<digest>)"
        )
    debian = match["debian"]
    if debian not in PLATFORMS:
        raise LockError(
            f"no manylinux platform known for Debian {debian!r}: add it to PLATFORMS in {__file__}"
        )
    return Target(image.partition("@")[0], match["version"], PLATFORMS[debian])


def read_header(path: Path) -> dict[str, str]:
    """The ``# key: value`` lines of a lock's leading comment block."""
    header: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        match = HEADER_LINE.fullmatch(line.rstrip())
        if match:
            header[match["key"]] = match["value"]
    return header


def header_lines(lock: Lock, pyproject: dict[str, Any], goal: Target) -> list[str]:
    return [
        f"# {lock.header}: {requirements_hash(lock.requirements(pyproject))}",
        f"# python-version: {goal.python_version}",
        f"# python-platform: {goal.python_platform}",
        f"# base-image: {goal.image}",
        f"# Generated from pyproject.toml {lock.source} for the Dockerfile's base image; do not edit:",
        f"# change pyproject.toml (or the Dockerfile's ARG PYTHON_IMAGE) and run `{COMMAND}`.",
    ]


def uv() -> Path:
    """uv from the dev extras: beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file():
        return beside
    found = shutil.which("uv")
    if found is None:
        raise LockError("uv is not installed: it comes with the dev extras (`make install`)")
    return Path(found)


def generate(lock: Lock, pyproject: dict[str, Any], goal: Target, extra: Sequence[str]) -> int:
    """Resolve one lock with uv, add the header, write it; the number of packages pinned."""
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / lock.path.name
        if lock.path.exists():
            shutil.copyfile(lock.path, output)  # uv keeps the pins it finds in the output file
        if lock is RUNTIME:
            source, stdin = "pyproject.toml", None  # annotated `# via reckon (pyproject.toml)`
        else:
            source, stdin = "-", "".join(f"{line}\n" for line in lock.requirements(pyproject))
        command = [
            str(uv()),
            "pip",
            "compile",
            source,
            "--output-file",
            str(output),
            "--generate-hashes",
            "--python-version",
            goal.python_version,
            "--python-platform",
            goal.python_platform,
            "--custom-compile-command",
            COMMAND,
            "--quiet",
            *extra,
        ]
        completed = subprocess.run(command, cwd=ROOT, input=stdin, text=True, check=False)
        if completed.returncode != 0:
            raise LockError(f"`uv pip compile` failed for {lock.path.name} (exit {completed.returncode})")
        lines = output.read_text(encoding="utf-8").splitlines()
    # After uv's own comment lines ("autogenerated by uv via: make lock").
    at = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    lines[at:at] = header_lines(lock, pyproject, goal)
    lock.path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sum(1 for line in lines if line and not line[0].isspace() and not line.startswith("#"))


def main(argv: Sequence[str] | None = None) -> int:
    extra = list(sys.argv[1:] if argv is None else argv)
    try:
        goal = target()
        pyproject = load_pyproject()
        for lock in LOCKS:
            count = generate(lock, pyproject, goal, extra)
            print(
                f"{lock.path.name}: {count} packages from {lock.source}, "
                f"for CPython {goal.python_version} on {goal.python_platform} ({goal.image})"
            )
    except LockError as error:
        print(f"lock: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
