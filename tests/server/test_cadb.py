"""The CA database: records, revocations, sequences, CRL history, durability."""

from __future__ import annotations

import datetime
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from signer.server.cadb import (
    STATUS_REVOKED,
    STATUS_VALID,
    CADatabase,
    CADatabaseError,
    CertificateRecord,
    DuplicateSerial,
    UnknownCertificate,
)
from tests.support.crl_fixtures import issue, revoked_records
from tests.support.testca import make_root

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> CADatabase:
    database = CADatabase(tmp_path / "ca.sqlite")
    yield database
    database.close()


def record(serial: int, root: int = 0, **changes: object) -> CertificateRecord:
    values: dict[str, object] = dict(
        root=root,
        serial=serial,
        subject=f"CN=test {serial}",
        not_after=NOW + datetime.timedelta(days=365),
        not_before=NOW,
        profile=0,
    )
    values.update(changes)
    return CertificateRecord(**values)  # type: ignore[arg-type]


def test_record_issued_round_trip(db: CADatabase) -> None:
    """An issued certificate is recorded with its serial, subject, dates, profile and DER."""
    root = make_root()
    certificate = issue(root, serial=(1 << 158) + 12345)
    db.record_issued(0, certificate, 5, NOW, request_sha256="ab" * 32)
    assert db.is_issued(0, certificate.serial_number)
    assert not db.is_issued(1, certificate.serial_number)
    stored = db.get_certificate(0, certificate.serial_number)
    assert stored is not None
    assert stored.serial == certificate.serial_number
    assert stored.subject == "CN=leaf.example.org"
    assert stored.not_after == certificate.not_valid_after_utc
    assert stored.profile == 5
    assert stored.status == STATUS_VALID
    assert stored.issued_at == NOW
    assert stored.request_sha256 == "ab" * 32
    assert stored.der == certificate.public_bytes(serialization.Encoding.DER)
    assert db.get_certificate(0, 42) is None


def test_duplicate_serial_refused(db: CADatabase) -> None:
    """A serial can be recorded once per root, but the same serial on another root is fine."""
    db.insert_record(record(77))
    with pytest.raises(DuplicateSerial):
        db.insert_record(record(77))
    db.insert_record(record(77, root=1))
    assert db.count_certificates(0) == 1 and db.count_certificates(1) == 1


@pytest.mark.parametrize("serial", [0, -5, 1 << 160])
def test_serial_out_of_range_refused(db: CADatabase, serial: int) -> None:
    """Serials must be positive and fit 160 bits."""
    with pytest.raises(CADatabaseError):
        db.insert_record(record(serial))


def test_mark_revoked_once(db: CADatabase) -> None:
    """Revoking marks status R with the time; revoking again reports 'already' and changes nothing."""
    db.insert_record(record(10))
    assert db.revocation_generation(0) == 0
    assert db.mark_revoked(0, 10, NOW, reason="keyCompromise") is False
    assert db.revocation_generation(0) == 1
    later = NOW + datetime.timedelta(days=1)
    assert db.mark_revoked(0, 10, later) is True
    assert db.revocation_generation(0) == 1
    stored = db.get_certificate(0, 10)
    assert stored is not None
    assert stored.status == STATUS_REVOKED
    assert stored.revoked_at == NOW
    assert stored.reason == "keyCompromise"


def test_mark_revoked_unknown_serial(db: CADatabase) -> None:
    """An unknown serial is an error unless its certificate is given, which then gets recorded."""
    root = make_root()
    certificate = issue(root, serial=999)
    with pytest.raises(UnknownCertificate):
        db.mark_revoked(0, 999, NOW)
    assert db.mark_revoked(0, 999, NOW, certificate=certificate) is False
    stored = db.get_certificate(0, 999)
    assert stored is not None and stored.status == STATUS_REVOKED
    assert stored.not_after == certificate.not_valid_after_utc
    with pytest.raises(CADatabaseError):
        db.mark_revoked(0, 1000, NOW, certificate=certificate)


def test_unknown_reason_refused(db: CADatabase) -> None:
    """Only RFC 5280 reason names are stored."""
    db.insert_record(record(10))
    with pytest.raises(CADatabaseError):
        db.mark_revoked(0, 10, NOW, reason="because")


def test_revoked_entries_in_numeric_order_and_filtered(db: CADatabase) -> None:
    """Revoked entries come in numeric serial order, only revoked ones, optionally by notAfter."""
    serials = [5, 1 << 140, 300, 16, 1 << 64]
    for serial in serials:
        db.insert_record(record(serial, not_after=NOW + datetime.timedelta(days=serial % 7)))
    db.insert_record(record(7))  # stays valid
    for serial in serials:
        db.mark_revoked(0, serial, NOW)
    with db.revoked_entries(0) as entries:
        got = list(entries)
        assert entries.generation == len(serials)
    assert [entry.serial for entry in got] == sorted(serials)
    assert all(entry.revoked_at == int(NOW.timestamp()) for entry in got)
    floor = NOW + datetime.timedelta(days=2)
    with db.revoked_entries(0, not_after_after=floor) as entries:
        late = [entry.serial for entry in entries]
    assert late == sorted(s for s in serials if s % 7 > 2)
    assert list(db.revoked_entries(1)) == []


