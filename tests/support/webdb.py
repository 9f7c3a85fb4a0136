"""A throw-away WebDB for tests: the tables the client touches, on sqlite or MariaDB.

The schema follows the CAcert web application's tables as far as
``client.md`` describes them (column names, ``0000-00-00 00:00:00`` defaults,
MyISAM, the ``crt_name`` and ``revoked`` indexes). Two liberties, both
harmless for the client: ``md`` is a ``varchar`` rather than an enum (so a
test can store an unknown digest name even in strict mode), and only the
columns the client or the tests use are present in ``users``.

:func:`sqlite_webdb` and :func:`mariadb_webdb` return a :class:`TestWebDB`
with synchronous seeding helpers; :func:`mariadb_webdb` creates a database
with a unique name that :meth:`TestWebDB.drop` removes.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

from signer.client.config import DatabaseConfig
from signer.client.schema import MYSQL_SCHEMA, SQLITE_SCHEMA  # noqa: F401 (re-exported)

MARIADB_HOST = os.environ.get("SIGNER_MARIADB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("SIGNER_MARIADB_PORT", "3306"))
MARIADB_USER = os.environ.get("SIGNER_MARIADB_USER", "root")
MARIADB_PASSWORD = os.environ.get("SIGNER_MARIADB_PASSWORD", "")

ZERO = "0000-00-00 00:00:00"
REVOKE_REQUESTED = "1970-01-01 10:00:01"

class MariaDBUnavailable(Exception):
    """MariaDB cannot be reached on the configured address."""


class TestWebDB:
    """A seeded WebDB reachable synchronously (for tests) and via its :attr:`config`."""

    __test__ = False  # not a pytest class

    def __init__(self, dialect: str, connection: Any, config: DatabaseConfig, name: str) -> None:
        self.dialect = dialect
        self.connection = connection
        self.config = config
        self.name = name

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.dialect == "mysql" else statement

    def execute(self, statement: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; return the last inserted id."""
        cursor = self.connection.cursor()
        try:
            cursor.execute(self._sql(statement), tuple(args))
            if self.dialect == "sqlite":
                self.connection.commit()
            return int(cursor.lastrowid or 0)
        finally:
            cursor.close()

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        cursor = self.connection.cursor()
        try:
            cursor.executemany(self._sql(statement), [tuple(row) for row in rows])
            if self.dialect == "sqlite":
                self.connection.commit()
        finally:
            cursor.close()

    def query(self, statement: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.connection.cursor()
        try:
            cursor.execute(self._sql(statement), tuple(args))
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def row(self, table: str, row_id: int) -> dict[str, Any]:
        """One row as a dict of column -> value (datetimes as text)."""
        cursor = self.connection.cursor()
        try:
            cursor.execute(self._sql(f"SELECT * FROM {table} WHERE id = ?"), (row_id,))
            names = [d[0] for d in cursor.description]
            values = cursor.fetchone()
        finally:
            cursor.close()
        if values is None:
            raise KeyError(f"{table} has no row {row_id}")
        result = {}
        for name, value in zip(names, values):
            if hasattr(value, "strftime"):
                value = value.strftime("%Y-%m-%d %H:%M:%S")
            result[name] = value
        return result

    # -- seeding -------------------------------------------------------------

    def add_user(self, memid: int, email: str, fname: str = "Alice", language: str = "en_US") -> None:
        self.execute(
            "INSERT INTO users (id, email, fname, lname, language) VALUES (?, ?, ?, 'Tester', ?)",
            (memid, email, fname, language),
        )

    def add_points(self, memid: int, points: int, deleted: str = ZERO) -> None:
        self.execute(
            "INSERT INTO notary (`from`, `to`, points, awarded, deleted) VALUES (1, ?, ?, ?, ?)",
            (memid, points, points, deleted),
        )

    def add_domain(self, domid: int, memid: int, domain: str = "example.org") -> None:
        self.execute("INSERT INTO domains (id, memid, domain) VALUES (?, ?, ?)", (domid, memid, domain))

    def add_org_admin(self, orgid: int, memid: int) -> None:
        self.execute("INSERT INTO org (orgid, memid) VALUES (?, ?)", (orgid, memid))

    def add_cert(
        self,
        table: str,
        row_id: int,
        owner: int,
        subject: str,
        cn: str = "",
        csr_name: str = "pending.csr",
        md: str = "sha256",
        rootcert: int = 1,
        codesign: int = 0,
        keytype: str = "",
        type: int | None = None,
        warning: int = 0,
        crt_name: str = "",
        revoked: str = ZERO,
        serial: str = "",
    ) -> None:
        """Insert a row into one of the four X.509 tables."""
        owner_column = {"emailcerts": "memid", "domaincerts": "domid"}.get(table, "orgid")
        columns = [
            "id", owner_column, "CN", "subject", "csr_name", "crt_name", "md", "rootcert",
            "warning", "revoked", "serial", "type",
        ]
        values: list[Any] = [
            row_id, owner, cn, subject, csr_name, crt_name, md, rootcert, warning, revoked, serial, type,
        ]
        if table in ("emailcerts", "orgemailcerts"):
            columns += ["codesign", "keytype"]
            values += [codesign, keytype]
        marks = ", ".join("?" for _ in values)
        self.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", values)

    def add_gpg(self, row_id: int, memid: int, email: str, csr: str = "pending.csr", warning: int = 0) -> None:
        self.execute(
            "INSERT INTO gpg (id, memid, email, csr, warning) VALUES (?, ?, ?, ?, ?)",
            (row_id, memid, email, csr, warning),
        )

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:
            pass

    def drop(self) -> None:
        """Remove the database (MariaDB) and close the connection."""
        if self.dialect == "mysql":
            self.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        self.close()


def sqlite_webdb(path: Path) -> TestWebDB:
    """A fresh sqlite WebDB file at ``path`` with every table."""
    connection = sqlite3.connect(str(path), check_same_thread=False)
    for statement in SQLITE_SCHEMA:
        connection.execute(statement)
    connection.commit()
    return TestWebDB("sqlite", connection, DatabaseConfig(driver="sqlite", sqlite_path=path), str(path))


def mariadb_connect(database: str | None = None) -> Any:
    """A PyMySQL connection to the test server (autocommit).

    :raises MariaDBUnavailable: when the server cannot be reached.
    """
    import pymysql

    try:
        return pymysql.connect(
            host=MARIADB_HOST,
            port=MARIADB_PORT,
            user=MARIADB_USER,
            password=MARIADB_PASSWORD,
            database=database,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=5,
        )
    except pymysql.err.OperationalError as exc:
        raise MariaDBUnavailable(
            f"MariaDB on {MARIADB_HOST}:{MARIADB_PORT} as {MARIADB_USER}: {exc}"
        ) from None


def mariadb_webdb(name: str | None = None, schema: bool = True) -> TestWebDB:
    """A throw-away MariaDB database with every table (drop it with :meth:`TestWebDB.drop`)."""
    name = name or f"signer_test_{uuid.uuid4().hex[:12]}"
    connection = mariadb_connect()
    cursor = connection.cursor()
    cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    cursor.execute(f"USE `{name}`")
    if schema:
        for statement in MYSQL_SCHEMA:
            cursor.execute(statement)
    cursor.close()
    config = DatabaseConfig(
        driver="mysql",
        host=MARIADB_HOST,
        port=MARIADB_PORT,
        user=MARIADB_USER,
        database=name,
        password=MARIADB_PASSWORD,
    )
    return TestWebDB("mysql", connection, config, name)
