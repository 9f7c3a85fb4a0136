"""Revoke / refresh requests end to end: real database, real CRLs, real xdelta.

Every answer is also fed through the legacy client's procedure (PEM as is,
else `xdelta patch` against the current file, else DER) to check that the
client ends up with exactly the CRL the server made.
"""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import Iterator

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signer.protocol import codec
from signer.server.cadb import STATUS_REVOKED, CADatabase
from signer.server.errors import RequestRefused
from signer.server.revocation import RevocationService, answer_kind
from tests.support.crl_fixtures import issue, legacy_client_apply, pem, revoked_records
from tests.support.testca import make_root

UTC = datetime.timezone.utc
START = datetime.datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
EMPTY_SHA1 = hashlib.sha1(b"").hexdigest().encode()


class Now:
    """A settable clock for the service (one minute later on every reading)."""

    def __init__(self) -> None:
        self.value = START

    def __call__(self) -> datetime.datetime:
        self.value += datetime.timedelta(minutes=1)
        return self.value


@pytest.fixture
def db(tmp_path: Path) -> Iterator[CADatabase]:
    database = CADatabase(tmp_path / "ca.sqlite")
    yield database
    database.close()


@pytest.fixture
def service(db: CADatabase) -> RevocationService:
    from twisted.internet import reactor

    roots = {
        0: (make_root().certificate, make_root().key),
        1: (make_root("Signer Test Root 1").certificate, make_root("Signer Test Root 1").key),
    }
    return RevocationService(db, roots, reactor, now=Now(), history=4)


def request(crl_sha1: bytes, certificate: bytes = b"", root: int = 0) -> codec.RevokeRequest:
    return codec.RevokeRequest(crl_sha1=crl_sha1, certificate=certificate, root=root)


def sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).hexdigest().encode()


def parse(der: bytes, root_name: str = "Signer Test Root 0") -> x509.CertificateRevocationList:
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(make_root(root_name).certificate.public_key())
    return crl


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


@pytest_twisted.ensureDeferred
async def test_unknown_hash_gets_full_pem(service: RevocationService, db: CADatabase) -> None:
    """A revocation with an unknown client CRL hash answers the new CRL in PEM, listing the serial."""
    certificate = issue(make_root(), serial=1001)
    db.record_issued(0, certificate, 0, START)
    answer = await service.handle(request(EMPTY_SHA1, pem(certificate)))
    assert answer_kind(answer) == "pem"
    crl = parse(x509.load_pem_x509_crl(answer).public_bytes(serialization.Encoding.DER))
    assert [entry.serial_number for entry in crl] == [1001]
    record = db.get_certificate(0, 1001)
    assert record is not None and record.status == STATUS_REVOKED


@pytest_twisted.ensureDeferred
async def test_known_hash_small_crl_legacy_client_gets_new_crl(
    service: RevocationService, db: CADatabase
) -> None:
    """With the client in sync, the answer (a patch or the smaller DER) turns its CRL into the new one."""
    first = await service.handle(request(EMPTY_SHA1))
    current = legacy_client_apply(first, b"")
    assert crl_number(parse(current)) == 1
    certificate = issue(make_root(), serial=2002)
    db.record_issued(0, certificate, 0, START)
    answer = await service.handle(request(sha1(current), pem(certificate)))
    # Tiny CRL: the patch is larger than the CRL itself, so the DER goes out.
    assert answer_kind(answer) == "der"
    current = legacy_client_apply(answer, current)
    latest = db.latest_crl(0)
    assert latest is not None and current == latest.der
    crl = parse(current)
    assert crl_number(crl) == 2 and [e.serial_number for e in crl] == [2002]


