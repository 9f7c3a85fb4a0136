"""An in-memory signer for the client's unit tests.

:class:`FakeSigner` provides the client's requester interface
(``request(message) -> Deferred[Response]``) and answers like a signer:

- X.509: signs the CSR with a throw-away test root (``tests.support.testca``)
  per wire root, honouring ``days``; records every request;
- OpenPGP: certifies with the real :class:`signer.server.openpgp.OpenPGPCertifier`
  when one is given, else answers empty;
- revoke / CRL refresh: keeps the revoked serials per root and builds a fresh
  signed CRL each time, answering with an xdelta patch (real ``xdelta``)
  against the CRL the client named by hash when it knows it, else the full
  CRL in PEM (``crl_mode`` can force ``pem``, ``der``, ``empty``, ``garbage``
  or ``foreign`` = signed by another key);
- NUL: the empty NUL answer.

``refuse`` (a predicate on the request) makes it answer empty;
``before_answer`` is called with (request, response) just before the answer
is handed back, so a test can inject a crash at that point.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread

from signer.protocol import codec
from signer.server.xdelta import make_delta
from tests.support.testca import TestRoot, make_root, rsa_key

ROOT_NAMES = ("Signer Test Root 0", "Signer Test Root 1")


def test_roots() -> list[TestRoot]:
    return [make_root(name) for name in ROOT_NAMES]


@dataclass
class _RootState:
    root: TestRoot
    revoked: dict[int, datetime.datetime] = field(default_factory=dict)
    history: dict[str, bytes] = field(default_factory=dict)
    number: int = 0


class FakeSigner:
    """Answers requests like a signer (see the module docstring)."""

    def __init__(self, reactor: Any, certifier: Any = None) -> None:
        self.reactor = reactor
        self.certifier = certifier
        self.roots = [_RootState(root) for root in test_roots()]
        self.requests: list[codec.Request] = []
        self.refuse: Callable[[codec.Request], bool] = lambda request: False
        self.before_answer: Callable[[codec.Request, codec.Response], None] | None = None
        self.crl_mode = "auto"
        self.idle = True

    def is_idle(self) -> bool:
        return self.idle

    def of_kind(self, kind: type) -> list[Any]:
        return [request for request in self.requests if isinstance(request, kind)]

    def request(self, message: codec.Request) -> Deferred[codec.Response]:
        self.requests.append(message)
        return self._answer(message)

    @inlineCallbacks
    def _answer(self, message: codec.Request) -> Any:
        payload = b""
        if not self.refuse(message):
            if isinstance(message, codec.SignX509Request):
                payload = self.sign_x509(message)
            elif isinstance(message, codec.SignOpenPGPRequest):
                if self.certifier is not None:
                    payload = yield deferToThread(self._certify, message)
            elif isinstance(message, codec.RevokeRequest):
                payload = yield self.revoke(message)
        response = codec.make_response(message, payload)
        if self.before_answer is not None:
            self.before_answer(message, response)
        return response

    def _certify(self, message: codec.SignOpenPGPRequest) -> bytes:
        from signer.server.errors import RequestRefused

        try:
            return self.certifier.certify(message)  # type: ignore[no-any-return]
        except RequestRefused:
            return b""

    # -- X.509 ---------------------------------------------------------------

    def sign_x509(self, message: codec.SignX509Request) -> bytes:
        root = self.roots[message.root].root
        csr = x509.load_pem_x509_csr(message.csr)
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(root.certificate.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=message.days))
        )
        certificate = builder.sign(root.key, hashes.SHA256())
        return certificate.public_bytes(serialization.Encoding.PEM)

    # -- CRLs ----------------------------------------------------------------

    def build_crl(self, index: int, key: Any = None) -> bytes:
        state = self.roots[index]
        state.number += 1
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(state.root.certificate.subject)
            .last_update(now)
            .next_update(now + datetime.timedelta(days=7))
            .add_extension(x509.CRLNumber(state.number), critical=False)
        )
        for serial in sorted(state.revoked):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(state.revoked[serial])
                .build()
            )
        crl = builder.sign(key or state.root.key, hashes.SHA256())
        der = crl.public_bytes(serialization.Encoding.DER)
        state.history[hashlib.sha1(der).hexdigest()] = der
        return der

    def stale_crl(self, index: int, days_ago: int = 2) -> bytes:
        """A CRL of ``index`` whose lastUpdate lies ``days_ago`` days back."""
        state = self.roots[index]
        then = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days_ago)
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(state.root.certificate.subject)
            .last_update(then)
            .next_update(then + datetime.timedelta(days=7))
            .sign(state.root.key, hashes.SHA256())
        )
        der = crl.public_bytes(serialization.Encoding.DER)
        state.history[hashlib.sha1(der).hexdigest()] = der
        return der

    @inlineCallbacks
    def revoke(self, message: codec.RevokeRequest) -> Any:
        state = self.roots[message.root]
        if message.certificate:
            certificate = x509.load_pem_x509_certificate(message.certificate)
            state.revoked.setdefault(
                certificate.serial_number, datetime.datetime.now(datetime.timezone.utc)
            )
        mode = self.crl_mode
        if mode == "empty":
            self.build_crl(message.root)
            return b""
        if mode == "garbage":
            self.build_crl(message.root)
            return b"this is neither a patch nor a CRL"
        if mode == "foreign":
            der = self.build_crl(message.root, key=rsa_key(2048, 77))
            return der
        new = self.build_crl(message.root)
        if mode == "der":
            return new
        old = state.history.get(message.crl_sha1.decode("ascii"))
        if mode == "pem" or old is None:
            crl = x509.load_der_x509_crl(new)
            return crl.public_bytes(serialization.Encoding.PEM)
        patch = yield make_delta(self.reactor, old, new)
        return patch
