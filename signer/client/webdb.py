"""Every SQL statement the client runs against the WebDB, in one place.

The WebDB is the CAcert web application's MySQL/MariaDB database (MyISAM, no
transactions); an embedded sqlite file stands in for it in the demo and small
setups. Access goes through :class:`twisted.enterprise.adbapi.ConnectionPool`
(threads), so nothing blocks the reactor.

- Statements are written once with ``?`` placeholders; :meth:`WebDB._sql`
  turns them into ``%s`` for PyMySQL. Table names never come from data: they
  are checked against :data:`CERT_TABLES`.
- The polling queries filter on the indexed columns (``crt_name`` for pending
  requests, ``revoked`` for revocations) so that a round stays cheap with
  millions of rows.
- A lost MySQL connection (server restart, ``wait_timeout``) is retried with a
  fresh connection (``cp_reconnect``) up to ``retries`` times; after that the
  error reaches the caller, who logs it and tries again next round.
- ``NOW()`` is MySQL's; the sqlite pool registers a ``NOW()`` function giving
  UTC ``YYYY-MM-DD HH:MM:SS``.
"""

from __future__ import annotations

import datetime
import sqlite3
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from signer.client.config import DatabaseConfig

#: The four X.509 tables, in polling order.
CERT_TABLES: tuple[str, ...] = ("emailcerts", "domaincerts", "orgemailcerts", "orgdomaincerts")
#: The column naming the owner of a row in each X.509 table.
OWNER_COLUMN: dict[str, str] = {
    "emailcerts": "memid",
    "domaincerts": "domid",
    "orgemailcerts": "orgid",
    "orgdomaincerts": "orgid",
}
ORG_TABLES = frozenset({"orgemailcerts", "orgdomaincerts"})
SERVER_TABLES = frozenset({"domaincerts", "orgdomaincerts"})
CLIENT_TABLES = frozenset({"emailcerts", "orgemailcerts"})
#: ``revoked`` value meaning "please revoke".
REVOKE_REQUESTED = "1970-01-01 10:00:01"
#: MySQL error numbers of a connection that went away.
_LOST_CONNECTION_ERRORS = {2003, 2006, 2013, 2055, 1927}

log = Logger()


@dataclass(frozen=True)
class CertRow:
    """One row of an X.509 table, as far as the client uses it."""

    table: str
    id: int
    owner: int  # memid, domid or orgid depending on the table
    cn: str
    subject: str
    keytype: str
    codesign: bool
    rootcert: int
    md: str
    type: int
    warning: int
    serial: str
    crt_name: str


@dataclass(frozen=True)
class GpgRow:
    """One row of ``gpg``."""

    id: int
    memid: int
    email: str
    warning: int
    crt: str


@dataclass(frozen=True)
class Recipient:
    """Who gets a mail: address, first name and language (may be empty)."""

    memid: int
    email: str
    fname: str
    language: str


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _int(value: Any) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bytes):
        return int.from_bytes(value, "big") if len(value) == 1 else int(value)
    return int(value)


def _sqlite_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _sqlite_open(connection: sqlite3.Connection) -> None:
    connection.create_function("NOW", 0, _sqlite_now)


def _check_table(table: str) -> str:
    if table not in CERT_TABLES:
        raise ValueError(f"not a certificate table: {table!r}")
    return table


_CERT_COLUMNS = (
    "id, {owner}, CN, subject, {keytype}, {codesign}, rootcert, md, type, warning, serial, crt_name"
)


def _columns(table: str) -> str:
    client = table in CLIENT_TABLES
    return _CERT_COLUMNS.format(
        owner=OWNER_COLUMN[table],
        keytype="keytype" if client else "''",
        codesign="codesign" if client else "0",
    )


