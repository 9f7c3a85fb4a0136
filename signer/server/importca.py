"""Import an OpenSSL ``ca`` database (``index.txt`` + ``serial``) into the CA database.

For migrating a running signer: the legacy server kept its records with
``openssl ca``. Each ``index.txt`` line has six tab-separated fields::

    status  expiry  revocation[,reason[,extra]]  serial-hex  filename  subject

``status`` is ``V`` (valid), ``R`` (revoked) or ``E`` (expired, recorded as
valid here: expiry follows from notAfter). Dates are ``YYMMDDHHMMSSZ``
(UTCTime) or ``YYYYMMDDHHMMSSZ``. Reasons are OpenSSL's names
(case-insensitive); ``holdInstruction`` counts as ``certificateHold``,
``keyTime`` / ``CAkeyTime`` as ``keyCompromise`` / ``CACompromise`` (the
compromise time itself is not kept).

When ``certs_dir`` is given, ``<SERIAL>.pem`` there (OpenSSL's
``new_certs_dir`` naming), or the line's filename when not ``unknown``, is
read: its DER, notBefore and subject are recorded, and its serial and notAfter
must agree with the line. The ``serial`` file (next serial, hex) raises the
database's sequential-serial floor; a ``crlnumber`` file raises the CRL number.

The whole file is checked before anything is written, and all rows go in one
transaction: the certificates are imported completely or not at all (the
serial and CRL number floors follow, each in its own transaction; re-running
the import finishes an interrupted one). Re-running an import is harmless (known serials stay as they are, except that a revocation
in the index is applied to a certificate the database still has as valid).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from signer.server.cadb import (
    MAX_SERIAL,
    REASON_CODES,
    STATUS_REVOKED,
    STATUS_VALID,
    CADatabase,
    CertificateRecord,
)

UTC = datetime.timezone.utc

_REASONS = {name.lower(): name for name in REASON_CODES}
_REASONS.update(
    {
        "holdinstruction": "certificateHold",
        "keytime": "keyCompromise",
        "cakeytime": "CACompromise",
    }
)


class OpenSSLImportError(Exception):
    """The OpenSSL database cannot be imported; names the file, the line and the problem."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {problem}")
        self.path = Path(path)
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class ImportReport:
    """What an import found and did."""

    root: int
    index_path: Path
    lines: int
    valid: int
    revoked: int
    expired: int
    inserted: int
    newly_revoked: int
    unchanged: int
    with_certificate: int
    next_serial: int | None
    next_crl_number: int | None

    def summary(self) -> str:
        """One human line for the CLI."""
        return (
            f"root {self.root}: {self.lines} entries from {self.index_path} "
            f"({self.valid} valid, {self.revoked} revoked, {self.expired} expired); "
            f"{self.inserted} added, {self.newly_revoked} newly revoked, "
            f"{self.unchanged} already known; {self.with_certificate} with certificate files"
            + (f"; next serial {self.next_serial:X}" if self.next_serial is not None else "")
            + (
                f"; next CRL number {self.next_crl_number}"
                if self.next_crl_number is not None
                else ""
            )
        )


def parse_openssl_time(text: str) -> datetime.datetime:
    """``YYMMDDHHMMSSZ`` (years 1950-2049) or ``YYYYMMDDHHMMSSZ`` as aware UTC; ValueError."""
    if not text.endswith("Z") or not text[:-1].isdigit():
        raise ValueError(f"not an OpenSSL time: {text!r}")
    if len(text) == 13:
        year = int(text[:2])
        year += 2000 if year < 50 else 1900
        rest = text[2:-1]
    elif len(text) == 15:
        year = int(text[:4])
        rest = text[4:-1]
    else:
        raise ValueError(f"not an OpenSSL time: {text!r}")
    month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
    return datetime.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _read_hex_file(path: Path, what: str) -> int:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise OpenSSLImportError(path, None, f"cannot read the {what} file: {e}") from None
    try:
        value = int(text, 16)
    except ValueError:
        raise OpenSSLImportError(path, 1, f"expected a hexadecimal {what}, got {text[:40]!r}") from None
    if value <= 0:
        raise OpenSSLImportError(path, 1, f"the {what} must be positive, got {text!r}")
    return value


