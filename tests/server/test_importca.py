"""Importing an OpenSSL `ca` database (index.txt, serial, crlnumber, certificate files)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from signer.server.cadb import STATUS_REVOKED, STATUS_VALID, CADatabase
from signer.server.crl import CrlSigner, RootCrl
from signer.server.importca import (
    OpenSSLImportError,
    import_openssl_ca,
    parse_openssl_time,
)
from tests.support.crl_fixtures import make_openssl_ca, run_openssl

UTC = datetime.timezone.utc


@pytest.fixture(scope="module")
def openssl_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real OpenSSL CA: 5 certificates (0x1000-0x1004), 3 revoked with different reasons."""
    directory = tmp_path_factory.mktemp("openssl-ca")
    config = make_openssl_ca(directory, ["alice", "bob", "carol", "dave", "erin"])
    run_openssl("ca", "-config", str(config), "-revoke", "newcerts/1000.pem",
                "-crl_reason", "keyCompromise", cwd=directory)
    run_openssl("ca", "-config", str(config), "-revoke", "newcerts/1001.pem", cwd=directory)
    run_openssl("ca", "-config", str(config), "-revoke", "newcerts/1003.pem",
                "-crl_hold", "1.2.840.10040.2.2", cwd=directory)
    run_openssl("ca", "-config", str(config), "-gencrl", "-out", "crl.pem", cwd=directory)
    return directory


@pytest.fixture
def db(tmp_path: Path) -> CADatabase:
    database = CADatabase(tmp_path / "ca.sqlite")
    yield database
    database.close()


def write_index(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "index.txt"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_parse_openssl_time() -> None:
    """Both OpenSSL time forms parse, with the UTCTime century rule."""
    assert parse_openssl_time("261204210127Z") == datetime.datetime(2026, 12, 4, 21, 1, 27, tzinfo=UTC)
    assert parse_openssl_time("991231235959Z").year == 1999
    assert parse_openssl_time("20610101000000Z").year == 2061
    for bad in ("2612042101Z", "261204210127", "abcdefghijklZ", "261304210127Z"):
        with pytest.raises(ValueError):
            parse_openssl_time(bad)


def test_import_real_openssl_database(openssl_ca: Path, db: CADatabase) -> None:
    """Every line is imported with status, dates, reason and the certificate file's DER."""
    report = import_openssl_ca(
        db, 2, openssl_ca / "index.txt", openssl_ca / "serial",
        certs_dir=openssl_ca / "newcerts", crlnumber_path=openssl_ca / "crlnumber",
    )
    assert (report.lines, report.valid, report.revoked, report.expired) == (5, 2, 3, 0)
    assert (report.inserted, report.newly_revoked, report.unchanged) == (5, 0, 0)
    assert report.with_certificate == 5
    assert report.next_serial == 0x1005
    assert "5 added" in report.summary()
    alice = db.get_certificate(2, 0x1000)
    assert alice is not None and alice.status == STATUS_REVOKED and alice.reason == "keyCompromise"
    certificate = x509.load_der_x509_certificate(alice.der or b"")
    assert certificate.serial_number == 0x1000
    assert alice.not_after == certificate.not_valid_after_utc
    assert alice.subject == certificate.subject.rfc4514_string()
    dave = db.get_certificate(2, 0x1003)
    assert dave is not None and dave.reason == "certificateHold"
    carol = db.get_certificate(2, 0x1002)
    assert carol is not None and carol.status == STATUS_VALID and carol.revoked_at is None
    # The sequential serial and the CRL number continue where OpenSSL stopped.
    assert db.next_serial(2) == 0x1005
    assert db.next_crl_number(2) == 6


def test_our_crl_lists_what_openssl_lists(openssl_ca: Path, db: CADatabase) -> None:
    """After the import our CRL has the same entries (serial, date, reason) as `openssl ca -gencrl`."""
    import_openssl_ca(db, 0, openssl_ca / "index.txt")
    ca = x509.load_pem_x509_certificate((openssl_ca / "ca.pem").read_bytes())
    key = load_pem_private_key((openssl_ca / "ca.key").read_bytes(), None)
    now = datetime.datetime.now(UTC)
    ours = x509.load_der_x509_crl(RootCrl(db, 0, CrlSigner(ca, key)).produce(now).der)  # type: ignore[arg-type]
    theirs = x509.load_pem_x509_crl((openssl_ca / "crl.pem").read_bytes())

    def summary(crl: x509.CertificateRevocationList) -> list[tuple[int, datetime.datetime, object]]:
        rows = []
        for entry in crl:
            try:
                reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
            except x509.ExtensionNotFound:
                reason = None
            rows.append((entry.serial_number, entry.revocation_date_utc, reason))
        return sorted(rows)

    assert summary(ours) == summary(theirs)
    assert len(summary(ours)) == 3
    assert ours.is_signature_valid(ca.public_key())


def test_reimport_is_harmless_and_applies_new_revocations(openssl_ca: Path, db: CADatabase, tmp_path: Path) -> None:
    """Importing twice changes nothing; a later revocation in the index is applied."""
    import_openssl_ca(db, 0, openssl_ca / "index.txt")
    again = import_openssl_ca(db, 0, openssl_ca / "index.txt")
    assert (again.inserted, again.newly_revoked, again.unchanged) == (0, 0, 5)
    lines = (openssl_ca / "index.txt").read_text().splitlines()
    updated = [
        "R\t" + line.split("\t")[1] + "\t261205000000Z,superseded\t" + "\t".join(line.split("\t")[3:])
        if line.split("\t")[3] == "1004" else line
        for line in lines
    ]
    report = import_openssl_ca(db, 0, write_index(tmp_path, *updated))
    assert (report.inserted, report.newly_revoked, report.unchanged) == (0, 1, 4)
    erin = db.get_certificate(0, 0x1004)
    assert erin is not None and erin.status == STATUS_REVOKED and erin.reason == "superseded"
    assert erin.revoked_at == datetime.datetime(2026, 12, 5, tzinfo=UTC)


def test_expired_status_and_generalized_times(db: CADatabase, tmp_path: Path) -> None:
    """E lines are recorded as valid (expiry follows from notAfter); 15-digit times work."""
    index = write_index(
        tmp_path,
        "E\t200101000000Z\t\t0A\tunknown\t/CN=old",
        "R\t20610101000000Z\t20300101000000Z,cessationOfOperation\t0B\tunknown\t/CN=long",
        "R\t300101000000Z\t250101000000Z,CAkeyTime,20250101000000Z\t0C\tunknown\t/CN=ca key",
    )
    report = import_openssl_ca(db, 0, index)
    assert (report.valid, report.revoked, report.expired) == (0, 2, 1)
    old = db.get_certificate(0, 0x0A)
    assert old is not None and old.status == STATUS_VALID and old.subject == "/CN=old"
    long = db.get_certificate(0, 0x0B)
    assert long is not None and long.not_after.year == 2061 and long.reason == "cessationOfOperation"
    ca_key = db.get_certificate(0, 0x0C)
    assert ca_key is not None and ca_key.reason == "CACompromise"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("V\t300101000000Z\t\t10\tunknown", "6 tab-separated fields"),
        ("X\t300101000000Z\t\t10\tunknown\t/CN=x", "unknown status 'X'"),
        ("V\t3001010000Z\t\t10\tunknown\t/CN=x", "bad expiry date"),
        ("V\t300101000000Z\t\tXYZ\tunknown\t/CN=x", "bad serial 'XYZ'"),
        ("V\t300101000000Z\t\t00\tunknown\t/CN=x", "positive"),
        ("R\t300101000000Z\t\t10\tunknown\t/CN=x", "bad revocation date"),
        ("R\t300101000000Z\t250101000000Z,becauseISaidSo\t10\tunknown\t/CN=x", "unknown revocation reason"),
        ("V\t300101000000Z\t250101000000Z\t10\tunknown\t/CN=x", "but a revocation date"),
    ],
)
def test_bad_lines_name_file_and_line(db: CADatabase, tmp_path: Path, line: str, problem: str) -> None:
    """A bad line is reported with the file, its line number and the problem; nothing is written."""
    index = write_index(tmp_path, "V\t300101000000Z\t\t01\tunknown\t/CN=fine", "", line)
    with pytest.raises(OpenSSLImportError) as raised:
        import_openssl_ca(db, 0, index)
    assert f"{index}, line 3" in str(raised.value)
    assert problem in str(raised.value)
    assert db.count_certificates(0) == 0