def _cert_row(table: str, row: Sequence[Any]) -> CertRow:
    return CertRow(
        table=table,
        id=_int(row[0]),
        owner=_int(row[1]),
        cn=_text(row[2]),
        subject=_text(row[3]),
        keytype=_text(row[4]),
        codesign=bool(_int(row[5])),
        rootcert=_int(row[6]),
        md=_text(row[7]),
        type=_int(row[8]),
        warning=_int(row[9]),
        serial=_text(row[10]),
        crt_name=_text(row[11]),
    )


class WebDB:
    """The WebDB through an adbapi pool; every method returns a Deferred."""

    def __init__(self, pool: adbapi.ConnectionPool, dialect: str, retries: int = 3) -> None:
        if dialect not in ("mysql", "sqlite"):
            raise ValueError(f"unknown dialect {dialect!r}")
        self.pool = pool
        self.dialect = dialect
        self.retries = retries

    @classmethod
    def from_config(cls, config: DatabaseConfig) -> "WebDB":
        """Open a pool for ``config`` (connections are made lazily)."""
        if config.driver == "sqlite":
            pool = adbapi.ConnectionPool(
                "sqlite3",
                str(config.sqlite_path),
                check_same_thread=False,
                isolation_level=None,
                cp_min=1,
                cp_max=1,
                cp_openfun=_sqlite_open,
                cp_noisy=False,
            )
            return cls(pool, "sqlite", config.retries)
        pool = adbapi.ConnectionPool(
            "pymysql",
            host=config.host,
            port=config.port,
            user=config.user,
            password=config.password,
            database=config.database,
            charset=config.charset,
            autocommit=True,
            connect_timeout=10,
            cp_reconnect=True,
            cp_min=1,
            cp_max=2,
            cp_noisy=False,
        )
        return cls(pool, "mysql", config.retries)

    def close(self) -> None:
        """Close every pooled connection."""
        self.pool.close()

    # -- plumbing ----------------------------------------------------------

    def _sql(self, statement: str) -> str:
        """The statement in the driver's paramstyle (``?`` or ``%s``)."""
        return statement.replace("?", "%s") if self.dialect == "mysql" else statement

    def _is_lost_connection(self, error: BaseException) -> bool:
        if isinstance(error, adbapi.ConnectionLost):
            return True
        if self.dialect == "mysql":
            import pymysql

            if isinstance(error, pymysql.err.InterfaceError):
                return True
            if isinstance(error, pymysql.err.OperationalError):
                code = error.args[0] if error.args else None
                return code in _LOST_CONNECTION_ERRORS
        return False

    @inlineCallbacks
    def _retrying(self, run: Callable[[], Deferred[Any]], what: str) -> Any:
        attempt = 0
        while True:
            try:
                result = yield run()
                return result
            except Exception as error:
                attempt += 1
                if not self._is_lost_connection(error) or attempt > self.retries:
                    raise
                log.warn(
                    "WebDB connection lost during {what} ({error}); retry {attempt} of {retries}",
                    what=what,
                    error=str(error) or type(error).__name__,
                    attempt=attempt,
                    retries=self.retries,
                )

    def _query(self, statement: str, args: Sequence[Any] = ()) -> Deferred[list[tuple[Any, ...]]]:
        sql = self._sql(statement)
        return self._retrying(lambda: self.pool.runQuery(sql, tuple(args)), statement.split()[0])

    def _execute(self, statement: str, args: Sequence[Any] = ()) -> Deferred[None]:
        sql = self._sql(statement)
        return self._retrying(lambda: self.pool.runOperation(sql, tuple(args)), statement.split()[0])

    # -- polling queries ---------------------------------------------------

    @inlineCallbacks
    def pending_openpgp(self, threshold: int) -> Any:
        """``gpg`` rows waiting to be signed (``crt = ''``, ``csr != ''``), below the threshold."""
        rows = yield self._query(
            "SELECT id, memid, email, warning, crt FROM gpg "
            "WHERE crt = '' AND csr != '' AND warning < ? ORDER BY id",
            (threshold,),
        )
        return [GpgRow(_int(r[0]), _int(r[1]), _text(r[2]), _int(r[3]), _text(r[4])) for r in rows]

    @inlineCallbacks
    def pending_certificates(self, table: str, threshold: int) -> Any:
        """Rows of ``table`` waiting to be signed, below the warning threshold.

        ``crt_name = ''`` comes first so the ``crt_name`` index narrows the scan.
        """
        table = _check_table(table)
        rows = yield self._query(
            f"SELECT {_columns(table)} FROM {table} "
            "WHERE crt_name = '' AND csr_name != '' AND warning < ? ORDER BY id",
            (threshold,),
        )
        return [_cert_row(table, row) for row in rows]

    @inlineCallbacks
    def pending_revocations(self, table: str) -> Any:
        """Rows of ``table`` whose ``revoked`` says "please revoke" (``revoked`` index)."""
        table = _check_table(table)
        rows = yield self._query(
            f"SELECT {_columns(table)} FROM {table} WHERE revoked = ? ORDER BY id",
            (REVOKE_REQUESTED,),
        )
        return [_cert_row(table, row) for row in rows if _text(row[11])]

    @inlineCallbacks
    def certificate_row(self, table: str, row_id: int) -> Any:
        """One row of ``table`` by id, or None."""
        table = _check_table(table)
        rows = yield self._query(f"SELECT {_columns(table)} FROM {table} WHERE id = ?", (row_id,))
        return _cert_row(table, rows[0]) if rows else None

    @inlineCallbacks
    def openpgp_row(self, row_id: int) -> Any:
        """One ``gpg`` row by id, or None."""
        rows = yield self._query("SELECT id, memid, email, warning, crt FROM gpg WHERE id = ?", (row_id,))
        if not rows:
            return None
        r = rows[0]
        return GpgRow(_int(r[0]), _int(r[1]), _text(r[2]), _int(r[3]), _text(r[4]))

    @inlineCallbacks
    def revocation_done(self, table: str, row_id: int) -> Any:
        """Whether ``revoked`` of the row no longer says "please revoke"."""
        table = _check_table(table)
        rows = yield self._query(f"SELECT revoked FROM {table} WHERE id = ?", (row_id,))
        return bool(rows) and _text(rows[0][0]) != REVOKE_REQUESTED

    # -- facts for requests and mails --------------------------------------

    @inlineCallbacks
    def assurance_points(self, memid: int) -> Any:
        """Sum of ``notary.points`` given to ``memid`` and not deleted."""
        rows = yield self._query(
            "SELECT COALESCE(SUM(points), 0) FROM notary "
            "WHERE `to` = ? AND (deleted = 0 OR deleted = '0000-00-00 00:00:00')",
            (memid,),
        )
        return _int(rows[0][0]) if rows else 0

    @inlineCallbacks
    def domain_owner(self, domid: int) -> Any:
        """``domains.memid`` of a personal server certificate's domain, or None."""
        rows = yield self._query("SELECT memid FROM domains WHERE id = ?", (domid,))
        return _int(rows[0][0]) if rows else None

    @inlineCallbacks
    def users(self, memids: Sequence[int]) -> Any:
        """:class:`Recipient` of every existing user among ``memids`` (in order)."""
        result = []
        for memid in dict.fromkeys(memids):
            rows = yield self._query(
                "SELECT id, email, fname, language FROM users WHERE id = ?", (memid,)
            )
            if rows:
                r = rows[0]
                result.append(Recipient(_int(r[0]), _text(r[1]), _text(r[2]), _text(r[3])))
        return result

    @inlineCallbacks
    def org_admins(self, orgid: int) -> Any:
        """memid of every row of ``org`` for ``orgid``."""
        rows = yield self._query("SELECT memid FROM org WHERE orgid = ? ORDER BY memid", (orgid,))
        return [_int(r[0]) for r in rows]

    @inlineCallbacks
    def owners(self, row: CertRow) -> Any:
        """memids to tell about ``row``: the member, the domain's owner, or every org admin."""
        if row.table == "emailcerts":
            return [row.owner]
        if row.table == "domaincerts":
            owner = yield self.domain_owner(row.owner)
            return [] if owner is None else [owner]
        admins = yield self.org_admins(row.owner)
        return admins

    # -- updates -----------------------------------------------------------

    def mark_signed(self, table: str, row_id: int, crt_name: str, serial: str, expire: str) -> Deferred[None]:
        """Record an issued certificate (legacy ``UPDATE ... crt_name, modified, serial, expire``)."""
        table = _check_table(table)
        return self._execute(
            f"UPDATE {table} SET crt_name = ?, modified = NOW(), serial = ?, expire = ? WHERE id = ?",
            (crt_name, serial, expire, row_id),
        )

    def mark_openpgp_signed(self, row_id: int, crt: str, expire: str) -> Deferred[None]:
        """Record a signed OpenPGP key."""
        return self._execute(
            "UPDATE gpg SET crt = ?, issued = NOW(), expire = ? WHERE id = ?", (crt, expire, row_id)
        )

    def add_warning(self, table: str, row_id: int) -> Deferred[None]:
        """Count one failed attempt on a row of ``table`` (or ``gpg``)."""
        if table != "gpg":
            table = _check_table(table)
        return self._execute(f"UPDATE {table} SET warning = warning + 1 WHERE id = ?", (row_id,))

    def mark_revoked(self, table: str, row_id: int) -> Deferred[None]:
        """``revoked = NOW()`` for a row whose revocation went through.

        Guarded by ``revoked = REVOKE_REQUESTED`` so a repeat never moves the date.
        """
        table = _check_table(table)
        return self._execute(
            f"UPDATE {table} SET revoked = NOW() WHERE id = ? AND revoked = ?",
            (row_id, REVOKE_REQUESTED),
        )

    # -- health ------------------------------------------------------------

    @inlineCallbacks
    def pending_counts(self, threshold: int) -> Any:
        """Rows waiting per table (signing) and per table (revocation)."""
        counts: dict[str, int] = {}
        rows = yield self._query(
            "SELECT COUNT(*) FROM gpg WHERE crt = '' AND csr != '' AND warning < ?", (threshold,)
        )
        counts["gpg"] = _int(rows[0][0])
        for table in CERT_TABLES:
            rows = yield self._query(
                f"SELECT COUNT(*) FROM {table} WHERE crt_name = '' AND csr_name != '' AND warning < ?",
                (threshold,),
            )
            counts[table] = _int(rows[0][0])
            rows = yield self._query(
                f"SELECT COUNT(*) FROM {table} WHERE revoked = ?", (REVOKE_REQUESTED,)
            )
            counts[f"{table}.revoke"] = _int(rows[0][0])
        return counts


#: The polling statements, for EXPLAIN in the benchmark (``?`` placeholders).
def polling_statements(threshold: int = 3) -> list[tuple[str, tuple[Any, ...]]]:
    """``(statement, args)`` of every query an idle polling round runs."""
    statements: list[tuple[str, tuple[Any, ...]]] = [
        (
            "SELECT id, memid, email, warning, crt FROM gpg "
            "WHERE crt = '' AND csr != '' AND warning < ? ORDER BY id",
            (threshold,),
        )
    ]
    for table in CERT_TABLES:
        statements.append(
            (
                f"SELECT {_columns(table)} FROM {table} "
                "WHERE crt_name = '' AND csr_name != '' AND warning < ? ORDER BY id",
                (threshold,),
            )
        )
    for table in CERT_TABLES:
        statements.append(
            (f"SELECT {_columns(table)} FROM {table} WHERE revoked = ? ORDER BY id", (REVOKE_REQUESTED,))
        )
    return statements