def test_revoked_entries_is_a_snapshot(db: CADatabase) -> None:
    """A revocation committed while a snapshot is read does not show up in it."""
    for serial in range(1, 6):
        db.insert_record(record(serial))
        db.mark_revoked(0, serial, NOW)
    snapshot = db.revoked_entries(0)
    first = next(iter(snapshot))
    db.insert_record(record(100))
    db.mark_revoked(0, 100, NOW)
    rest = list(snapshot)
    assert [first.serial] + [entry.serial for entry in rest] == [1, 2, 3, 4, 5]
    assert snapshot.generation == 5
    assert db.revocation_generation(0) == 6


def test_crl_numbers_per_root_survive_reopen(tmp_path: Path) -> None:
    """CRL numbers count 1, 2, ... per root and never repeat after a restart."""
    path = tmp_path / "ca.sqlite"
    with CADatabase(path) as db:
        assert [db.next_crl_number(0) for _ in range(3)] == [1, 2, 3]
        assert db.next_crl_number(1) == 1
    with CADatabase(path) as db:
        assert db.next_crl_number(0) == 4
        db.raise_crl_number_floor(0, 100)
        assert db.next_crl_number(0) == 100
        db.raise_crl_number_floor(0, 50)
        assert db.next_crl_number(0) == 101


def test_sequential_serials_skip_recorded(db: CADatabase) -> None:
    """Sequential serials increase, skip serials already recorded and honour a floor."""
    db.insert_record(record(2))
    assert db.next_serial(0) == 1
    assert db.next_serial(0) == 3
    db.raise_serial_floor(0, 0x1000)
    assert db.next_serial(0) == 0x1000
    assert db.next_serial(1, start=500) == 500


def test_crl_history(db: CADatabase) -> None:
    """CRLs are found by SHA-1 (any case), the latest by number, and pruning keeps the newest."""
    for number in range(1, 6):
        db.store_crl(0, number, f"{number:040x}", b"crl %d" % number, NOW)
    db.store_crl(1, 1, "f" * 40, b"other root", NOW)
    assert db.crl_by_sha1(0, f"{3:040x}") == b"crl 3"
    assert db.crl_by_sha1(0, "F" * 40) is None
    assert db.crl_by_sha1(1, "F" * 40) == b"other root"
    latest = db.latest_crl(0)
    assert latest is not None and latest.crl_number == 5 and latest.der == b"crl 5"
    assert db.prune_crl_history(0, keep=2) == 3
    assert db.crl_numbers(0) == [4, 5]
    assert db.crl_by_sha1(0, f"{3:040x}") is None
    assert db.crl_numbers(1) == [1]
    with pytest.raises(CADatabaseError):
        db.store_crl(0, 5, "a" * 40, b"again", NOW)
    with pytest.raises(CADatabaseError):
        db.store_crl(0, 6, "not a hash", b"x", NOW)


def test_bulk_insert_is_all_or_nothing(db: CADatabase) -> None:
    """A bulk insert with a duplicate in the middle records nothing."""
    db.insert_record(record(5000))
    rows = [record(serial) for serial in (4998, 4999, 5000, 5001)]
    with pytest.raises(DuplicateSerial):
        db.insert_records(rows)
    assert db.count_certificates(0) == 1
    assert db.revocation_generation(0) == 0
    count = db.insert_records(
        revoked_records(0, 1000, revoked_at=NOW, not_after=NOW + datetime.timedelta(days=1))
    )
    assert count == 1000
    assert db.count_certificates(0, STATUS_REVOKED) == 1000
    assert db.revocation_generation(0) == 1000


def test_concurrent_threads(db: CADatabase) -> None:
    """Many threads recording and revoking at once lose nothing."""
    errors: list[BaseException] = []

    def work(base: int) -> None:
        try:
            for offset in range(50):
                db.insert_record(record(base + offset))
                db.mark_revoked(0, base + offset, NOW)
                db.next_crl_number(0)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(1000 * i + 1,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert db.count_certificates(0, STATUS_REVOKED) == 400
    assert db.next_crl_number(0) == 401


_CRASHER = """
import datetime, os, sys
from signer.server.cadb import CADatabase, CertificateRecord
now = datetime.datetime(2026, 12, 4, tzinfo=datetime.timezone.utc)
db = CADatabase(sys.argv[1])
db.insert_record(CertificateRecord(root=0, serial=1, subject="CN=answered", not_after=now))
connection = db._db
connection.execute("BEGIN IMMEDIATE")
connection.execute(
    "INSERT INTO certificates (root, serial, subject, not_after, status)"
    " VALUES (0, ?, 'CN=half done', 0, 'V')", ("%040x" % 2,))
os._exit(9)
"""


def test_survives_a_crash_mid_transaction(tmp_path: Path) -> None:
    """A process killed inside a transaction leaves committed rows and none of the half-done one."""
    path = tmp_path / "ca.sqlite"
    result = subprocess.run(
        [sys.executable, "-c", _CRASHER, str(path)], cwd=REPO, capture_output=True, timeout=60
    )
    assert result.returncode == 9, result.stderr
    with CADatabase(path) as db:
        assert db.is_issued(0, 1)
        assert not db.is_issued(0, 2)
        assert db._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_not_a_database(tmp_path: Path) -> None:
    """A file that is not SQLite gives a CADatabaseError naming the file."""
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CADatabaseError, match="garbage.sqlite"):
        CADatabase(path)


def test_newer_schema_refused(tmp_path: Path) -> None:
    """A database written by a newer schema version is refused, not misread."""
    path = tmp_path / "ca.sqlite"
    CADatabase(path).close()
    connection = sqlite3.connect(path)
    connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    connection.commit()
    connection.close()
    with pytest.raises(CADatabaseError, match="schema version 99"):
        CADatabase(path)