@pytest_twisted.ensureDeferred
async def test_known_hash_large_crl_gets_xdelta(service: RevocationService, db: CADatabase) -> None:
    """On a CRL of 5,000 entries the answer is an xdelta patch that `xdelta patch` applies exactly."""
    db.insert_records(
        revoked_records(0, 5000, revoked_at=START, not_after=START + datetime.timedelta(days=300))
    )
    current = legacy_client_apply(await service.handle(request(EMPTY_SHA1)), b"")
    assert len(parse(current)) == 5000
    for serial in (3, 1 << 130, (1 << 100) + 5):  # first, last and middle of the list
        certificate = issue(make_root(), serial=serial)
        db.record_issued(0, certificate, 0, START)
        answer = await service.handle(request(sha1(current), pem(certificate)))
        assert answer_kind(answer) == "xdelta"
        assert len(answer) < 1500
        current = legacy_client_apply(answer, current)
        latest = db.latest_crl(0)
        assert latest is not None and current == latest.der
    crl = parse(current)
    assert len(crl) == 5003
    serials = [entry.serial_number for entry in crl]
    assert serials == sorted(serials)


@pytest_twisted.ensureDeferred
async def test_delta_from_an_older_kept_crl(service: RevocationService, db: CADatabase) -> None:
    """A client two CRLs behind (answer lost) gets a delta from the CRL it names."""
    db.insert_records(
        revoked_records(0, 3000, revoked_at=START, not_after=START + datetime.timedelta(days=300))
    )
    old = legacy_client_apply(await service.handle(request(EMPTY_SHA1)), b"")
    await service.handle(request(sha1(old)))  # this answer never reached the client
    answer = await service.handle(request(sha1(old)))
    assert answer_kind(answer) == "xdelta"
    new = legacy_client_apply(answer, old)
    assert crl_number(parse(new)) == 3


@pytest_twisted.ensureDeferred
async def test_re_revoke_is_fine(service: RevocationService, db: CADatabase) -> None:
    """Revoking a revoked certificate is not an error: a new CRL, the serial listed once."""
    certificate = issue(make_root(), serial=3003)
    db.record_issued(0, certificate, 0, START)
    first = legacy_client_apply(await service.handle(request(EMPTY_SHA1, pem(certificate))), b"")
    revoked_at = db.get_certificate(0, 3003).revoked_at  # type: ignore[union-attr]
    second = legacy_client_apply(
        await service.handle(request(sha1(first), pem(certificate))), first
    )
    crl = parse(second)
    assert crl_number(crl) == crl_number(parse(first)) + 1
    assert [entry.serial_number for entry in crl] == [3003]
    assert db.get_certificate(0, 3003).revoked_at == revoked_at  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_certificate_unknown_to_database_is_revoked_and_recorded(
    service: RevocationService, db: CADatabase
) -> None:
    """A certificate our key signed that the database does not know is revoked and recorded."""
    certificate = issue(make_root(), serial=4004)
    answer = await service.handle(request(EMPTY_SHA1, pem(certificate)))
    crl = x509.load_pem_x509_crl(answer)
    assert [entry.serial_number for entry in crl] == [4004]
    record = db.get_certificate(0, 4004)
    assert record is not None and record.status == STATUS_REVOKED
    assert record.subject == "CN=leaf.example.org"


@pytest_twisted.ensureDeferred
async def test_refresh_without_certificate(service: RevocationService, db: CADatabase) -> None:
    """A refresh (empty field 1) still makes a new CRL, per root."""
    answer0 = await service.handle(request(EMPTY_SHA1, root=0))
    answer1 = await service.handle(request(EMPTY_SHA1, root=1))
    crl1 = x509.load_pem_x509_crl(answer1)
    assert crl1.issuer == make_root("Signer Test Root 1").certificate.subject
    assert crl_number(crl1) == 1
    assert crl_number(x509.load_pem_x509_crl(answer0)) == 1
    await service.handle(request(EMPTY_SHA1, root=0))
    assert db.crl_numbers(0) == [1, 2] and db.crl_numbers(1) == [1]