def test_duplicate_serial_in_index(db: CADatabase, tmp_path: Path) -> None:
    """A serial listed twice is an error naming both lines."""
    index = write_index(
        tmp_path,
        "V\t300101000000Z\t\t0F\tunknown\t/CN=a",
        "V\t300101000000Z\t\t0f\tunknown\t/CN=b",
    )
    with pytest.raises(OpenSSLImportError, match="line 2: serial 0f already appeared on line 1"):
        import_openssl_ca(db, 0, index)


def test_certificate_file_must_match(openssl_ca: Path, db: CADatabase, tmp_path: Path) -> None:
    """A certificate file whose serial disagrees with its index line is an error."""
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "1000.pem").write_bytes((openssl_ca / "newcerts" / "1001.pem").read_bytes())
    index = write_index(tmp_path, (openssl_ca / "index.txt").read_text().splitlines()[0])
    with pytest.raises(OpenSSLImportError, match="holds serial 1001, not 1000"):
        import_openssl_ca(db, 0, index, certs_dir=certs)


def test_bad_serial_file_and_missing_index(db: CADatabase, tmp_path: Path) -> None:
    """An unreadable index or a serial file that is not hex is reported with its path."""
    with pytest.raises(OpenSSLImportError, match="cannot read the index"):
        import_openssl_ca(db, 0, tmp_path / "missing.txt")
    index = write_index(tmp_path, "V\t300101000000Z\t\t01\tunknown\t/CN=fine")
    serial = tmp_path / "serial"
    serial.write_text("not hex\n")
    with pytest.raises(OpenSSLImportError, match=r"serial, line 1: expected a hexadecimal serial"):
        import_openssl_ca(db, 0, index, serial)
    assert db.count_certificates(0) == 0