def _certificate_file(certs_dir: Path | None, serial_text: str, filename: str) -> Path | None:
    candidates = []
    if filename and filename != "unknown":
        candidates.append(Path(filename) if certs_dir is None else certs_dir / filename)
    if certs_dir is not None:
        candidates.append(certs_dir / f"{serial_text.upper()}.pem")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def _load_certificate(path: Path, index_path: Path, number: int) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OpenSSLImportError(index_path, number, f"cannot read {path}: {e}") from None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise OpenSSLImportError(index_path, number, f"{path} is not a certificate: {e}") from None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_index(
    root: int, index_path: Path, certs_dir: Path | None = None
) -> tuple[list[CertificateRecord], dict[str, int]]:
    """The records of ``index.txt`` and counts by status; OpenSSLImportError on bad input."""
    try:
        lines = index_path.read_bytes().split(b"\n")
    except OSError as e:
        raise OpenSSLImportError(index_path, None, f"cannot read the index: {e}") from None
    records: list[CertificateRecord] = []
    counts = {"V": 0, "R": 0, "E": 0, "files": 0}
    seen: dict[int, int] = {}
    for number, raw in enumerate(lines, start=1):
        line = _decode(raw.rstrip(b"\r"))
        if not line.strip():
            continue

        def fail(problem: str) -> OpenSSLImportError:
            return OpenSSLImportError(index_path, number, problem)

        fields = line.split("\t")
        if len(fields) != 6:
            raise fail(f"expected 6 tab-separated fields, found {len(fields)}")
        status, expiry, revocation, serial_text, filename, subject = fields
        if status not in ("V", "R", "E"):
            raise fail(f"unknown status {status!r} (expected V, R or E)")
        try:
            not_after = parse_openssl_time(expiry)
        except ValueError as e:
            raise fail(f"bad expiry date: {e}") from None
        try:
            serial = int(serial_text, 16)
        except ValueError:
            raise fail(f"bad serial {serial_text!r} (expected hexadecimal)") from None
        if not 0 < serial <= MAX_SERIAL:
            raise fail(f"serial {serial_text} is not a positive number of at most 160 bits")
        if serial in seen:
            raise fail(f"serial {serial_text} already appeared on line {seen[serial]}")
        seen[serial] = number
        revoked_at: datetime.datetime | None = None
        reason: str | None = None
        if status == "R":
            parts = revocation.split(",")
            try:
                revoked_at = parse_openssl_time(parts[0])
            except ValueError as e:
                raise fail(f"bad revocation date: {e}") from None
            if len(parts) > 1:
                reason = _REASONS.get(parts[1].lower())
                if reason is None:
                    raise fail(f"unknown revocation reason {parts[1]!r}")
        elif revocation:
            raise fail(f"status {status} but a revocation date {revocation!r}")
        counts[status] += 1
        not_before = None
        der = None
        path = _certificate_file(certs_dir, serial_text, filename)
        if path is not None:
            certificate = _load_certificate(path, index_path, number)
            if certificate.serial_number != serial:
                raise fail(f"{path} holds serial {certificate.serial_number:X}, not {serial_text}")
            if certificate.not_valid_after_utc != not_after:
                raise fail(
                    f"{path} expires {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S}, "
                    f"the index says {not_after:%Y-%m-%d %H:%M:%S}"
                )
            not_before = certificate.not_valid_before_utc
            der = certificate.public_bytes(Encoding.DER)
            subject = certificate.subject.rfc4514_string()
            counts["files"] += 1
        records.append(
            CertificateRecord(
                root=root,
                serial=serial,
                subject=subject,
                not_after=not_after,
                not_before=not_before,
                status=STATUS_REVOKED if status == "R" else STATUS_VALID,
                revoked_at=revoked_at,
                reason=reason,
                der=der,
            )
        )
    return records, counts


def import_openssl_ca(
    db: CADatabase,
    root: int,
    index_path: Path | str,
    serial_path: Path | str | None = None,
    certs_dir: Path | str | None = None,
    crlnumber_path: Path | str | None = None,
) -> ImportReport:
    """Imports an OpenSSL ``ca`` database into ``db`` for ``root`` (blocking).

    :raises OpenSSLImportError: bad input, naming the file and line; nothing
        has been written then.
    """
    index_path = Path(index_path)
    directory = None if certs_dir is None else Path(certs_dir)
    if directory is not None and not directory.is_dir():
        raise OpenSSLImportError(directory, None, "not a directory")
    records, counts = read_index(root, index_path, directory)
    next_serial = None if serial_path is None else _read_hex_file(Path(serial_path), "serial")
    if next_serial is not None and next_serial > MAX_SERIAL:
        raise OpenSSLImportError(Path(serial_path or ""), 1, "serial larger than 160 bits")
    next_crl = (
        None if crlnumber_path is None else _read_hex_file(Path(crlnumber_path), "CRL number")
    )
    merged = db.merge_records(records)
    if next_serial is not None:
        db.raise_serial_floor(root, next_serial)
    if next_crl is not None:
        db.raise_crl_number_floor(root, next_crl)
    return ImportReport(
        root=root,
        index_path=index_path,
        lines=len(records),
        valid=counts["V"],
        revoked=counts["R"],
        expired=counts["E"],
        inserted=merged.inserted,
        newly_revoked=merged.revoked,
        unchanged=merged.unchanged,
        with_certificate=counts["files"],
        next_serial=next_serial,
        next_crl_number=next_crl,
    )


__all__ = ["ImportReport", "OpenSSLImportError", "import_openssl_ca", "parse_openssl_time", "read_index"]
