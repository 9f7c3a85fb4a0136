"""The CA database of the signing host: issued certificates, revocations, CRLs.

One SQLite file in the data directory, in WAL mode with ``synchronous=FULL``:
every write is one transaction that is on disk when the method returns, so a
certificate recorded before its answer leaves survives a crash at any point.

Every method blocks (disk I/O); the server calls them from a thread. One
connection is shared behind a lock (``check_same_thread=False``), so the object
may be used from any thread. :meth:`CADatabase.revoked_entries` reads through a
connection of its own inside one read transaction: a consistent snapshot that
does not hold the lock while a million rows stream out.

Layout (all times are integer seconds since the epoch, UTC):

- ``certificates``: one row per (root, serial). ``serial`` is stored as 40
  lowercase hex digits (zero-padded), so serials of up to 160 bits fit and text
  order is numeric order. ``status`` is ``V`` (valid) or ``R`` (revoked);
  expiry is not a status, it follows from ``not_after``.
- ``crls``: the CRL history per root, looked up by SHA-1 to serve deltas.
- ``sequences``: per-root counters: ``crl_number``, ``serial`` (the next
  sequential serial) and ``revocations`` (a generation counter that moves on
  every new revocation, so a CRL cache can tell it is stale).
"""

from __future__ import annotations

import datetime
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

from cryptography import x509

SCHEMA_VERSION = 1
#: SQLite page size of new databases: CRLs of tens of MB are stored and pruned
#: several times faster in 64 KiB pages than in the default 4 KiB ones.
PAGE_SIZE = 65536
#: Serial numbers must be positive and fit in 20 octets (RFC 5280, 4.1.2.2).
MAX_SERIAL = 2**160 - 1
STATUS_VALID = "V"
STATUS_REVOKED = "R"

#: CRL reason names (RFC 5280 5.3.1, the spelling OpenSSL's index.txt uses) and codes.
REASON_CODES: dict[str, int] = {
    "unspecified": 0,
    "keyCompromise": 1,
    "CACompromise": 2,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
    "certificateHold": 6,
    "removeFromCRL": 8,
    "privilegeWithdrawn": 9,
    "AACompromise": 10,
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS certificates (
    root INTEGER NOT NULL,
    serial TEXT NOT NULL CHECK (length(serial) = 40),
    subject TEXT NOT NULL,
    not_before INTEGER,
    not_after INTEGER NOT NULL,
    profile INTEGER,
    status TEXT NOT NULL CHECK (status IN ('V', 'R')),
    revoked_at INTEGER,
    reason TEXT,
    der BLOB,
    issued_at INTEGER,
    request_sha256 TEXT,
    PRIMARY KEY (root, serial),
    CHECK ((status = 'R') = (revoked_at IS NOT NULL))
) WITHOUT ROWID;
DROP INDEX IF EXISTS certificates_revoked;  -- early development name
-- Covers the CRL query: a root's revoked entries in serial order, no table lookups.
CREATE INDEX IF NOT EXISTS certificates_crl
    ON certificates (root, status, serial, revoked_at, not_after, reason);
-- Finds the certificate already issued for an identical request (replays).
CREATE INDEX IF NOT EXISTS certificates_request
    ON certificates (request_sha256) WHERE request_sha256 IS NOT NULL;
CREATE TABLE IF NOT EXISTS crls (
    root INTEGER NOT NULL,
    crl_number INTEGER NOT NULL,
    sha1 TEXT NOT NULL CHECK (length(sha1) = 40),
    der BLOB NOT NULL,
    this_update INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (root, crl_number)
);
CREATE INDEX IF NOT EXISTS crls_sha1 ON crls (root, sha1);
CREATE TABLE IF NOT EXISTS sequences (
    root INTEGER NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (root, name)
);
"""


class CADatabaseError(Exception):
    """The CA database refused an operation (the message says why)."""


class DuplicateSerial(CADatabaseError):
    """A certificate with this serial is already recorded for this root."""


class UnknownCertificate(CADatabaseError):
    """No certificate with this serial is recorded for this root."""


@dataclass(frozen=True)
class CertificateRecord:
    """One issued (or imported) certificate as the database keeps it."""

    root: int
    serial: int
    subject: str
    not_after: datetime.datetime
    status: str = STATUS_VALID
    not_before: datetime.datetime | None = None
    profile: int | None = None
    revoked_at: datetime.datetime | None = None
    reason: str | None = None
    der: bytes | None = None
    issued_at: datetime.datetime | None = None
    request_sha256: str | None = None


class RevokedEntry(NamedTuple):
    """A revoked certificate as a CRL needs it (times in epoch seconds, UTC)."""

    serial: int
    revoked_at: int
    not_after: int
    reason: str | None


@dataclass(frozen=True)
class MergeCounts:
    """What :meth:`CADatabase.merge_records` did."""

    inserted: int
    revoked: int
    unchanged: int


@dataclass(frozen=True)
class StoredCrl:
    """A CRL from the history."""

    root: int
    crl_number: int
    sha1: str
    der: bytes
    this_update: datetime.datetime
    created_at: datetime.datetime


def epoch(when: datetime.datetime) -> int:
    """Whole seconds since the epoch; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp())


