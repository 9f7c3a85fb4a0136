"""CRL production: exact DER, signatures, order, numbers, grace, incremental = rebuild."""

from __future__ import annotations

import datetime
import random
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from signer.server.cadb import STATUS_REVOKED, CADatabase, CertificateRecord, epoch
from signer.server.crl import (
    CrlError,
    CrlSigner,
    RevokedList,
    RootCrl,
    der_time,
    encode_entry,
    signer_for,
)
from tests.support.crl_fixtures import issue, make_ec_root, openssl_verify_crl, revoked_records
from tests.support.testca import make_root

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
DAY = datetime.timedelta(days=1)
REASONS = {
    None: None,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "CACompromise": x509.ReasonFlags.ca_compromise,
    "certificateHold": x509.ReasonFlags.certificate_hold,
}


@pytest.fixture
def db(tmp_path: Path) -> CADatabase:
    database = CADatabase(tmp_path / "ca.sqlite")
    yield database
    database.close()


def cryptography_crl(
    root_certificate: x509.Certificate,
    key: object,
    entries: list[tuple[int, datetime.datetime, str | None]],
    number: int,
    this_update: datetime.datetime,
    next_update: datetime.datetime,
    digest: hashes.HashAlgorithm = hashes.SHA256(),
) -> bytes:
    """The same CRL made by cryptography's builder (entries passed in the given order)."""
    ski = root_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    revoked = []
    for serial, when, reason in entries:
        builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        if REASONS[reason] is not None:
            builder = builder.add_extension(x509.CRLReason(REASONS[reason]), critical=False)
        revoked.append(builder.build())
    crl = (
        x509.CertificateRevocationListBuilder(
            issuer_name=root_certificate.subject,
            last_update=this_update,
            next_update=next_update,
            revoked_certificates=revoked,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .add_extension(x509.CRLNumber(number), critical=False)
        .sign(key, digest)  # type: ignore[arg-type]
    )
    return crl.public_bytes(serialization.Encoding.DER)


def test_byte_identical_to_cryptography_builder() -> None:
    """Our hand-assembled CRL equals cryptography's, byte for byte (PKCS#1 v1.5 is deterministic)."""
    root = make_root()
    rng = random.Random(5)
    entries = []
    for index in range(300):
        serial = rng.choice([rng.getrandbits(159) | 1, rng.getrandbits(64) | 1, rng.randint(1, 300)])
        when = NOW - datetime.timedelta(seconds=rng.randint(0, 10**8))
        entries.append((serial, when, rng.choice(list(REASONS))))
    entries = list({serial: (serial, w, r) for serial, w, r in entries}.values())
    revoked = RevokedList()
    for serial, when, reason in entries:
        assert revoked.add(serial, epoch(when), epoch(NOW + DAY), reason)
    ours = CrlSigner(root.certificate, root.key).sign(
        revoked.encoded(), 42, epoch(NOW), epoch(NOW + 7 * DAY)
    )
    theirs = cryptography_crl(
        root.certificate, root.key, sorted(entries), 42, NOW, NOW + 7 * DAY
    )
    assert ours == theirs


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
def test_signature_verifies_with_cryptography_and_openssl(digest: str) -> None:
    """The CRL's signature verifies with cryptography and with `openssl crl -CAfile`."""
    root = make_root()
    revoked = RevokedList()
    for serial in (3, 1 << 100, 77):
        revoked.add(serial, epoch(NOW), epoch(NOW + DAY), "keyCompromise")
    der = CrlSigner(root.certificate, root.key, digest).sign(
        revoked.encoded(), 9, epoch(NOW), epoch(NOW + 7 * DAY)
    )
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(root.certificate.public_key())
    assert crl.signature_hash_algorithm is not None
    assert crl.signature_hash_algorithm.name == digest
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 9
    assert [entry.serial_number for entry in crl] == [3, 77, 1 << 100]
    result = openssl_verify_crl(der, root.certificate)
    assert result.returncode == 0 and "verify OK" in result.stderr, result.stderr


def test_ec_root() -> None:
    """An EC (P-256) root signs CRLs with ECDSA that both verifiers accept."""
    root = make_ec_root()
    revoked = RevokedList()
    revoked.add(12345, epoch(NOW), epoch(NOW + DAY))
    der = CrlSigner(root.certificate, root.key).sign(
        revoked.encoded(), 1, epoch(NOW), epoch(NOW + DAY)
    )
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(root.certificate.public_key())
    result = openssl_verify_crl(der, root.certificate)
    assert result.returncode == 0 and "verify OK" in result.stderr, result.stderr


def test_empty_crl() -> None:
    """A CRL with no entries omits revokedCertificates and still verifies."""
    root = make_root()
    der = CrlSigner(root.certificate, root.key).sign(b"", 1, epoch(NOW), epoch(NOW + DAY))
    crl = x509.load_der_x509_crl(der)
    assert len(crl) == 0
    assert crl.is_signature_valid(root.certificate.public_key())
    assert der == cryptography_crl(root.certificate, root.key, [], 1, NOW, NOW + DAY)
    assert "verify OK" in openssl_verify_crl(der, root.certificate).stderr


def test_key_must_match_certificate() -> None:
    """A key that does not belong to the CA certificate is refused up front."""
    with pytest.raises(CrlError, match="does not belong"):
        CrlSigner(make_root().certificate, make_root("Signer Test Other Root").key)


def test_weak_or_unknown_digest_refused() -> None:
    """Only the SHA-1/SHA-2 family can be named as digest."""
    root = make_root()
    with pytest.raises(CrlError):
        CrlSigner(root.certificate, root.key, "md5")


def test_signer_for_accepts_tuples_and_objects() -> None:
    """Roots can be (cert, key), (cert, key, digest) or objects with certificate/key/config."""
    root = make_root()

    class Config:
        default_digest = "sha512"

    class Loaded:
        certificate = root.certificate
        key = root.key
        config = Config()

    der = signer_for(Loaded()).sign(b"", 1, epoch(NOW), epoch(NOW + DAY))
    algorithm = x509.load_der_x509_crl(der).signature_hash_algorithm
    assert algorithm is not None and algorithm.name == "sha512"
    der = signer_for((root.certificate, root.key, "sha384")).sign(b"", 1, epoch(NOW), epoch(NOW + DAY))
    algorithm = x509.load_der_x509_crl(der).signature_hash_algorithm
    assert algorithm is not None and algorithm.name == "sha384"


def test_revoked_list_keeps_serial_order() -> None:
    """Entries added in any order come out sorted by serial; a duplicate is not added twice."""
    revoked = RevokedList()
    serials = random.Random(1).sample(range(1, 10**6), 500) + [1 << 159]
    for serial in serials:
        assert revoked.add(serial, epoch(NOW), epoch(NOW + DAY))
    assert not revoked.add(serials[3], epoch(NOW), epoch(NOW + DAY))
    assert revoked.serials() == sorted(serials)
    assert serials[3] in revoked and 0 not in revoked
    expected = b"".join(encode_entry(serial, epoch(NOW)) for serial in sorted(serials))
    assert bytes(revoked.encoded()) == expected


def test_revoked_list_drops_expired() -> None:
    """drop_expired removes exactly the entries whose notAfter lies before the cutoff."""
    revoked = RevokedList()
    rng = random.Random(2)
    expiries = {}
    for serial in rng.sample(range(1, 10**9), 300):
        expiries[serial] = epoch(NOW) + rng.randint(-1000, 1000)
        revoked.add(serial, epoch(NOW), expiries[serial])
    assert revoked.drop_expired(epoch(NOW) - 2000) == 0
    gone = revoked.drop_expired(epoch(NOW))
    kept = sorted(s for s, t in expiries.items() if t >= epoch(NOW))
    assert gone == 300 - len(kept)
    assert revoked.serials() == kept
    assert bytes(revoked.encoded()) == b"".join(encode_entry(s, epoch(NOW)) for s in kept)


def test_time_encoding() -> None:
    """Times before 2050 are UTCTime, later ones GeneralizedTime (RFC 5280 4.1.2.5)."""
    assert der_time(epoch(NOW)) == b"\x17\x0d261204120000Z"
    assert der_time(epoch(datetime.datetime(2050, 1, 1, tzinfo=UTC))) == b"\x18\x0f20500101000000Z"
    root = make_root()
    revoked = RevokedList()
    late = datetime.datetime(2061, 3, 4, 5, 6, 7, tzinfo=UTC)
    revoked.add(5, epoch(late), epoch(late))
    der = CrlSigner(root.certificate, root.key).sign(revoked.encoded(), 1, epoch(late), epoch(late))
    crl = x509.load_der_x509_crl(der)
    assert crl.last_update_utc == late
    assert crl.get_revoked_certificate_by_serial_number(5).revocation_date_utc == late  # type: ignore[union-attr]


def produce_and_parse(crl: RootCrl, now: datetime.datetime) -> x509.CertificateRevocationList:
    produced = crl.produce(now)
    parsed = x509.load_der_x509_crl(produced.der)
    assert parsed.is_signature_valid(crl.signer.certificate.public_key())
    return parsed


def test_root_crl_numbers_times_and_history(db: CADatabase) -> None:
    """Each CRL gets the next number, thisUpdate = now, nextUpdate = now + lifetime, and is stored."""
    root = make_root()
    crl = RootCrl(db, 0, CrlSigner(root.certificate, root.key), lifetime=3 * DAY)
    first = crl.produce(NOW)
    second = crl.produce(NOW + DAY)
    assert (first.crl_number, second.crl_number) == (1, 2)
    parsed = x509.load_der_x509_crl(second.der)
    assert parsed.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert parsed.last_update_utc == NOW + DAY
    assert parsed.next_update_utc == NOW + 4 * DAY
    assert parsed.issuer == root.certificate.subject
    aki = parsed.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert db.crl_by_sha1(0, first.sha1) == first.der
    latest = db.latest_crl(0)
    assert latest is not None and latest.sha1 == second.sha1


def test_root_crl_revoke_lists_entries(db: CADatabase) -> None:
    """Revoked certificates appear with their revocation time; re-revoking adds nothing."""
    root = make_root()
    crl = RootCrl(db, 0, CrlSigner(root.certificate, root.key))
    certificates = [issue(root, serial=s) for s in (500, 20, 1 << 120)]
    for certificate in certificates:
        db.record_issued(0, certificate, 0, NOW)
    assert crl.revoke(500, NOW, reason="keyCompromise") is False
    assert crl.revoke(20, NOW + DAY) is False
    assert crl.revoke(500, NOW + 2 * DAY) is True
    parsed = produce_and_parse(crl, NOW + 2 * DAY)
    assert [entry.serial_number for entry in parsed] == [20, 500]
    entry = parsed.get_revoked_certificate_by_serial_number(500)
    assert entry is not None and entry.revocation_date_utc == NOW
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    # A certificate our key signed but the database never saw: recorded and listed.
    stranger = issue(root, serial=1 << 121)
    assert crl.revoke(stranger.serial_number, NOW, certificate=stranger) is False
    parsed = produce_and_parse(crl, NOW + 2 * DAY)
    assert [entry.serial_number for entry in parsed] == [20, 500, 1 << 121]


def test_incremental_equals_full_rebuild(db: CADatabase) -> None:
    """A cache grown revocation by revocation yields exactly the CRL a fresh load produces."""
    root = make_root()
    signer = CrlSigner(root.certificate, root.key)
    db.insert_records(
        revoked_records(0, 2000, revoked_at=NOW - 30 * DAY, not_after=NOW + 100 * DAY)
    )
    incremental = RootCrl(db, 0, signer)
    incremental.produce(NOW)
    rng = random.Random(3)
    for index in range(40):
        serial = rng.getrandbits(150) | 1
        db.insert_record(
            CertificateRecord(root=0, serial=serial, subject="CN=x", not_after=NOW + index * DAY)
        )
        incremental.revoke(serial, NOW + datetime.timedelta(minutes=index))
    rebuilt = RootCrl(db, 0, signer)
    rebuilt.load(NOW + DAY)
    assert bytes(rebuilt.entries.encoded()) == bytes(incremental.entries.encoded())
    one = signer.sign(incremental.entries.encoded(), 99, epoch(NOW + DAY), epoch(NOW + 8 * DAY))
    two = signer.sign(rebuilt.entries.encoded(), 99, epoch(NOW + DAY), epoch(NOW + 8 * DAY))
    assert one == two
    assert len(x509.load_der_x509_crl(one)) == 2040


def test_grace_filters_long_expired_entries(db: CADatabase) -> None:
    """Entries expired more than the grace before thisUpdate are left out, younger ones stay."""
    root = make_root()
    rows = {
        1: NOW - 40 * DAY,  # expired long ago: out
        2: NOW - 20 * DAY,  # expired, within a 30-day grace: in
        3: NOW + DAY,  # still valid: in
        4: NOW - 29 * DAY,  # leaves the CRL during the test below
    }
    for serial, not_after in rows.items():
        db.insert_record(
            CertificateRecord(
                root=0, serial=serial, subject="CN=x", not_after=not_after,
                status=STATUS_REVOKED, revoked_at=NOW - 50 * DAY,
            )
        )
    crl = RootCrl(db, 0, CrlSigner(root.certificate, root.key), grace=30 * DAY)
    assert [e.serial_number for e in produce_and_parse(crl, NOW)] == [2, 3, 4]
    # Two days later serial 4 has been expired for 31 days: the cached list drops it.
    assert [e.serial_number for e in produce_and_parse(crl, NOW + 2 * DAY)] == [2, 3]
    keep_all = RootCrl(db, 0, CrlSigner(root.certificate, root.key), grace=None)
    assert [e.serial_number for e in produce_and_parse(keep_all, NOW)] == [1, 2, 3, 4]


def test_cache_follows_changes_made_elsewhere(db: CADatabase, tmp_path: Path) -> None:
    """A revocation written by another process (another connection) is picked up."""
    root = make_root()
    crl = RootCrl(db, 0, CrlSigner(root.certificate, root.key))
    assert len(produce_and_parse(crl, NOW)) == 0
    with CADatabase(tmp_path / "ca.sqlite") as other:
        other.insert_record(CertificateRecord(root=0, serial=31337, subject="CN=y", not_after=NOW + DAY))
        other.mark_revoked(0, 31337, NOW)
    assert [e.serial_number for e in produce_and_parse(crl, NOW)] == [31337]


def test_ed25519_root() -> None:
    """An Ed25519 root signs CRLs that cryptography and openssl verify."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Ed25519 Test Root")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 3650 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, None)
    )
    revoked = RevokedList()
    revoked.add(4242, epoch(NOW), epoch(NOW + DAY))
    der = CrlSigner(certificate, key).sign(revoked.encoded(), 3, epoch(NOW), epoch(NOW + DAY))
    assert x509.load_der_x509_crl(der).is_signature_valid(key.public_key())
    result = openssl_verify_crl(der, certificate)
    assert result.returncode == 0 and "verify OK" in result.stderr, result.stderr


@pytest.mark.parametrize("size", [0, 1, 2, 3, 47, 48, 49, 96, 1000, 100_003])
def test_pem_armour(size: int) -> None:
    """der_to_pem writes RFC 7468 PEM (64-character lines) of exactly pem_length bytes."""
    import base64
    import os

    from signer.server.crl import der_to_pem, pem_length

    der = os.urandom(size)
    text = base64.b64encode(der)
    lines = [text[i : i + 64] + b"\n" for i in range(0, len(text), 64)]
    expected = b"-----BEGIN X509 CRL-----\n" + b"".join(lines) + b"-----END X509 CRL-----\n"
    assert der_to_pem(der) == expected
    assert len(expected) == pem_length(size)


def test_incremental_revocation_does_not_reload(db: CADatabase) -> None:
    """After the first load, a revocation through RootCrl updates the cache without a reload."""
    root = make_root()
    db.insert_records(revoked_records(0, 100, revoked_at=NOW, not_after=NOW + 100 * DAY))
    crl = RootCrl(db, 0, CrlSigner(root.certificate, root.key))
    assert crl.ensure_current(NOW) is True
    cached = crl.entries
    db.insert_record(CertificateRecord(root=0, serial=5, subject="CN=x", not_after=NOW + DAY))
    crl.revoke(5, NOW)
    assert crl.ensure_current(NOW) is False
    assert crl.entries is cached and len(cached) == 101


def test_hundred_thousand_entries(db: CADatabase) -> None:
    """A CRL of 100,000 entries: both verifiers accept it, and a further revocation is incremental."""
    root = make_root()
    db.insert_records(
        revoked_records(0, 100_000, revoked_at=NOW - DAY, not_after=NOW + 100 * DAY, step=1)
    )
    crl = RootCrl(db, 0, CrlSigner(root.certificate, root.key))
    first = crl.produce(NOW)
    db.insert_record(CertificateRecord(root=0, serial=3, subject="CN=x", not_after=NOW + DAY))
    crl.revoke(3, NOW)
    second = crl.produce(NOW + datetime.timedelta(minutes=1))
    parsed = x509.load_der_x509_crl(second.der)
    assert parsed.is_signature_valid(root.certificate.public_key())
    assert len(parsed) == 100_001
    assert parsed[0].serial_number == 3
    assert len(second.der) - len(first.der) == len(encode_entry(3, epoch(NOW)))
    result = openssl_verify_crl(second.der, root.certificate)
    assert result.returncode == 0 and "verify OK" in result.stderr, result.stderr


def test_raw_bulk_load_equals_encoded_entries() -> None:
    """Loading rows as stored (hex serials) gives the same bytes as encoding each entry."""
    rng = random.Random(9)
    rows = sorted(
        {
            rng.choice([rng.getrandbits(159), rng.getrandbits(64), rng.randint(1, 255), 0x80, 0xFF00]) | 1:
            (rng.randint(0, 2**31), rng.randint(0, 2**31), rng.choice(list(REASONS) + ["unspecified"]))
            for _ in range(2000)
        }.items()
    )
    raw = RevokedList()
    raw.extend_sorted_raw([[(f"{s:040x}", r, n, reason) for s, (r, n, reason) in rows]])
    encoded = RevokedList()
    for serial, (revoked_at, not_after, reason) in rows:
        encoded.add(serial, revoked_at, not_after, reason)
    assert bytes(raw.encoded()) == bytes(encoded.encoded())
    assert raw.serials() == encoded.serials()
    with pytest.raises(CrlError, match="out-of-order"):
        raw.extend_sorted_raw([[(f"{1:040x}", 0, 0, None)]])
