"""Write the published JSON Schemas of every message into ``contracts/schemas/``: ``make schemas``.

The schemas are generated from the pydantic models by ``contracts.json_schema`` (pure, no I/O); this
writes them, one file per message type and major version plus ``index.json``, and removes a schema
file no model generates any more. ``--check`` writes nothing and exits 1 naming the files that
differ (``tests/unit/test_schemas.py`` does the same). Run it after changing a model in
``contracts/``, then commit the files: ``tests/unit/test_schema_history.py`` compares them with the
previous commit that changed them and fails on a change an old reader cannot ignore within one major
version (docs/architecture.md, "Message contracts").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from contracts.json_schema import COMMAND, schema_files

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "contracts" / "schemas"


def differences(folder: Path, files: Mapping[str, str]) -> list[str]:
    """What differs between ``folder`` and ``files`` (name → text): one line per file."""
    found: list[str] = []
    for name, text in files.items():
        path = folder / name
        if not path.exists():
            found.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != text:
            found.append(f"{name}: differs from the models")
    found.extend(
        f"{path.name}: no model generates it any more"
        for path in sorted(folder.glob("*.json"))
        if path.name not in files
    )
    return found


def write(folder: Path, files: Mapping[str, str]) -> list[str]:
    """Make ``folder`` hold exactly ``files``; the names of the files written or removed."""
    folder.mkdir(parents=True, exist_ok=True)
    changed: list[str] = []
    for name, text in files.items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    for path in sorted(folder.glob("*.json")):
        if path.name not in files:
            path.unlink()
            changed.append(f"{path.name} (removed)")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.schemas", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files differ")
    args = parser.parse_args(argv)
    files = schema_files()
    relative = SCHEMAS.relative_to(ROOT)
    if args.check:
        found = differences(SCHEMAS, files)
        for line in found:
            print(f"{relative}/{line}", file=sys.stderr)
        if found:
            print(f"run `{COMMAND}` and commit {relative}/", file=sys.stderr)
        return 1 if found else 0
    changed = write(SCHEMAS, files)
    print(f"{relative}/: " + (", ".join(changed) if changed else "up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
