"""A real PostgreSQL for tests: the machine's (127.0.0.1:5432, trust auth) when it answers,
otherwise a throwaway cluster (`initdb` + `pg_ctl` on a free port) removed afterwards.

`TEST_POSTGRES_URL` names another server (`postgresql://user@host:port`);
`TEST_POSTGRES=throwaway` forces the throwaway cluster. Tests never share a database with
anything else: `database()` creates one with a unique name and drops it at the end.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import pytest

from benchmarks._postgres import create_database, drop_database
from tests.redis_server import free_port

MACHINE_URL = "postgresql://postgres@127.0.0.1:5432"
START_TIMEOUT_S = 30


def _answers(url: str) -> bool:
    async def ping() -> bool:
        try:
            conn = await asyncpg.connect(f"{url}/postgres", timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    return asyncio.run(ping())


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a server URL without a database name (`postgresql://postgres@host:port`)."""
    if os.environ.get("TEST_POSTGRES_URL"):
        yield os.environ["TEST_POSTGRES_URL"].rstrip("/")
        return
    if os.environ.get("TEST_POSTGRES") != "throwaway" and _answers(MACHINE_URL):
        yield MACHINE_URL
        return
    with throwaway_cluster() as url:
        yield url


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.fail("no PostgreSQL answers and initdb/pg_ctl are not installed (apt postgresql)")
    # PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user.
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    base = tempfile.mkdtemp(prefix="studycall-pg-")
    data = os.path.join(base, "data")
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    port = free_port()
    url = f"postgresql://postgres@127.0.0.1:{port}"
    try:
        subprocess.run(
            [*run_as, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [
                *run_as,
                pg_ctl,
                "-D",
                data,
                "-o",
                options,
                "-l",
                os.path.join(base, "log"),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "start",
            ],
            check=True,
            capture_output=True,
        )
        yield url
    finally:
        subprocess.run(
            [*run_as, pg_ctl, "-D", data, "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def database(server: str) -> Iterator[str]:
    """A database of this test run, dropped at the end (sync: for session fixtures)."""
    url = asyncio.run(create_database(server))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))


__all__ = ["create_database", "database", "drop_database", "postgres_server"]
