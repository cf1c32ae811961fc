"""A real PostgreSQL server for tests: its own cluster in a temp dir, on a free loopback port.

The binaries come from Debian's ``postgresql`` package (``make test`` installs
it when missing and running as root). PostgreSQL refuses to run as root, so
as root the server runs as the ``postgres`` user the package creates
(``runuser``). ``initdb`` takes seconds here, so one cluster made by it is
kept as a template (in the temp dir, per version) and copied for each run.
Without the binaries the tests that need them fail saying so; they are not
skipped.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.etcd import free_ports

MISSING = (
    "PostgreSQL is not installed: run `make test` as root (it apt-installs postgresql), "
    "or `apt-get install postgresql`, or put PostgreSQL 13+ binaries (initdb, pg_ctl) on PATH"
)


def bin_dir() -> Path:
    """Where initdb and pg_ctl are; fails the test with how to install them."""
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: p.split("/")[4])
    if versions:
        return Path(versions[-1]).parent
    found = shutil.which("pg_ctl")
    if found is None:
        pytest.fail(MISSING, pytrace=False)
    return Path(found).resolve().parent


def _as_user() -> list[str]:
    """The prefix that runs a command as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root and there is no 'postgres' user to run PostgreSQL as")
    return ["runuser", "-u", "postgres", "--"]


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)


@dataclass
class PostgresServer:
    root: Path
    port: int
    bin: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://toolcall@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*_as_user(), str(self.bin / "pg_ctl"), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        try:
            self._ctl("-o", options, "-l", str(self.root / "log"), "-w", "-t", "30", "start")
        except subprocess.CalledProcessError:
            log = (self.root / "log").read_text(errors="replace")[-2000:]
            pytest.fail(f"PostgreSQL did not start:\n{log}", pytrace=False)

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    async def create_database(self) -> str:
        """A new empty database; its DSN."""
        import asyncpg

        name = "t_" + secrets.token_hex(6)
        conn = await asyncpg.connect(self.dsn(), timeout=10)
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()
        return self.dsn(name)


def _template(bin: Path) -> Path:
    """An initdb'd cluster to copy (made once per version and machine boot)."""
    version = bin.parent.name
    template = Path(tempfile.gettempdir()) / f"toolcall-pg-template-{version}"
    if (template / "PG_VERSION").exists():
        return template
    work = Path(tempfile.mkdtemp(prefix="toolcall-pg-init-"))
    _own(work)
    initdb = [str(bin / "initdb"), "-D", str(work / "data"), "-U", "toolcall", "--auth=trust"]
    subprocess.run(
        [*_as_user(), *initdb, "-E", "UTF8", "--no-sync", "--locale=C"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        (work / "data").rename(template)
    except OSError:  # another session made it first
        shutil.rmtree(work, ignore_errors=True)
    return template


def start_server() -> PostgresServer:
    bin = bin_dir()
    root = Path(tempfile.mkdtemp(prefix="toolcall-pg-"))
    _own(root)
    subprocess.run(["cp", "-a", str(_template(bin)), str(root / "data")], check=True)
    server = PostgresServer(root, free_ports(1)[0], bin)
    started = time.monotonic()
    server.start()
    assert time.monotonic() - started < 60
    return server


def stop_server(server: PostgresServer) -> None:
    try:
        server.stop("immediate")
    except subprocess.CalledProcessError:
        pass
    shutil.rmtree(server.root, ignore_errors=True)
