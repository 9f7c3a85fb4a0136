"""Issuing through the server: every certificate recorded, identical replays never double-issued."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509

from signer.protocol import codec
from signer.server.cadb import CADatabase
from signer.server.config import X509Policy, default_profiles
from signer.server.service import X509Signing
from signer.server.x509ca import X509Authority
from tests.support.testca import make_csr
from tests.support.x509_requests import loaded_roots

WINDOW = datetime.timedelta(hours=1)


class Clock:
    """A settable wall clock."""

    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def database(tmp_path: Path) -> CADatabase:
    return CADatabase(tmp_path / "ca.sqlite3")


def signing(database: CADatabase, clock: Clock, window: datetime.timedelta = WINDOW) -> X509Signing:
    authority = X509Authority(loaded_roots(), default_profiles(), X509Policy(), clock)
    return X509Signing(authority, database, clock, window)


def request(subject: bytes = b"/CN=www.example.org") -> codec.SignX509Request:
    return codec.SignX509Request(
        csr=make_csr("www.example.org", index=21),
        subject=subject,
        san=b"DNS:www.example.org",
        root=1,
        profile=5,
        digest=8,
        days=365,
    )


def serial_of(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def test_issued_certificate_is_recorded_before_it_is_returned(database: CADatabase, clock: Clock) -> None:
    """The returned certificate is already in the CA database."""
    pem = signing(database, clock)(request())
    assert database.is_issued(1, serial_of(pem))
    assert database.count_certificates(1) == 1


def test_identical_replay_gets_the_same_certificate(database: CADatabase, clock: Clock) -> None:
    """A client that crashed before storing its answer and asks again gets the same certificate."""
    sign = signing(database, clock)
    first = sign(request())
    clock.now += datetime.timedelta(minutes=30)
    again = sign(request())
    assert again == first
    assert database.count_certificates(1) == 1


def test_replay_after_the_window_is_issued_anew(database: CADatabase, clock: Clock) -> None:
    """Outside the window the same request is a new request (e.g. a renewal)."""
    sign = signing(database, clock)
    first = sign(request())
    clock.now += WINDOW + datetime.timedelta(seconds=1)
    assert serial_of(sign(request())) != serial_of(first)
    assert database.count_certificates(1) == 2


def test_a_different_request_is_not_a_replay(database: CADatabase, clock: Clock) -> None:
    """Any difference (here the subject) means a new certificate."""
    sign = signing(database, clock)
    first = sign(request())
    other = sign(request(subject=b"/CN=www.example.org/O=Example"))
    assert serial_of(other) != serial_of(first)


def test_revoked_certificate_is_not_replayed(database: CADatabase, clock: Clock) -> None:
    """A certificate revoked meanwhile is never handed out again."""
    sign = signing(database, clock)
    first = sign(request())
    database.mark_revoked(1, serial_of(first), clock.now)
    assert serial_of(sign(request())) != serial_of(first)


def test_window_zero_turns_replay_detection_off(database: CADatabase, clock: Clock) -> None:
    """With replay_window_minutes = 0 every request is signed."""
    sign = signing(database, clock, datetime.timedelta(0))
    assert serial_of(sign(request())) != serial_of(sign(request()))
