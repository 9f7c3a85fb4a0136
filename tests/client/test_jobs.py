"""The polling round against a fake signer: all five kinds, revocations, CRLs, keep-alive."""

from __future__ import annotations

import datetime

import pytest
import pytest_twisted
from cryptography import x509

from signer.client.webdb import REVOKE_REQUESTED
from signer.protocol import codec
from tests.client.conftest import World
from tests.support.testca import make_csr


def seed_member(world: World, memid: int = 10, points: int = 100, language: str = "en_US") -> None:
    world.db.add_user(memid, f"member{memid}@example.org", "Alice", language)
    if points:
        world.db.add_points(memid, points)


@pytest_twisted.inlineCallbacks
def test_client_certificate_is_signed_written_and_recorded(world: World, backend: str) -> None:
    """A pending emailcerts row is sent with profile 0 and the subject/SAN split, then completed."""
    seed_member(world)
    world.db.add_cert(
        "emailcerts", 1, 10,
        "/CN=Alice Tester/emailAddress=a@example.org/subjectAltName=email:a@example.org",
        cn="a@example.org", md="sha256",
    )
    world.write_csr("client", 1, make_csr("Alice Tester", index=3))
    jobs = world.jobs()
    report = yield jobs.run_round()
    assert report.signed == [("emailcerts", 1)], report
    [request] = world.signer.of_kind(codec.SignX509Request)
    assert request.subject == b"/CN=Alice Tester/emailAddress=a@example.org"
    assert request.san == b"email:a@example.org"
    assert (request.profile, request.root, request.digest, request.days) == (0, 0, 8, 366)
    row = world.db.row("emailcerts", 1)
    assert row["crt_name"] == "../crt/client/0/client-1.crt"
    certificate = x509.load_pem_x509_certificate(world.crt_path("client", 1).read_bytes())
    assert row["serial"] == format(certificate.serial_number, "X").zfill(len(row["serial"]))
    assert len(row["serial"]) % 2 == 0 and row["serial"] == row["serial"].upper()
    assert row["expire"] == certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S")
    assert row["modified"] != "0000-00-00 00:00:00"
