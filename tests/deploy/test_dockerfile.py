"""The Dockerfile and its build context: hadolint, and the basics a reviewer would check."""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from scripts import lock as locking
from tests.deploy.tools import ROOT, credentials, run_ok, tool

DOCKERFILE = ROOT / "Dockerfile"
# Every package the wheel is built from (pyproject's [tool.setuptools.packages.find] include), so a
# new top-level package that the image forgets fails here.
PACKAGES = tuple(
    pattern.rstrip("*")
    for pattern in tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
)
SECRET_NAMES = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY|AMQP_URL|STORE_URL", re.I
)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            keyword, _, arguments = whole.partition(" ")
            found.append(Instruction(keyword.upper(), arguments.strip()))
    return found


def stages() -> list[list[Instruction]]:
    """The instructions of each build stage, FROM first; global ARGs before the first FROM are dropped."""
    found: list[list[Instruction]] = []
    for instruction in instructions():
        if instruction.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def global_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for instruction in instructions():
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
    return args


def base_image(stage: list[Instruction]) -> str:
    image = stage[0].arguments.split()[0]
    for name, value in global_args().items():
        image = image.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return image


@dataclass(frozen=True)
class Pip:
    """One `pip SUBCOMMAND ...` of a RUN: the venv whose pip it is, the subcommand, its arguments."""

    venv: str
    subcommand: str
    arguments: list[str]

    def option(self, *names: str) -> str | None:
        """The value of an option given as `-r FILE` or `--requirement=FILE`."""
        for index, word in enumerate(self.arguments):
            for name in names:
                if word == name and index + 1 < len(self.arguments):
                    return self.arguments[index + 1]
                if word.startswith(f"{name}="):
                    return word.partition("=")[2]
        return None

    def positional(self) -> list[str]:
        valued = {"-r", "--requirement", "-c", "--constraint", "-w", "--wheel-dir", "-i", "--index-url"}
        found: list[str] = []
        for index, word in enumerate(self.arguments):
            if not word.startswith("-") and not (index and self.arguments[index - 1] in valued):
                found.append(word)
        return found


def pip_commands(stage: list[Instruction]) -> list[Pip]:
    """Every pip command of a stage's RUN instructions (`venv/bin/pip ...` or `python -m pip ...`)."""
    found: list[Pip] = []
    for instruction in stage:
        if instruction.keyword != "RUN":
            continue
        for command in re.split(r"&&|\|\||;", instruction.arguments):
            words = shlex.split(command)
            for index, word in enumerate(words):
                program = word.removesuffix("3")  # pip or pip3
                if program.endswith("/pip") or program == "pip":
                    venv = program.removesuffix("pip").removesuffix("/").removesuffix("/bin") or "(system)"
                    rest = words[index + 1 :]
                elif word == "-m" and words[index + 1 : index + 2] == ["pip"]:
                    venv = words[index - 1].removesuffix("/python").removesuffix("/bin") if index else ""
                    rest = words[index + 2 :]
                else:
                    continue
                if rest:
                    found.append(Pip(venv, rest[0], rest[1:]))
                break
    return found


def assignments(instruction: Instruction) -> Iterator[tuple[str, str]]:
    """The NAME=value pairs of an ENV, ARG or LABEL."""
    for word in shlex.split(instruction.arguments):
        name, _, value = word.partition("=")
        yield name, value


def test_hadolint_finds_nothing() -> None:
    run_ok([tool("hadolint"), "--failure-threshold", "style", DOCKERFILE])


