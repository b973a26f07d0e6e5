"""deploy/scripts: how the backup and restore scripts read the store's URL, without a database.

RECKON_STORE_URL is SQLAlchemy's form; pg_dump, pg_restore and psql read libpq's PG* variables.
(tests/e2e/test_backup_restore.py runs both scripts on a real PostgreSQL.)"""

from __future__ import annotations

import shutil

import pytest

from tests.deploy.tools import DEPLOY, run

SCRIPTS = DEPLOY / "scripts"
LIBRARY = SCRIPTS / "lib" / "libpq-env.sh"
VARIABLES = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE", "PGSSLROOTCERT")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the scripts are bash")


def libpq_environment(url: str, **preset: str) -> dict[str, str]:
    """What ``libpq_env`` exports for ``url`` (with ``preset`` PG* variables already set)."""
    printing = "; ".join(f'printf "%s=%s\\n" {name} "${{{name}-<unset>}}"' for name in VARIABLES)
    environment = {"PATH": "/usr/bin:/bin", "RECKON_STORE_URL": url, **preset}
    completed = run(["bash", "-c", f'. "$0"; libpq_env; {printing}', LIBRARY], env=environment)
    assert completed.returncode == 0, completed.stderr
    found = dict(line.split("=", 1) for line in completed.stdout.splitlines())
    return {name: value for name, value in found.items() if value != "<unset>"}


def test_the_coordinators_asyncpg_url_becomes_libpqs_variables_with_the_password_decoded() -> None:
    url = "postgresql+asyncpg://reckon:p%40ss%3Aw%2Fo%3Frd%23%25@db.example.com:6432/reckon?ssl=require"

    assert libpq_environment(url) == {
        "PGHOST": "db.example.com",
        "PGPORT": "6432",
        "PGUSER": "reckon",
        "PGPASSWORD": "p@ss:w/o?rd#%",
        "PGDATABASE": "reckon",
        "PGSSLMODE": "require",
    }


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@[::1]:5433/db", {
            "PGHOST": "::1", "PGPORT": "5433", "PGUSER": "u", "PGDATABASE": "db",
        }),
        ("postgres://h/db?sslmode=verify-full&sslrootcert=/ca.pem", {
            "PGHOST": "h", "PGDATABASE": "db", "PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/ca.pem",
        }),
        ("postgresql+asyncpg://u:pw@h/db?ssl=true", {
            "PGHOST": "h", "PGUSER": "u", "PGPASSWORD": "pw", "PGDATABASE": "db", "PGSSLMODE": "require",
        }),
    ],
)  # fmt: skip
def test_other_forms_of_the_url(url: str, expected: dict[str, str]) -> None:
    assert libpq_environment(url) == expected


def test_what_the_url_leaves_out_comes_from_the_pg_variables_already_set() -> None:
    found = libpq_environment("postgresql+asyncpg://reckon@db/reckon", PGPASSWORD="from-env", PGPORT="7000")

    assert found["PGPASSWORD"] == "from-env" and found["PGPORT"] == "7000" and found["PGHOST"] == "db"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite+aiosqlite:///var/reckon.sqlite3", "SQLite"),
        ("mysql://u:secret-pw@h/db", "is not PostgreSQL"),
        ("not a url", "is not a URL"),
        ("postgresql://u:secret-pw@h:port/db", "is not a number"),
    ],
)
def test_a_url_that_is_not_a_postgresql_store_is_refused_without_showing_its_password(
    url: str, message: str
) -> None:
    completed = run(
        ["bash", "-c", '. "$0"; libpq_env', LIBRARY], env={"PATH": "/usr/bin:/bin", "RECKON_STORE_URL": url}
    )

    assert completed.returncode == 1 and message in completed.stderr, completed.stderr
    assert "secret-pw" not in completed.stdout + completed.stderr


@pytest.mark.parametrize("script", ["backup-store.sh", "restore-store.sh"])
def test_each_script_explains_itself_and_refuses_an_unknown_option(script: str) -> None:
    path = SCRIPTS / script
    assert path.stat().st_mode & 0o111, f"{script} must be executable"
    assert path.read_text(encoding="utf-8").splitlines()[:20].count("set -euo pipefail") == 1

    helped = run([path, "--help"])
    refused = run([path, "--no-such-option"])

    assert helped.returncode == 0 and "usage:" in helped.stdout
    assert refused.returncode == 2 and "--no-such-option" in refused.stderr
