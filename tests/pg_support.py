"""A real PostgreSQL for the tests: Debian's server binaries, a cluster made by `initdb` in a
temp dir, one loopback port, run as the `postgres` OS user (the server refuses root).

One server per test process (started on first use, stopped at exit); each test gets a schema
of its own in one database that has `pg_trgm` (the URL names it: asyncpg passes the query
`?search_path=…` on as a setting), which takes milliseconds where a database takes a second.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

PG_BIN = Path(os.environ.get("RELAY_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"
TEMPLATE = "relay_template"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(args: list[str]) -> list[str]:
    """Root must hand the server to the postgres user; anyone else runs it as themselves."""
    return ["runuser", "-u", OS_USER, "--", *args] if os.geteuid() == 0 else args


class PgServer:
    """`initdb`, `start`, `stop`, `restart`; `url(db)` is what `journal.url` takes."""

    def __init__(self, *, fsync: bool = False, settings: dict[str, str] | None = None) -> None:
        if not (PG_BIN / "postgres").exists():
            raise RuntimeError(f"no PostgreSQL server at {PG_BIN}: apt-get install postgresql (or set RELAY_PG_BIN)")
        self.root = Path(tempfile.mkdtemp(prefix="relay-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.fsync = fsync
        self.settings = settings or {}
        self.proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam(OS_USER)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            _as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                          "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 30.0) -> None:
        args = [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
                "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "max_connections=200",
                "-c", "shared_buffers=32MB", "-c", "log_min_messages=fatal"]
        if not self.fsync:
            args += ["-c", "full_page_writes=off"]
        for key, value in self.settings.items():
            args += ["-c", f"{key}={value}"]
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(_as_postgres(args), stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.root / 'server.log').read_text()[-2000:]}")
            ready = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"], check=False
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres did not accept connections on port {self.port} within {timeout}s")

    def stop(self, mode: str = "fast") -> None:
        """`fast` is a clean shutdown; `immediate` is as abrupt as a crash (recovery on start)."""
        if self.proc is None:
            return
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


_server: PgServer | None = None
_names = itertools.count(1)


def server() -> PgServer:
    """The process's one test server, started (with the template database) on first use."""
    global _server
    if _server is None:
        srv = PgServer()
        try:
            srv.start()
            subprocess.run(
                [str(PG_BIN / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(srv.port),
                 "-U", "postgres", "-d", "postgres", "-c", f"CREATE DATABASE {TEMPLATE}"],
                check=True, stdout=subprocess.DEVNULL,
            )
            subprocess.run(
                [str(PG_BIN / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(srv.port),
                 "-U", "postgres", "-d", TEMPLATE, "-c", "CREATE EXTENSION pg_trgm"],
                check=True, stdout=subprocess.DEVNULL,
            )
        except BaseException:
            srv.cleanup()
            raise
        atexit.register(srv.cleanup)
        _server = srv
    return _server


async def new_database(srv: PgServer | None = None) -> str:
    """A fresh, empty place for a journal (pg_trgm reachable); returns its URL."""
    srv = srv or server()
    name = f"t{os.getpid()}_{next(_names)}"
    conn = await asyncpg.connect(srv.url(TEMPLATE))
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
    finally:
        await conn.close()
    return f"{srv.url(TEMPLATE)}?search_path={name},public"


async def drop_database(url: str) -> None:
    name = url.rsplit("search_path=", 1)[1].split(",")[0]
    conn = await asyncpg.connect(server().url(TEMPLATE))
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        await conn.close()


async def sql(url: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    """A look at the database from outside the journal's own connections."""
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(statement, *args))
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    return server()


@pytest.fixture
async def pg_url(pg_server: PgServer) -> AsyncIterator[str]:
    """A database of its own for one test, dropped afterwards."""
    url = await new_database(pg_server)
    yield url
    await drop_database(url)


OpenDb = Callable[[], Awaitable[str]]