def test_every_stage_builds_on_one_exact_tag_of_slim_python_3_11() -> None:
    assert stages(), "no FROM"
    images = {base_image(stage) for stage in stages()}
    assert len(images) == 1, f"every stage on the same base image (ARG PYTHON_IMAGE), not {sorted(images)}"
    image = images.pop()
    # An exact patch version and Debian release; never `latest`, `3`, `3.11` or `3.11-slim`, which move.
    # A release may add the digest (deploy/README.md, "Releases: pinned dependencies and base image").
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    # The locks are resolved for this Python (tests/deploy/test_lock.py checks their headers).
    assert image.partition("@")[0] == locking.target().image


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = [instruction.arguments for instruction in stages()[-1] if instruction.keyword == "USER"]
    assert users, "the final stage never leaves root"
    user, _, group = users[-1].partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without a runAsUser.
    assert user.isdigit() and int(user) != 0, users[-1]
    assert not group or (group.isdigit() and int(group) != 0)


def test_no_secret_is_baked_into_the_image() -> None:
    for instruction in instructions():
        if instruction.keyword in ("ENV", "ARG"):
            for name, value in assignments(instruction):
                assert not SECRET_NAMES.search(name), f"{instruction.keyword} {name}: pass it at run time"
                assert credentials(value)[1] is None, (
                    f"{instruction.keyword} {name} holds a URL with a password"
                )
        assert instruction.keyword != "ADD", "COPY, not ADD: nothing fetched or unpacked implicitly"
        if instruction.keyword == "RUN":
            assert not re.search(r"\b(curl|wget)\b", instruction.arguments), "no download outside pip"


def build_instructions() -> list[Instruction]:
    return [i for stage in stages()[:-1] for i in stage] or stages()[-1]


def runtime_venvs() -> set[str]:
    """The directories the final stage copies from the build stage (the venv Reckon runs from)."""
    found: set[str] = set()
    for instruction in stages()[-1]:
        if instruction.keyword == "COPY" and "--from=" in instruction.arguments:
            found |= {word for word in shlex.split(instruction.arguments)[:-1] if not word.startswith("--")}
    return found


def test_every_pip_install_takes_only_hashed_pins_or_the_local_wheel() -> None:
    pips = pip_commands(build_instructions())
    installs = [pip for pip in pips if pip.subcommand == "install"]
    assert installs, "no pip install"
    locks = {lock.path.name for lock in locking.LOCKS}
    for pip in installs:
        shown = f"{pip.venv}/bin/pip install {' '.join(pip.arguments)}"
        # --no-deps everywhere: a dependency the lock misses fails `pip check`, it is never fetched.
        assert "--no-deps" in pip.arguments, f"{shown}: --no-deps"
        requirements = pip.option("-r", "--requirement")
        if requirements is not None:
            assert requirements in locks, f"{shown}: install from {sorted(locks)} only"
            assert "--require-hashes" in pip.arguments, f"{shown}: --require-hashes"
            assert not pip.positional(), f"{shown}: nothing but the lock"
        else:
            targets = pip.positional()
            assert targets and all(target.endswith(".whl") for target in targets), (
                f"{shown}: only the wheel built from these sources, or a lock with --require-hashes"
            )
    assert not [pip for pip in pips if pip.subcommand == "download"]


def test_the_runtime_venv_gets_requirements_lock_and_the_reckon_wheel() -> None:
    installs = [pip for pip in pip_commands(build_instructions()) if pip.subcommand == "install"]
    runtime = runtime_venvs()
    locked = {pip.venv for pip in installs if pip.option("-r", "--requirement") == locking.RUNTIME.path.name}
    wheels = {pip.venv for pip in installs if any("reckon-" in target for target in pip.positional())}
    assert locked and locked == wheels, f"requirements.lock into {locked}, Reckon's wheel into {wheels}"
    assert locked <= runtime, f"the final stage copies {runtime}, not the venv the lock went into ({locked})"
    built = {pip.venv for pip in installs if pip.option("-r", "--requirement") == locking.BUILD.path.name}
    assert built and not built & runtime, "the build backend is installed from its lock, outside the image"
    copied = {word for i in build_instructions() if i.keyword == "COPY" for word in shlex.split(i.arguments)}
    assert {lock.path.name for lock in locking.LOCKS} <= copied


