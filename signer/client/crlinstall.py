"""Turning a revoke answer into the new CRL file of a root, verified.

The signer answers a revocation or CRL refresh with one of (protocol.md):

- a complete CRL in PEM (``-----BEGIN X509 CRL-----``): taken as is;
- an xdelta 1 patch against the CRL we named by its SHA-1: applied with the
  real ``xdelta`` binary (:func:`signer.server.xdelta.apply_patch`, a child
  process, no shell);
- a complete CRL in DER: what is left when the answer is neither;
- nothing: the signer could not help.

Whatever the route, the result must parse as a DER CRL, be issued by the
root's CA certificate and carry a valid signature by its key before it
replaces the current file (temporary file + fsync + rename). The legacy
client installed unverified CRLs; we never do. Any failure raises
:class:`CrlInstallError` and leaves the old file untouched.

Parsing and verifying a CRL of several MB, and the file I/O, run in a thread.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from signer.client.config import RootConfig
from signer.client.files import write_atomic
from signer.protocol.codec import EMPTY_SHA1
from signer.server.xdelta import DEFAULT_EXECUTABLE, XdeltaError, apply_patch, is_patch

PEM_MARKER = b"-----BEGIN X509 CRL-----"

log = Logger()


class CrlInstallError(Exception):
    """A revoke answer that could not be turned into a verified CRL."""


@dataclass(frozen=True)
class CrlState:
    """A root's current CRL file: raw bytes (None when missing), its SHA-1, parsed CRL."""

    data: bytes | None
    sha1: str
    crl: x509.CertificateRevocationList | None

    def lists(self, serial: int) -> bool:
        """Whether the CRL revokes ``serial``."""
        return self.crl is not None and self.crl.get_revoked_certificate_by_serial_number(serial) is not None

    def last_update(self) -> datetime.datetime | None:
        return None if self.crl is None else self.crl.last_update_utc


def load_ca_certificate(path: Path) -> x509.Certificate:
    """The root's CA certificate (PEM or DER).

    :raises CrlInstallError: when it cannot be read or parsed.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CrlInstallError(f"cannot read CA certificate {path}: {exc.strerror}") from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CrlInstallError(f"CA certificate {path} does not parse: {exc}") from None


def verify_crl(der: bytes, ca: x509.Certificate) -> x509.CertificateRevocationList:
    """Parse a DER CRL and check it is ``ca``'s, correctly signed.

    :raises CrlInstallError: naming the reason.
    """
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise CrlInstallError(f"answer is not a CRL in PEM, DER or an xdelta patch ({exc})") from None
    if crl.issuer != ca.subject:
        raise CrlInstallError(
            f"CRL issuer {crl.issuer.rfc4514_string()} is not the CA {ca.subject.rfc4514_string()}"
        )
    try:
        valid = crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise CrlInstallError(f"CRL signature cannot be checked: {exc}") from None
    if not valid:
        raise CrlInstallError("CRL signature does not verify against the CA certificate")
    return crl


def read_crl_state(root: RootConfig) -> CrlState:
    """Read (blocking) the current CRL file of ``root``; a missing file is no error."""
    try:
        data = root.crl.read_bytes()
    except FileNotFoundError:
        return CrlState(None, EMPTY_SHA1, None)
    try:
        crl: x509.CertificateRevocationList | None = x509.load_der_x509_crl(data)
    except ValueError:
        crl = None
    return CrlState(data, hashlib.sha1(data).hexdigest(), crl)


def _pem_to_der(data: bytes) -> bytes:
    try:
        crl = x509.load_pem_x509_crl(data[data.index(PEM_MARKER) :])
    except ValueError as exc:
        raise CrlInstallError(f"PEM CRL does not parse: {exc}") from None
    return crl.public_bytes(serialization.Encoding.DER)


def _verify_and_replace(root: RootConfig, der: bytes) -> CrlState:
    ca = load_ca_certificate(root.ca_certificate)
    crl = verify_crl(der, ca)
    write_atomic(root.crl, der)
    return CrlState(der, hashlib.sha1(der).hexdigest(), crl)


class CrlInstaller:
    """Applies revoke answers to the CRL files of the configured roots.

    :param reactor: for the ``xdelta`` child process.
    :param run_blocking: runs blocking work off the reactor thread
        (``deferToThread`` by default).
    """

    def __init__(
        self,
        reactor: Any,
        *,
        xdelta: str = DEFAULT_EXECUTABLE,
        run_blocking: Callable[..., Deferred[Any]] | None = None,
    ) -> None:
        self.reactor = reactor
        self.xdelta = xdelta
        self.run_blocking = run_blocking or deferToThread

    def current(self, root: RootConfig) -> Deferred[CrlState]:
        """The root's current CRL (read in a thread)."""
        return self.run_blocking(read_crl_state, root)

    @inlineCallbacks
    def install(self, root: RootConfig, answer: bytes, current: CrlState) -> Any:
        """Make the new CRL from ``answer``, verify it, replace the file.

        :returns: the new :class:`CrlState`.
        :raises CrlInstallError: the old file is left as it was.
        """
        if not answer:
            raise CrlInstallError("the signer sent no CRL (empty answer)")
        if PEM_MARKER in answer:
            how = "PEM"
            der = yield self.run_blocking(_pem_to_der, answer)
        elif is_patch(answer):
            how = "xdelta patch"
            try:
                der = yield apply_patch(
                    self.reactor,
                    current.data or b"",
                    answer,
                    executable=self.xdelta,
                    run_blocking=self.run_blocking,
                )
            except XdeltaError as exc:
                log.info(
                    "Answer for rootcert {rootcert} is not a valid patch of our CRL ({error}); trying DER",
                    rootcert=root.rootcert,
                    error=str(exc),
                )
                der, how = answer, "DER"
        else:
            der, how = answer, "DER"
        state = yield self.run_blocking(_verify_and_replace, root, der)
        log.info(
            "Installed CRL for rootcert {rootcert} from {how}: {count} entries, sha1 {sha1}",
            rootcert=root.rootcert,
            how=how,
            count=len(state.crl),
            sha1=state.sha1,
        )
        return state
