"""Compatibility of the published schemas: a change an old reader cannot ignore needs a new major version.

docs/architecture.md ("Message contracts"): *a minor version may only add what an old reader can
ignore without harm; anything that changes what is owed, or who may send what, is a new message type
or a major version*. Within one major version (one file ``contracts/schemas/<Message>.v<major>.json``)
this refuses what an old reader or writer cannot live with:

- a field removed, or made required (a new required field included);
- a type narrowed: a JSON type dropped (``string`` → ``integer``, ``null`` no longer allowed), a new
  ``enum`` or ``const``, a maximum lowered or a minimum raised (values, lengths, items, properties), a
  pattern or format added or changed, extra properties refused, a new condition (``allOf``, ``if``);
- an enum value removed, or one added to a set not documented as open (``x-open-set``).

Adding optional fields, widening any bound, dropping a restriction and adding a value to an open set
are allowed. A message whose major version changed is a new file, compared with nothing; a file that
disappears while no later major of its message exists is refused (the message type is gone).

``breaking_changes`` and ``compare_schema_sets`` are pure; ``baseline`` reads git: the working tree
against HEAD when ``contracts/schemas/`` differs from HEAD, else HEAD against the previous commit that
changed the folder. ``python -m scripts.schema_compat`` prints the verdict (exit 1 on a break);
``tests/unit/test_schema_history.py`` runs it in CI.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from contracts.messages import OPEN_SET

ROOT = Path(__file__).resolve().parents[1]
FOLDER = "contracts/schemas"
SCHEMA_FILE = re.compile(r"^(?P<message>[A-Za-z][A-Za-z0-9]*)\.v(?P<major>[0-9]+)\.json$")

Schema = Mapping[str, Any] | bool

# Bounds whose new value must not be tighter than the old: (keyword, a new value is tighter when…).
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties", "maxContains")
_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties", "minContains")
_EXACT = ("pattern", "format", "multipleOf", "contentMediaType", "contentEncoding")
_CONDITIONS = ("if", "then", "else", "not", "dependentRequired", "dependentSchemas")


@dataclass(frozen=True)
class Break:
    """One change an old reader cannot ignore: where (``records[].unit``), what kind, and details."""

    path: str
    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path or '(root)'}: {self.kind}" + (f" ({self.detail})" if self.detail else "")


def breaking_changes(old: Schema, new: Schema) -> list[Break]:
    """Every change from ``old`` to ``new`` (two versions of one message's schema, same major) that an
    old reader cannot ignore; empty when ``new`` is a compatible minor version of ``old``."""
    return _Comparison(old, new).run()


def compare_schema_sets(old: Mapping[str, Schema], new: Mapping[str, Schema]) -> list[str]:
    """File name → schema, before and after: one line per break, naming the file (``index.json`` and
    other files not named ``<Message>.v<major>.json`` are ignored)."""
    found: list[str] = []
    majors: dict[str, set[int]] = {}
    for name in new:
        if match := SCHEMA_FILE.match(name):
            majors.setdefault(match["message"], set()).add(int(match["major"]))
    for name, schema in old.items():
        match = SCHEMA_FILE.match(name)
        if match is None:
            continue
        if name not in new:
            later = [major for major in majors.get(match["message"], set()) if major > int(match["major"])]
            if not later:
                found.append(f"{name}: removed, and no later major version of {match['message']} replaces it")
            continue
        found.extend(f"{name}: {problem}" for problem in breaking_changes(schema, new[name]))
    return found


class _Comparison:
    def __init__(self, old: Schema, new: Schema) -> None:
        self.old_root = old
        self.new_root = new
        self.found: list[Break] = []
        self._comparing: set[tuple[str, str]] = set()

    def run(self) -> list[Break]:
        self.found = self._compare(self.old_root, self.new_root, "")
        return self.found

    # $ref -----------------------------------------------------------------------------------------

    def _resolve(self, schema: Schema, root: Schema) -> tuple[Schema, str | None]:
        """``schema`` with a local ``$ref`` followed (its siblings kept), and the ref followed."""
        if not isinstance(schema, Mapping) or "$ref" not in schema:
            return schema, None
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            return schema, None  # a remote reference: compared as written
        target: Any = root
        for part in ref[1:].lstrip("/").split("/") if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            target = target[int(part)] if isinstance(target, list) else target[part]
        resolved, _ = self._resolve(target, root)
        siblings = {key: value for key, value in schema.items() if key != "$ref"}
        if not siblings or not isinstance(resolved, Mapping):
            return resolved, ref
        return {**resolved, **siblings}, ref

    # comparison -----------------------------------------------------------------------------------

    def _compare(self, old: Schema, new: Schema, path: str) -> list[Break]:
        old, old_ref = self._resolve(old, self.old_root)
        new, new_ref = self._resolve(new, self.new_root)
        if old_ref is None and new_ref is None:
            return self._compare_resolved(old, new, path)
        key = (old_ref or "", new_ref or "")
        if key in self._comparing:
            return []  # a recursive schema: this pair is being compared further up
        self._comparing.add(key)
        try:
            return self._compare_resolved(old, new, path)
        finally:
            self._comparing.discard(key)

    def _compare_resolved(self, old: Schema, new: Schema, path: str) -> list[Break]:
        if new is True or new == {}:
            return []  # anything goes now
        if old is False:
            return []  # nothing was valid before
        if new is False:
            return [Break(path, "type narrowed", "nothing is valid any more")]
        old = {} if old is True else old
        assert isinstance(old, Mapping) and isinstance(new, Mapping)
        old_branches, new_branches = _branches(old), _branches(new)
        if len(old_branches) > 1 or len(new_branches) > 1:
            return self._compare_branches(old_branches, new_branches, path)
        return self._compare_one(old, new, path)

    def _compare_branches(
        self, old_branches: list[Schema], new_branches: list[Schema], path: str
    ) -> list[Break]:
        """Each old alternative must still be taken by some new one (``anyOf``/``oneOf``)."""
        found: list[Break] = []
        for old_branch in old_branches:
            best: list[Break] | None = None
            for new_branch in new_branches:
                problems = self._compare(old_branch, new_branch, path)
                if best is None or len(problems) < len(best):
                    best = problems
                if not problems:
                    break
            found.extend(best or [])
        return found

    def _compare_one(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[Break]:
        if _values(old) is not None:
            return list(_enum_changes(old, new, path))  # a finite set: each value must stay valid
        found: list[Break] = []
        found.extend(_types(old, new, path))
        if (values := _values(new)) is not None:
            found.append(Break(path, "enum restriction added", ", ".join(map(_canonical, values))))
        for keyword in _UPPER:
            if keyword in new and (keyword not in old or new[keyword] < old[keyword]):
                was = old.get(keyword, "none")
                found.append(Break(path, f"{keyword} lowered", f"{was} → {new[keyword]}"))
        for keyword in _LOWER:
            if keyword in new and (keyword not in old or new[keyword] > old[keyword]):
                was = old.get(keyword, "none")
                found.append(Break(path, f"{keyword} raised", f"{was} → {new[keyword]}"))
        for keyword in _EXACT:
            if keyword in new and old.get(keyword) != new[keyword]:
                was = old.get(keyword, "none")
                found.append(Break(path, f"{keyword} added or changed", f"{was!r} → {new[keyword]!r}"))
        if new.get("uniqueItems") is True and old.get("uniqueItems") is not True:
            found.append(Break(path, "uniqueItems added"))
        for keyword in _CONDITIONS:
            if keyword in new and _canonical(old.get(keyword)) != _canonical(new[keyword]):
                found.append(Break(path, f"condition added or changed ({keyword})"))
        old_all = {_canonical(item) for item in old.get("allOf", [])}
        for item in new.get("allOf", []):
            if _canonical(item) not in old_all:
                found.append(Break(path, "condition added or changed (allOf)", _canonical(item)[:120]))
        found.extend(self._objects(old, new, path))
        if "items" in old or "items" in new:
            found.extend(self._compare(old.get("items", True), new.get("items", True), f"{path}[]"))
        return found

    def _objects(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[Break]:
        old_properties: Mapping[str, Any] = old.get("properties", {})
        new_properties: Mapping[str, Any] = new.get("properties", {})
        for name, schema in old_properties.items():
            where = f"{path}.{name}" if path else name
            if name not in new_properties:
                yield Break(where, "field removed")
            else:
                yield from self._compare(schema, new_properties[name], where)
        old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
        for name in sorted(new_required - old_required):
            where = f"{path}.{name}" if path else name
            kind = "field made required" if name in old_properties else "required field added"
            yield Break(where, kind)
        if new.get("additionalProperties") is False and old.get("additionalProperties") is not False:
            yield Break(path, "additional properties refused", "an old writer's extra fields are invalid now")
        elif "additionalProperties" in new or "additionalProperties" in old:
            yield from self._compare(
                old.get("additionalProperties", True), new.get("additionalProperties", True), f"{path}.*"
            )
        if "propertyNames" in new:
            yield from self._compare(
                old.get("propertyNames", True), new["propertyNames"], f"{path}.<property name>"
            )


def _branches(schema: Mapping[str, Any]) -> list[Schema]:
    """The alternatives of ``anyOf``/``oneOf`` with the schema's other keywords in each; or itself."""
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema:
            rest = {key: value for key, value in schema.items() if key != keyword}
            return [
                {**rest, **branch} if isinstance(branch, Mapping) else branch for branch in schema[keyword]
            ]
    return [schema]


def _type_set(schema: Mapping[str, Any]) -> set[str] | None:
    kind = schema.get("type")
    if kind is None:
        return None
    kinds = {kind} if isinstance(kind, str) else set(kind)
    return kinds | {"integer"} if "number" in kinds else kinds


def _types(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[Break]:
    old_types, new_types = _type_set(old), _type_set(new)
    if new_types is None:
        return
    if old_types is None:
        yield Break(path, "type narrowed", f"any → {sorted(new_types)}")
    elif lost := old_types - new_types:
        yield Break(
            path,
            "type narrowed",
            f"{sorted(old_types)} → {sorted(new_types)} ({', '.join(sorted(lost))} lost)",
        )


def _values(schema: Mapping[str, Any]) -> list[Any] | None:
    """The values of an ``enum`` or ``const``; None when the schema is not a finite set."""
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema:
        return list(schema["enum"])
    return None


def _enum_changes(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> Iterator[Break]:
    """An old finite set against ``new``: every old value must still be valid, and a value may be
    added only to a set documented as open (``x-open-set``)."""
    old_values, new_values = _values(old) or [], _values(new)
    if refused := [_canonical(value) for value in old_values if not _accepts(new, value)]:
        yield Break(path, "enum value removed", ", ".join(refused))
    if new_values is None:
        return  # the restriction was dropped: any value of the type is valid now
    old_keys = {_canonical(value) for value in old_values}
    added = [_canonical(value) for value in new_values if _canonical(value) not in old_keys]
    if added and old.get(OPEN_SET) is not True:
        yield Break(path, "enum value added to a closed set", ", ".join(added) + f" (not marked {OPEN_SET})")


def _accepts(schema: Mapping[str, Any], value: Any) -> bool:
    """Whether ``schema`` (resolved, without references left) takes ``value``."""
    if "$ref" in _canonical(schema):
        values = _values(schema)
        return values is None or _canonical(value) in {_canonical(known) for known in values}
    return bool(Draft202012Validator(dict(schema)).is_valid(value))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# git ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """Two versions of the schema folder to compare, or why there are none (``reason``)."""

    old_label: str = ""
    old: Mapping[str, Schema] | None = None
    new_label: str = ""
    new: Mapping[str, Schema] | None = None
    reason: str = ""
    history_missing: bool = False
    """True when git or the history needed is not there (no repository, a shallow clone): unlike a
    folder with no earlier version, CI must not take that as a pass."""


class GitError(RuntimeError):
    pass


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise GitError("git is not installed") from None
    if done.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def schemas_at(repo: Path, revision: str, folder: str = FOLDER) -> dict[str, Schema]:
    """The schema files of ``folder`` at ``revision``, parsed."""
    names = (
        _git(repo, "ls-tree", "--name-only", f"{revision}:{folder}").split()
        if _has(repo, revision, folder)
        else []
    )
    return {
        name: json.loads(_git(repo, "show", f"{revision}:{folder}/{name}"))
        for name in names
        if name.endswith(".json")
    }


def _has(repo: Path, revision: str, folder: str) -> bool:
    try:
        _git(repo, "rev-parse", "--verify", "--quiet", f"{revision}:{folder}")
    except GitError:
        return False
    return True


def schemas_in(folder: Path) -> dict[str, Schema]:
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))}