def from_epoch(seconds: int) -> datetime.datetime:
    """The aware UTC datetime of ``seconds`` since the epoch."""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def serial_key(serial: int) -> str:
    """The stored form of a serial: 40 lowercase hex digits."""
    if not isinstance(serial, int) or isinstance(serial, bool):
        raise CADatabaseError(f"serial must be an integer, not {type(serial).__name__}")
    if not 0 < serial <= MAX_SERIAL:
        raise CADatabaseError(f"serial {serial:#x} is not a positive number of at most 160 bits")
    return f"{serial:040x}"


def check_reason(reason: str | None) -> str | None:
    """``reason`` when it is a known CRL reason name (or None), else an error."""
    if reason is not None and reason not in REASON_CODES:
        raise CADatabaseError(f"unknown revocation reason {reason!r}")
    return reason


def _opt_epoch(when: datetime.datetime | None) -> int | None:
    return None if when is None else epoch(when)


def _opt_from_epoch(seconds: int | None) -> datetime.datetime | None:
    return None if seconds is None else from_epoch(seconds)


def record_from_certificate(
    root: int,
    certificate: x509.Certificate,
    *,
    profile: int | None = None,
    issued_at: datetime.datetime | None = None,
    request_sha256: str | None = None,
    status: str = STATUS_VALID,
    revoked_at: datetime.datetime | None = None,
    reason: str | None = None,
) -> CertificateRecord:
    """The database record describing ``certificate``."""
    from cryptography.hazmat.primitives.serialization import Encoding

    return CertificateRecord(
        root=root,
        serial=certificate.serial_number,
        subject=certificate.subject.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        profile=profile,
        status=status,
        revoked_at=revoked_at,
        reason=reason,
        der=certificate.public_bytes(Encoding.DER),
        issued_at=issued_at,
        request_sha256=request_sha256,
    )