@pytest_twisted.ensureDeferred
async def test_foreign_certificate_refused(service: RevocationService, db: CADatabase) -> None:
    """A certificate from another CA (even root 1 of ours, asked on root 0) is refused, no CRL made."""
    foreign = issue(make_root("Somebody Else's CA"), serial=5005)
    other_root = issue(make_root("Signer Test Root 1"), serial=5006)
    for certificate in (foreign, other_root):
        with pytest.raises(RequestRefused, match="not issued by root 0"):
            await service.handle(request(EMPTY_SHA1, pem(certificate)))
    assert db.crl_numbers(0) == []
    assert not db.is_issued(0, 5005) and not db.is_issued(0, 5006)


@pytest_twisted.ensureDeferred
async def test_same_name_other_key_refused(service: RevocationService, db: CADatabase) -> None:
    """A certificate naming our root as issuer but signed by another key is refused."""
    impostor_root = make_root("Signer Test Root 0", bits=3072)  # same name, other key
    forged = issue(impostor_root, serial=6006)
    with pytest.raises(RequestRefused):
        await service.handle(request(EMPTY_SHA1, pem(forged)))
    assert db.crl_numbers(0) == []


@pytest.mark.parametrize(
    "bad_hash",
    [b"", b"xyz", b"da39a3ee5e6b4b0d3255bfef95601890afd8070", b"g" * 40, b"da39a3ee5e6b4b0d3255bfef95601890afd80709ab"],
)
@pytest_twisted.ensureDeferred
async def test_garbage_hash_refused_without_side_effects(
    service: RevocationService, db: CADatabase, bad_hash: bytes
) -> None:
    """A CRL hash that is not 40 hex digits is refused before anything is revoked."""
    certificate = issue(make_root(), serial=7007)
    db.record_issued(0, certificate, 0, START)
    with pytest.raises(RequestRefused, match="CRL hash"):
        await service.handle(request(bad_hash, pem(certificate)))
    assert db.get_certificate(0, 7007).status == "V"  # type: ignore[union-attr]
    assert db.crl_numbers(0) == []


