"""Every bad request over the wire gets an empty answer, one logged reason, and the
running `twistd signer-server` keeps answering (issue 3's list of bad inputs)."""

from __future__ import annotations

import datetime
import time
from typing import Any, Callable, Iterator

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import reactor

from signer.protocol import codec
from signer.protocol.link import LinkTimeouts
from signer.protocol.serialconfig import SerialConfig
from signer.protocol.transport import ClientLinkProtocol, open_serial
from tests.server.conftest import Signer
from tests.support.gpg import KeyMaker, short_tempdir
from tests.support.testca import make_csr, make_root, rsa_key
from tests.support.x509_requests import broken_signature_csr, spkac_text

GOOD_CSR = make_csr("bad.example.org", index=31)


def x509_request(**changes: Any) -> codec.SignX509Request:
    fields: dict[str, Any] = dict(
        csr=GOOD_CSR, subject=b"/CN=bad.example.org", san=b"DNS:bad.example.org",
        root=1, profile=5, digest=8, days=365,
    )
    fields.update(changes)
    return codec.SignX509Request(**fields)


def foreign_certificate() -> bytes:
    """A certificate issued by a CA that is not the signer's."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    other = make_root("Some Other CA")
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "foreign.example.org")]))
        .issuer_name(other.certificate.subject)
        .public_key(rsa_key(2048, 32).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(other.key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def user_keys() -> Iterator[dict[str, bytes]]:
    home = short_tempdir("sgbad")
    maker = KeyMaker(home / "k")
    try:
        first, second = maker.make(maker.unique_uid()), maker.make(maker.unique_uid())
        yield {
            "two keys": maker.bundle(first, second),
            "expired": maker.expired().armored,
            "revoked": maker.revoked().armored,
        }
    finally:
        maker.close()


BAD_REQUESTS: dict[str, Callable[[dict[str, bytes]], codec.Request]] = {
    "malformed CSR": lambda k: x509_request(csr=b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n"),
    "CSR with a broken signature": lambda k: x509_request(csr=broken_signature_csr()),
    "SPKAC with a broken signature": lambda k: x509_request(
        csr=spkac_text(break_signature=True), subject=b"", san=b"", profile=0, keytype=1
    ),
    "1024-bit RSA key": lambda k: x509_request(csr=make_csr("bad.example.org", bits=1024, index=33)),
    "forbidden character in subject": lambda k: x509_request(subject=b"/CN=bad\"example.org"),
    "forbidden character in SAN": lambda k: x509_request(san=b"DNS:bad.example.org,DNS:a b.org"),
    "escaped forbidden character": lambda k: x509_request(subject=b"/CN=bad\\x23example.org"),
    "unknown SAN type": lambda k: x509_request(san=b"RID:1.2.3.4"),
    "unknown root": lambda k: x509_request(root=9),
    "unknown profile": lambda k: x509_request(profile=42),
    "unknown digest": lambda k: x509_request(digest=77),
    "md5": lambda k: x509_request(digest=1),
    "sha1": lambda k: x509_request(digest=2),
    "days = 0": lambda k: x509_request(days=0),
    "OpenPGP: two keys": lambda k: codec.SignOpenPGPRequest(key=k["two keys"]),
    "OpenPGP: expired key": lambda k: codec.SignOpenPGPRequest(key=k["expired"]),
    "OpenPGP: revoked key": lambda k: codec.SignOpenPGPRequest(key=k["revoked"]),
    "OpenPGP: garbage": lambda k: codec.SignOpenPGPRequest(key=b"\x99\x01garbage, not a key"),
    "revoke a certificate of another CA": lambda k: codec.RevokeRequest(
        crl_sha1=codec.EMPTY_SHA1.encode(), certificate=foreign_certificate(), root=1
    ),
    "garbage CRL hash": lambda k: codec.RevokeRequest(crl_sha1=b"zz-not-a-sha1", root=1),
}


class Line:
    """Our client protocol on the CLI's end of the pty pair, in this process."""

    def __init__(self, device: str) -> None:
        self.protocol = ClientLinkProtocol(reactor, LinkTimeouts(start_ack=10, response_start=30))
        open_serial(self.protocol, SerialConfig(device=device), reactor)

    def request(self, message: codec.Request) -> Any:
        return self.protocol.request(message)


def refusals(signer: Signer) -> int:
    return sum(1 for line in signer.log_text().splitlines() if "refused" in line)


@pytest_twisted.inlineCallbacks
def test_every_bad_request_gets_an_empty_answer_and_a_logged_reason(
    signer: Signer, user_keys: dict[str, bytes]
):  # type: ignore[no-untyped-def]
    """Each bad input: empty field 1, one more 'refused' log line, and the next NUL is answered."""
    line = Line(signer.device)
    try:
        for name, make in BAD_REQUESTS.items():
            before = refusals(signer)
            response = yield line.request(make(user_keys))
            assert response.payload == b"", f"{name}: the signer answered {response.payload[:60]!r}"
            now = datetime.datetime.now(datetime.timezone.utc)
            nul = yield line.request(codec.NulRequest(codec.format_nul_timestamp(now)))
            assert nul == codec.NulResponse()
            deadline = time.monotonic() + 5
            while refusals(signer) <= before and time.monotonic() < deadline:
                yield _sleep(0.02)
            assert refusals(signer) == before + 1, f"{name}: expected exactly one refusal logged"
        # A NUL with a malformed timestamp: still answered, and the reason is logged.
        before = refusals(signer)
        response = yield line.request(codec.NulRequest(b"13322561999.99"))
        assert response == codec.NulResponse()
        deadline = time.monotonic() + 5
        while refusals(signer) <= before and time.monotonic() < deadline:
            yield _sleep(0.02)
        assert refusals(signer) == before + 1
        # Days above the profile's cap are capped, not refused (server.md).
        response = yield line.request(x509_request(days=5000))
        certificate = x509.load_pem_x509_certificate(response.payload)
        validity = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        assert validity.days <= 730
    finally:
        yield line.protocol.close()
    assert "Traceback" not in signer.log_text()


def _sleep(seconds: float) -> Any:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)