class RevokedEntries:
    """A snapshot of one root's revoked certificates, streamed in serial order.

    ``generation`` is the root's revocation counter at the time of the
    snapshot. Close it (or use it as a context manager) when not read to the end.
    """

    _BATCH = 20000

    def __init__(self, path: Path, root: int, not_after_after: int | None) -> None:
        self._connection = sqlite3.connect(
            path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None
        )
        try:
            self._connection.execute("BEGIN")
            row = self._connection.execute(
                "SELECT value FROM sequences WHERE root = ? AND name = 'revocations'", (root,)
            ).fetchone()
            self.generation: int = 0 if row is None else int(row[0])
            floor = -(2**62) if not_after_after is None else not_after_after
            self._cursor = self._connection.execute(
                "SELECT serial, revoked_at, not_after, reason FROM certificates"
                " WHERE root = ? AND status = 'R' AND not_after > ? ORDER BY serial",
                (root, floor),
            )
        except BaseException:
            self._connection.close()
            raise
        self._rows = self._iterate()

    def _iterate(self) -> Iterator[RevokedEntry]:
        try:
            while True:
                batch = self._cursor.fetchmany(self._BATCH)
                if not batch:
                    return
                for serial, revoked_at, not_after, reason in batch:
                    yield RevokedEntry(int(serial, 16), revoked_at, not_after, reason)
        finally:
            self.close()

    def raw_batches(self) -> Iterator[list[tuple[str, int, int, str | None]]]:
        """The rows as stored, in batches: (serial as 40 hex digits, revoked_at,
        not_after, reason). For bulk loaders that want no object per row;
        use either this or iteration, not both."""
        try:
            while True:
                batch = self._cursor.fetchmany(self._BATCH)
                if not batch:
                    return
                yield batch
        finally:
            self.close()

    def __iter__(self) -> Iterator[RevokedEntry]:
        return self._rows

    def __next__(self) -> RevokedEntry:
        return next(self._rows)

    def close(self) -> None:
        """Ends the read transaction and closes the private connection."""
        connection = self._connection
        if connection is not None:
            self._connection = None  # type: ignore[assignment]
            connection.close()

    def __enter__(self) -> "RevokedEntries":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class CADatabase:
    """The CA database in the SQLite file ``path`` (created when missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
            )
        except sqlite3.Error as e:
            raise CADatabaseError(f"{self.path}: cannot open the CA database: {e}") from e
        try:
            with self._lock:
                # Big pages for big CRL blobs (only takes effect on a new file).
                self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise CADatabaseError(f"{self.path}: cannot switch to WAL mode (got {mode})")
                self._db.execute("PRAGMA synchronous=FULL")
                # Nothing in here is secret (no keys); zeroing every freed page of a
                # pruned 30 MB CRL costs more than writing the new one.
                self._db.execute("PRAGMA secure_delete=OFF")
                self._db.execute("PRAGMA busy_timeout=30000")
                self._db.executescript(_SCHEMA)
                self._check_schema_version()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise CADatabaseError(f"{self.path}: not a usable CA database: {e}") from e
        except BaseException:
            self._db.close()
            raise

    # -- plumbing ----------------------------------------------------------

    def _check_schema_version(self) -> None:
        with self._transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) != SCHEMA_VERSION:
                raise CADatabaseError(
                    f"{self.path}: schema version {row[0]}, this program knows {SCHEMA_VERSION}"
                )

    def checkpoint(self) -> None:
        """Copies the write-ahead log into the database file (PASSIVE, own connection).

        SQLite does this by itself once the log passes 1000 pages; calling it
        after a big CRL is stored keeps that work off the next request's path.
        Writers are not blocked meanwhile.
        """
        connection = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            connection.close()

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db, self._lock)

    def close(self) -> None:
        """Closes the connection (further calls fail)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> "CADatabase":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @staticmethod
    def _bump(db: sqlite3.Connection, root: int, name: str, by: int = 1) -> int:
        db.execute(
            "INSERT INTO sequences (root, name, value) VALUES (?, ?, ?)"
            " ON CONFLICT (root, name) DO UPDATE SET value = value + excluded.value",
            (root, name, by),
        )
        return int(
            db.execute(
                "SELECT value FROM sequences WHERE root = ? AND name = ?", (root, name)
            ).fetchone()[0]
        )

    @staticmethod
    def _sequence(db: sqlite3.Connection, root: int, name: str) -> int | None:
        row = db.execute(
            "SELECT value FROM sequences WHERE root = ? AND name = ?", (root, name)
        ).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def _row_values(record: CertificateRecord) -> tuple[object, ...]:
        if record.status not in (STATUS_VALID, STATUS_REVOKED):
            raise CADatabaseError(f"status must be V or R, not {record.status!r}")
        if (record.status == STATUS_REVOKED) != (record.revoked_at is not None):
            raise CADatabaseError("a revoked record needs revoked_at, a valid one must not have it")
        return (
            record.root,
            serial_key(record.serial),
            record.subject,
            _opt_epoch(record.not_before),
            epoch(record.not_after),
            record.profile,
            record.status,
            _opt_epoch(record.revoked_at),
            check_reason(record.reason),
            record.der,
            _opt_epoch(record.issued_at),
            record.request_sha256,
        )

    _INSERT = (
        "INSERT INTO certificates (root, serial, subject, not_before, not_after, profile,"
        " status, revoked_at, reason, der, issued_at, request_sha256)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    # -- certificates ------------------------------------------------------

    def record_issued(
        self,
        root: int,
        certificate: x509.Certificate,
        profile: int | None,
        issued_at: datetime.datetime,
        request_sha256: str | None = None,
    ) -> CertificateRecord:
        """Records a freshly issued certificate; committed when this returns.

        :raises DuplicateSerial: the serial is already recorded for ``root``.
        """
        record = record_from_certificate(
            root, certificate, profile=profile, issued_at=issued_at, request_sha256=request_sha256
        )
        self.insert_record(record)
        return record

    def insert_record(self, record: CertificateRecord) -> None:
        """Records one certificate (any status) in its own transaction.

        :raises DuplicateSerial: the serial is already recorded for its root.
        """
        values = self._row_values(record)
        try:
            with self._transaction() as db:
                db.execute(self._INSERT, values)
                if record.status == STATUS_REVOKED:
                    self._bump(db, record.root, "revocations")
        except sqlite3.IntegrityError as e:
            raise DuplicateSerial(
                f"serial {record.serial:#x} is already recorded for root {record.root}"
            ) from e

    def insert_records(self, records: Iterable[CertificateRecord]) -> int:
        """Records many certificates in one transaction (all or none); returns the count.

        :raises DuplicateSerial: one of the serials is already recorded.
        """
        revoked_roots: dict[int, int] = {}

        def rows() -> Iterator[tuple[object, ...]]:
            for record in records:
                if record.status == STATUS_REVOKED:
                    revoked_roots[record.root] = revoked_roots.get(record.root, 0) + 1
                yield self._row_values(record)

        try:
            with self._transaction() as db:
                cursor = db.executemany(self._INSERT, rows())
                count = cursor.rowcount
                for root, revoked in revoked_roots.items():
                    self._bump(db, root, "revocations", revoked)
        except sqlite3.IntegrityError as e:
            raise DuplicateSerial(f"a serial is already recorded: {e}") from e
        return count

    def merge_records(self, records: Iterable[CertificateRecord]) -> MergeCounts:
        """Adds ``records`` in one transaction (all or none), keeping what is known.

        A serial not yet recorded is inserted. A recorded valid one that
        ``records`` says is revoked becomes revoked (time and reason from the
        record, DER filled in when missing). Anything else is left unchanged:
        the database is never made to forget a revocation.
        """
        inserted = revoked = unchanged = 0
        revocations: dict[int, int] = {}
        with self._transaction() as db:
            for record in records:
                values = self._row_values(record)
                key = values[1]
                row = db.execute(
                    "SELECT status FROM certificates WHERE root = ? AND serial = ?",
                    (record.root, key),
                ).fetchone()
                if row is None:
                    db.execute(self._INSERT, values)
                    inserted += 1
                elif row[0] == STATUS_VALID and record.status == STATUS_REVOKED:
                    db.execute(
                        "UPDATE certificates SET status = 'R', revoked_at = ?, reason = ?,"
                        " der = coalesce(der, ?) WHERE root = ? AND serial = ?",
                        (values[7], values[8], values[9], record.root, key),
                    )
                    revoked += 1
                else:
                    unchanged += 1
                    continue
                if record.status == STATUS_REVOKED:
                    revocations[record.root] = revocations.get(record.root, 0) + 1
            for root, count in revocations.items():
                self._bump(db, root, "revocations", count)
        return MergeCounts(inserted, revoked, unchanged)

    def is_issued(self, root: int, serial: int) -> bool:
        """Whether ``serial`` is recorded for ``root`` (revoked or not)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM certificates WHERE root = ? AND serial = ?",
                (root, serial_key(serial)),
            ).fetchone()
        return row is not None

    def get_certificate(self, root: int, serial: int) -> CertificateRecord | None:
        """The record of ``serial`` on ``root``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT root, serial, subject, not_before, not_after, profile, status,"
                " revoked_at, reason, der, issued_at, request_sha256"
                " FROM certificates WHERE root = ? AND serial = ?",
                (root, serial_key(serial)),
            ).fetchone()
        return None if row is None else self._record(row)

    def find_by_request(
        self, root: int, request_sha256: str, issued_since: datetime.datetime
    ) -> CertificateRecord | None:
        """The newest valid certificate issued on ``root`` since ``issued_since``
        for a request with this hash (with its DER), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT root, serial, subject, not_before, not_after, profile, status,"
                " revoked_at, reason, der, issued_at, request_sha256"
                " FROM certificates WHERE request_sha256 = ? AND root = ? AND status = 'V'"
                " AND issued_at >= ? AND der IS NOT NULL ORDER BY issued_at DESC LIMIT 1",
                (request_sha256, root, epoch(issued_since)),
            ).fetchone()
        return None if row is None else self._record(row)

    @staticmethod
    def _record(row: Sequence[Any]) -> CertificateRecord:
        return CertificateRecord(
            root=row[0],
            serial=int(row[1], 16),
            subject=row[2],
            not_before=_opt_from_epoch(row[3]),
            not_after=from_epoch(row[4]),
            profile=row[5],
            status=row[6],
            revoked_at=_opt_from_epoch(row[7]),
            reason=row[8],
            der=row[9],
            issued_at=_opt_from_epoch(row[10]),
            request_sha256=row[11],
        )

    def count_certificates(self, root: int, status: str | None = None) -> int:
        """How many certificates ``root`` has (of ``status`` when given)."""
        with self._lock:
            if status is None:
                row = self._db.execute(
                    "SELECT count(*) FROM certificates WHERE root = ?", (root,)
                ).fetchone()
            else:
                row = self._db.execute(
                    "SELECT count(*) FROM certificates WHERE root = ? AND status = ?",
                    (root, status),
                ).fetchone()
        return int(row[0])

    def mark_revoked(
        self,
        root: int,
        serial: int,
        when: datetime.datetime,
        *,
        reason: str | None = None,
        certificate: x509.Certificate | None = None,
    ) -> bool:
        """Marks ``serial`` revoked at ``when``; returns True when it already was.

        A serial that is not recorded is recorded from ``certificate`` (already
        revoked) when one is given: the caller has checked that this root's key
        signed it, so it is ours even if it predates this database.

        :raises UnknownCertificate: the serial is not recorded and no
            certificate was given.
        """
        key = serial_key(serial)
        check_reason(reason)
        with self._transaction() as db:
            row = db.execute(
                "SELECT status FROM certificates WHERE root = ? AND serial = ?", (root, key)
            ).fetchone()
            if row is not None and row[0] == STATUS_REVOKED:
                return True
            if row is not None:
                db.execute(
                    "UPDATE certificates SET status = 'R', revoked_at = ?, reason = ?"
                    " WHERE root = ? AND serial = ?",
                    (epoch(when), reason, root, key),
                )
            elif certificate is not None:
                if certificate.serial_number != serial:
                    raise CADatabaseError("the certificate given does not carry this serial")
                record = record_from_certificate(
                    root, certificate, status=STATUS_REVOKED, revoked_at=when, reason=reason
                )
                db.execute(self._INSERT, self._row_values(record))
            else:
                raise UnknownCertificate(f"serial {serial:#x} is not recorded for root {root}")
            self._bump(db, root, "revocations")
        return False

    def revocation_generation(self, root: int) -> int:
        """A counter that moves on every new revocation of ``root`` (0 = none yet)."""
        with self._lock:
            value = self._sequence(self._db, root, "revocations")
        return 0 if value is None else value

    def revoked_entries(
        self, root: int, not_after_after: datetime.datetime | int | None = None
    ) -> RevokedEntries:
        """A snapshot of ``root``'s revoked certificates in serial order.

        With ``not_after_after``, only certificates whose notAfter lies after it.
        """
        floor = (
            None
            if not_after_after is None
            else not_after_after
            if isinstance(not_after_after, int)
            else epoch(not_after_after)
        )
        return RevokedEntries(self.path, root, floor)

    # -- sequences ---------------------------------------------------------

    def next_serial(self, root: int, start: int = 1) -> int:
        """The next sequential serial of ``root`` (skipping recorded ones)."""
        with self._transaction() as db:
            value = self._sequence(db, root, "serial")
            candidate = start if value is None else max(value, start)
            while (
                db.execute(
                    "SELECT 1 FROM certificates WHERE root = ? AND serial = ?",
                    (root, serial_key(candidate)),
                ).fetchone()
                is not None
            ):
                candidate += 1
            db.execute(
                "INSERT INTO sequences (root, name, value) VALUES (?, 'serial', ?)"
                " ON CONFLICT (root, name) DO UPDATE SET value = excluded.value",
                (root, candidate + 1),
            )
        serial_key(candidate)
        return candidate

    def raise_serial_floor(self, root: int, next_serial: int) -> None:
        """Makes sure the next sequential serial of ``root`` is at least ``next_serial``."""
        serial_key(next_serial)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO sequences (root, name, value) VALUES (?, 'serial', ?)"
                " ON CONFLICT (root, name) DO UPDATE SET value = max(value, excluded.value)",
                (root, next_serial),
            )

    def next_crl_number(self, root: int) -> int:
        """Allocates the next CRL number of ``root`` (1, 2, ...; never reused)."""
        with self._transaction() as db:
            return self._bump(db, root, "crl_number")

    def raise_crl_number_floor(self, root: int, next_number: int) -> None:
        """Makes sure the next CRL number of ``root`` is at least ``next_number``."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO sequences (root, name, value) VALUES (?, 'crl_number', ?)"
                " ON CONFLICT (root, name) DO UPDATE SET value = max(value, excluded.value)",
                (root, next_number - 1),
            )

    # -- CRL history -------------------------------------------------------

    def store_crl(
        self,
        root: int,
        crl_number: int,
        sha1: str,
        der: bytes,
        this_update: datetime.datetime,
        created_at: datetime.datetime | None = None,
        keep: int | None = None,
    ) -> None:
        """Remembers a CRL under its SHA-1 (lowercase hex).

        With ``keep``, the history of ``root`` is pruned to the newest ``keep``
        CRLs in the same transaction.
        """
        if keep is not None and keep < 1:
            raise CADatabaseError("at least one CRL must be kept")
        sha1 = sha1.lower()
        if len(sha1) != 40 or any(c not in "0123456789abcdef" for c in sha1):
            raise CADatabaseError(f"not a SHA-1 in hex: {sha1!r}")
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO crls (root, crl_number, sha1, der, this_update, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        root,
                        crl_number,
                        sha1,
                        der,
                        epoch(this_update),
                        epoch(created_at or this_update),
                    ),
                )
                if keep is not None:
                    self._prune(db, root, keep)
        except sqlite3.IntegrityError as e:
            raise CADatabaseError(f"CRL number {crl_number} of root {root} is already stored") from e

    def crl_by_sha1(self, root: int, sha1: str) -> bytes | None:
        """The DER of the kept CRL of ``root`` whose SHA-1 is ``sha1``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT der FROM crls WHERE root = ? AND sha1 = ? ORDER BY crl_number DESC LIMIT 1",
                (root, sha1.lower()),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def latest_crl(self, root: int) -> StoredCrl | None:
        """The newest CRL of ``root`` in the history, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT root, crl_number, sha1, der, this_update, created_at FROM crls"
                " WHERE root = ? ORDER BY crl_number DESC LIMIT 1",
                (root,),
            ).fetchone()
        if row is None:
            return None
        return StoredCrl(row[0], row[1], row[2], bytes(row[3]), from_epoch(row[4]), from_epoch(row[5]))

    def crl_numbers(self, root: int) -> list[int]:
        """The CRL numbers of ``root`` still in the history, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT crl_number FROM crls WHERE root = ? ORDER BY crl_number", (root,)
            ).fetchall()
        return [int(row[0]) for row in rows]

    def prune_crl_history(self, root: int, keep: int) -> int:
        """Forgets all but the newest ``keep`` CRLs of ``root``; returns how many went."""
        if keep < 1:
            raise CADatabaseError("at least one CRL must be kept")
        with self._transaction() as db:
            return self._prune(db, root, keep)

    @staticmethod
    def _prune(db: sqlite3.Connection, root: int, keep: int) -> int:
        cursor = db.execute(
            "DELETE FROM crls WHERE root = ? AND crl_number NOT IN"
            " (SELECT crl_number FROM crls WHERE root = ? ORDER BY crl_number DESC LIMIT ?)",
            (root, root, keep),
        )
        return cursor.rowcount


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) under the lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._db.execute("COMMIT")
            else:
                self._db.execute("ROLLBACK")
        finally:
            self._lock.release()