@pytest.mark.parametrize(
    "garbage",
    [b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", b"\x30\x03\x02\x01\x01", b"x" * 100000],
)
@pytest_twisted.ensureDeferred
async def test_garbage_certificate_refused(service: RevocationService, garbage: bytes) -> None:
    """Field 1 that is not a certificate is refused."""
    with pytest.raises(RequestRefused):
        await service.handle(request(EMPTY_SHA1, garbage))


@pytest_twisted.ensureDeferred
async def test_unknown_root_refused(service: RevocationService) -> None:
    """A root the service does not serve is refused."""
    with pytest.raises(RequestRefused, match="root 7"):
        await service.handle(request(EMPTY_SHA1, root=7))


@pytest_twisted.ensureDeferred
async def test_history_is_pruned(service: RevocationService, db: CADatabase) -> None:
    """Only the configured number of CRLs is kept; a client behind that gets the full PEM."""
    first = legacy_client_apply(await service.handle(request(EMPTY_SHA1)), b"")
    for _ in range(5):
        await service.handle(request(EMPTY_SHA1))
    assert db.crl_numbers(0) == [3, 4, 5, 6]
    answer = await service.handle(request(sha1(first)))
    assert answer_kind(answer) == "pem"


@pytest_twisted.ensureDeferred
async def test_uppercase_hash_accepted(service: RevocationService) -> None:
    """The client's hash is matched case-insensitively."""
    current = legacy_client_apply(await service.handle(request(EMPTY_SHA1)), b"")
    answer = await service.handle(request(sha1(current).upper()))
    assert answer_kind(answer) != "pem"
    assert crl_number(parse(legacy_client_apply(answer, current))) == 2


@pytest_twisted.ensureDeferred
async def test_full_crl_too_big_for_pem_goes_as_der_or_is_refused(db: CADatabase) -> None:
    """A full CRL larger than one answer may carry goes out in DER, or is refused if even that is too big."""
    from twisted.internet import reactor

    db.insert_records(
        revoked_records(0, 200, revoked_at=START, not_after=START + datetime.timedelta(days=300))
    )
    roots = {0: (make_root().certificate, make_root().key)}
    probe = RevocationService(db, roots, reactor, now=Now())
    size = len(legacy_client_apply(await probe.handle(request(EMPTY_SHA1)), b""))
    # Room for the DER (about 6 kB) but not for the PEM (a third larger).
    squeezed = RevocationService(db, roots, reactor, now=Now(), max_answer=size + 500)
    answer = await squeezed.handle(request(EMPTY_SHA1))
    assert answer_kind(answer) == "der"
    assert len(parse(answer)) == 200
    tiny = RevocationService(db, roots, reactor, now=Now(), max_answer=size // 2)
    with pytest.raises(RequestRefused, match="more than one answer may carry"):
        await tiny.handle(request(EMPTY_SHA1))
    # A client in sync still gets its (small) delta from the tiny service.
    current = db.latest_crl(0)
    assert current is not None
    answer = await tiny.handle(request(current.sha1.encode()))
    assert answer_kind(answer) == "xdelta"
    latest = db.latest_crl(0)
    assert latest is not None and legacy_client_apply(answer, current.der) == latest.der


@pytest_twisted.ensureDeferred
async def test_root_certificate_itself_refused(service: RevocationService, db: CADatabase) -> None:
    """The root's own (self-signed) certificate cannot be revoked on its own CRL."""
    with pytest.raises(RequestRefused, match="own CA certificate"):
        await service.handle(request(EMPTY_SHA1, make_root().certificate_pem()))
    assert db.crl_numbers(0) == []


@pytest_twisted.ensureDeferred
async def test_warm_up_loads_existing_revocations(db: CADatabase) -> None:
    """warm_up loads the revocations already in the database; the first CRL lists them."""
    from twisted.internet import reactor

    db.insert_records(
        revoked_records(0, 50, revoked_at=START, not_after=START + datetime.timedelta(days=300))
    )
    service = RevocationService(db, {0: (make_root().certificate, make_root().key)}, reactor, now=Now())
    await service.warm_up()
    answer = await service.handle(request(EMPTY_SHA1))
    assert len(x509.load_pem_x509_crl(answer)) == 50


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_are_served_in_turn(service: RevocationService, db: CADatabase) -> None:
    """Requests arriving together are served one after the other, each with its own CRL number."""
    from twisted.internet.defer import gatherResults

    certificates = [issue(make_root(), serial=9000 + i) for i in range(4)]
    answers = await gatherResults(
        [service.handle(request(EMPTY_SHA1, pem(certificate))) for certificate in certificates]
    )
    numbers = [crl_number(x509.load_pem_x509_crl(answer)) for answer in answers]
    assert numbers == [1, 2, 3, 4]
    final = x509.load_pem_x509_crl(answers[-1])
    assert [entry.serial_number for entry in final] == [9000, 9001, 9002, 9003]


@pytest_twisted.ensureDeferred
async def test_revocation_is_logged(service: RevocationService, db: CADatabase) -> None:
    """A revocation logs the root, the serial, the CRL number and, for a known hash, the delta."""
    from twisted.internet.testing import EventLoggingObserver
    from twisted.logger import formatEvent, globalLogPublisher

    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    try:
        db.insert_records(
            revoked_records(0, 3000, revoked_at=START, not_after=START + datetime.timedelta(days=300))
        )
        current = legacy_client_apply(await service.handle(request(EMPTY_SHA1)), b"")
        certificate = issue(make_root(), serial=0xABCDEF)
        await service.handle(request(sha1(current), pem(certificate)))
    finally:
        globalLogPublisher.removeObserver(observer)
    texts = [formatEvent(event) for event in observer]
    assert any("serial abcdef revoked; CRL 2 with 3001 entries" in text for text in texts), texts
    assert any("Root 0: delta of" in text for text in texts), texts
    assert any("client's CRL da39a3ee" in text and "unknown" in text for text in texts), texts