def test_it_builds_reckon_from_pyproject_with_the_locked_backend_and_no_dev_extras() -> None:
    build = build_instructions()
    copied = {source for i in build if i.keyword == "COPY" for source in shlex.split(i.arguments)[:-1]}
    assert "pyproject.toml" in copied and set(PACKAGES) <= copied
    wheels = [pip for pip in pip_commands(build) if pip.subcommand == "wheel"]
    assert len(wheels) == 1, "one `pip wheel .` builds Reckon"
    (wheel,) = wheels
    assert wheel.positional() == ["."], wheel.arguments
    # No build isolation: the backend is the one requirements-build.lock put in that venv, not an
    # unpinned setuptools fetched for the build.
    assert {"--no-deps", "--no-build-isolation"} <= set(wheel.arguments), wheel.arguments
    backends = {
        pip.venv
        for pip in pip_commands(build)
        if pip.subcommand == "install" and pip.option("-r", "--requirement") == locking.BUILD.path.name
    }
    assert backends == {wheel.venv}
    words = shlex.split(" ".join(i.arguments for i in build if i.keyword == "RUN"))
    assert "-e" not in words and "--editable" not in words
    assert "[dev]" not in DOCKERFILE.read_text(encoding="utf-8"), "no dev extras in the image"


def test_the_entrypoint_is_reckon_so_the_command_picks_the_role() -> None:
    entrypoints = [i.arguments for i in stages()[-1] if i.keyword == "ENTRYPOINT"]
    assert entrypoints == ['["reckon"]']
    exposed = [i.arguments for i in stages()[-1] if i.keyword == "EXPOSE"]
    assert exposed == ["8080"]


# --- .dockerignore ---


def translate(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker matches it: `**` any depth, `*` and `?` within a segment."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(re-included?, pattern) for each line of .dockerignore, in order."""
    found: list[tuple[bool, re.Pattern[str]]] = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        included = line.startswith("!")
        found.append((included, translate(line.removeprefix("!").strip().strip("/"))))
    return found


def in_context(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for reincluded, pattern in rules():
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            included = reincluded
    return included


def package_files() -> list[str]:
    return sorted(
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )


def test_the_build_context_holds_everything_the_image_is_built_from() -> None:
    files = package_files()
    assert "accounting/store/alembic.ini" in files
    missing = [file for file in files if not in_context(file)]
    assert not missing, f".dockerignore leaves out {missing}"
    locks = tuple(lock.path.name for lock in locking.LOCKS)
    for file in ("pyproject.toml", "README.md", "config/reckon.toml", "config/rate-card.toml", *locks):
        assert in_context(file), file
    for instruction in stages()[0] + stages()[-1]:
        if instruction.keyword == "COPY" and "--from" not in instruction.arguments:
            for source in shlex.split(instruction.arguments)[:-1]:
                path = ROOT / source
                assert path.exists(), f"COPY {source}: no such file"
                assert in_context(source) or any(in_context(f) for f in files if f.startswith(f"{source}/"))


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/config",
        ".env",
        "var/reckon.sqlite3",
        "var/compute.sqlite3",
        "tests/conftest.py",
        "bench/e2e.py",
        "deploy/overlays/dev/kustomization.yaml",
        "deploy/dev-infra/rabbitmq/definitions.json",
        "compose.yaml",
        "Dockerfile",
        "reckon.egg-info/PKG-INFO",
        "accounting/__pycache__/cli.cpython-311.pyc",
        "workers/compute/__pycache__/seed.cpython-311.pyc",
        ".mypy_cache/3.11/accounting/cli.meta.json",
        "build/lib/accounting/cli.py",
    ],
)
def test_the_build_context_leaves_out_what_the_image_must_not_hold(path: str) -> None:
    assert not in_context(path)


def test_the_dockerignore_is_an_allow_list() -> None:
    first = next(pattern for _, pattern in rules())
    assert first.pattern == "[^/]*", ".dockerignore should start with `*` and re-include what the build needs"