def baseline(repo: Path = ROOT, folder: str = FOLDER) -> Baseline:
    """What to compare: the working tree against HEAD when ``folder`` differs from HEAD (untracked
    files included), else HEAD against the last earlier commit that changed ``folder``."""
    try:
        _git(repo, "rev-parse", "--verify", "--quiet", "HEAD")
    except GitError as error:
        return Baseline(reason=f"no git history here ({error})", history_missing=True)
    shallow = _git(repo, "rev-parse", "--is-shallow-repository").strip() == "true"
    changed = bool(_git(repo, "status", "--porcelain", "--untracked-files=all", "--", folder).strip())
    if changed:
        head = schemas_at(repo, "HEAD", folder)
        if not head:
            return Baseline(
                reason=f"{folder}/ is new in the working tree: no earlier version", history_missing=shallow
            )
        return Baseline("HEAD", head, "the working tree", schemas_in(repo / folder))
    commits = _git(repo, "log", "--format=%H", "--", folder).split()
    if len(commits) < 2:
        where = "is not in any commit" if not commits else f"first appears in {commits[0][:12]}"
        return Baseline(reason=f"{folder}/ {where}: no earlier version", history_missing=shallow)
    newest, previous = commits[0], commits[1]
    return Baseline(
        f"{previous[:12]}",
        schemas_at(repo, previous, folder),
        f"{newest[:12]}",
        schemas_at(repo, newest, folder),
    )


def main() -> int:
    found = baseline()
    if found.old is None or found.new is None:
        print(f"nothing to compare: {found.reason}")
        return 2 if found.history_missing else 0
    problems = compare_schema_sets(found.old, found.new)
    for line in problems:
        print(f"{FOLDER}/{line}", file=sys.stderr)
    verdict = "breaking" if problems else "compatible"
    print(f"{FOLDER}/ {found.new_label} against {found.old_label}: {verdict}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
