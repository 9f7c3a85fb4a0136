"""Revoke X.509 / refresh CRL (action 2): one request in, field 1 out.

For each request (see server.md, "Revoke X.509 / refresh CRL"):

1. Check everything before touching anything: the root is configured, the
   client's CRL hash is 40 hex digits, and a certificate in field 1 parses
   (PEM, or DER) and was signed by this root's key. Otherwise
   :class:`~signer.server.errors.RequestRefused` (an empty answer).
2. In a thread: mark the certificate revoked (already revoked is fine; a
   certificate our key signed that the database does not know, e.g. one
   issued before the database was imported, is recorded as revoked), then
   ALWAYS produce a fresh CRL (next CRL number) and keep it in the history
   under its SHA-1, pruned to the configured number of CRLs.
3. Answer: when the client's hash names a CRL we still keep, an xdelta 1 patch
   from it to the new CRL, or the new CRL in DER when that is smaller (the
   legacy client takes a payload that is not a valid patch as a DER CRL);
   when the hash is unknown, the new CRL in PEM (the legacy server answered
   "" there and left its client retrying forever).

Requests are served one at a time per service (a :class:`DeferredLock`): the
CRL chain is a sequence.
"""

from __future__ import annotations

import datetime
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from twisted.internet.defer import Deferred, DeferredLock, fail, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from signer.protocol import codec
from signer.server.cadb import MAX_SERIAL, CADatabase
from signer.server.crl import (
    DEFAULT_GRACE,
    DEFAULT_LIFETIME,
    CrlSigner,
    ProducedCrl,
    RootCrl,
    der_to_pem,
    pem_length,
    signer_for,
)
from signer.server.errors import RequestRefused
from signer.server.xdelta import DEFAULT_EXECUTABLE, XdeltaError, make_delta

#: Runs a blocking callable elsewhere (a thread in production) and returns a Deferred.
BlockingRunner = Callable[..., "Deferred[Any]"]

DEFAULT_HISTORY = 16
#: Largest answer by default: what our client accepts in one frame, less headroom.
DEFAULT_MAX_ANSWER = codec.DEFAULT_MAX_FRAME_LENGTH - 1024
_SHA1_HEX = re.compile(rb"[0-9a-fA-F]{40}")
#: Hard ceiling on a certificate in field 1 (a certificate is a few kB).
MAX_CERTIFICATE_BYTES = 64 * 1024


@dataclass(frozen=True)
class RevocationOutcome:
    """What the thread part did for one request (for logs and tests)."""

    root: int
    serial: int | None
    already_revoked: bool
    crl: ProducedCrl
    base_crl: bytes | None  # the client's CRL, when we still keep it


def parse_certificate(data: bytes) -> x509.Certificate:
    """A certificate from field 1 (PEM, or DER); RequestRefused when it is not one."""
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise RequestRefused(f"field 1 holds {len(data)} bytes, too many for a certificate")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise RequestRefused(f"field 1 is not a certificate: {e}") from None


def check_crl_hash(crl_sha1: bytes) -> str:
    """The client's CRL hash as lowercase hex; RequestRefused unless 40 hex digits."""
    value = crl_sha1.strip()
    if not _SHA1_HEX.fullmatch(value):
        shown = crl_sha1[:60].decode("ascii", "replace")
        raise RequestRefused(f"the CRL hash {shown!r} is not a SHA-1 in hex")
    return value.decode("ascii").lower()


def check_issued_by(certificate: x509.Certificate, ca: x509.Certificate, root: int) -> None:
    """RequestRefused unless ``ca`` (its name and key) issued ``certificate``.

    The CA certificate itself (self-signed, so "issued" by its own key) is
    refused too: a root is not revoked on its own CRL.
    """
    if certificate == ca:
        raise RequestRefused(f"the certificate is root {root}'s own CA certificate")
    serial = certificate.serial_number
    if not 0 < serial <= MAX_SERIAL:
        raise RequestRefused(f"serial {serial:#x} is not a positive number of at most 160 bits")
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        reason = str(e) or type(e).__name__
        raise RequestRefused(
            f"certificate {certificate.serial_number:#x} was not issued by root {root}: {reason}"
        ) from None


class RevocationService:
    """Serves revoke / CRL refresh requests for the configured roots.

    :param db: the CA database.
    :param roots: root index -> root material: a ``(certificate, key)`` or
        ``(certificate, key, digest)`` tuple, an object with ``certificate``
        and ``key`` (e.g. :class:`signer.server.config.LoadedRoot`) or a
        :class:`~signer.server.crl.CrlSigner`.
    :param reactor: spawns xdelta, schedules, provides the thread pool.
    :param now: the current time (aware UTC); defaults to ``reactor.seconds()``.
    :param lifetime: thisUpdate to nextUpdate.
    :param grace: how long after its notAfter a revoked certificate stays
        listed (None: forever).
    :param history: how many CRLs per root to keep for deltas.
    :param run_blocking: runs the database/CRL work (default: the reactor's
        thread pool).
    :param max_answer: the largest field 1 to send. A full CRL above it goes
        out in DER instead of PEM, or not at all (refused) when even the DER
        is larger: a frame cannot carry it (the receivers' frame limit).
    """

    log = Logger()

    def __init__(
        self,
        db: CADatabase,
        roots: Mapping[int, Any],
        reactor: Any,
        *,
        now: Callable[[], datetime.datetime] | None = None,
        lifetime: datetime.timedelta = DEFAULT_LIFETIME,
        grace: datetime.timedelta | None = DEFAULT_GRACE,
        history: int = DEFAULT_HISTORY,
        run_blocking: BlockingRunner | None = None,
        xdelta_executable: str = DEFAULT_EXECUTABLE,
        max_answer: int = DEFAULT_MAX_ANSWER,
    ) -> None:
        if history < 1:
            raise ValueError("at least one CRL must be kept in the history")
        self._db = db
        self._reactor = reactor
        self._now = now or (
            lambda: datetime.datetime.fromtimestamp(reactor.seconds(), datetime.timezone.utc)
        )
        self._history = history
        self._max_answer = max_answer
        self._xdelta = xdelta_executable
        self._run_blocking = run_blocking or self._in_thread
        self._crls: dict[int, RootCrl] = {}
        self._latest: dict[int, ProducedCrl] = {}
        for index, material in roots.items():
            signer: CrlSigner = signer_for(material)
            self._crls[index] = RootCrl(db, index, signer, lifetime=lifetime, grace=grace)
        self._request_lock = DeferredLock()
        self._thread_lock = threading.Lock()

    def _in_thread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> "Deferred[Any]":
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args, **kwargs)

    @property
    def roots(self) -> tuple[int, ...]:
        """The root indexes this service serves."""
        return tuple(sorted(self._crls))

    def warm_up(self) -> "Deferred[None]":
        """Loads every root's revoked entries in a thread (call at start: seconds for a big CA)."""
        return self._run_blocking(self.load)

    # -- blocking part -----------------------------------------------------

    def load(self) -> None:
        """Loads every root's revoked entries from the database (blocking; optional).

        Done lazily on the first request of a root otherwise.
        """
        with self._thread_lock:
            now = self._now()
            for crl in self._crls.values():
                crl.ensure_current(now)

    def revoke_and_produce(
        self, root: int, certificate: x509.Certificate | None, client_sha1: str
    ) -> RevocationOutcome:
        """:meth:`revoke_and_make`, then :meth:`store` (blocking; for tools and tests)."""
        outcome = self.revoke_and_make(root, certificate, client_sha1)
        self.store(outcome.crl)
        return outcome

    def revoke_and_make(
        self, root: int, certificate: x509.Certificate | None, client_sha1: str
    ) -> RevocationOutcome:
        """Revokes ``certificate`` (if any), makes the next CRL, finds the client's CRL.

        The revocation is committed; the new CRL is not stored yet (see
        :meth:`store`). Blocking; call it from a thread. The checks of
        :meth:`handle` must have passed.
        """
        with self._thread_lock:
            crl = self._crls[root]
            now = self._now().replace(microsecond=0)
            latest = self._latest.get(root)
            if latest is not None and latest.sha1 == client_sha1:
                base: bytes | None = latest.der  # the usual case: no 30 MB read
            else:
                base = crl.db.crl_by_sha1(root, client_sha1)
            serial: int | None = None
            already = False
            if certificate is not None:
                serial = certificate.serial_number
                already = crl.revoke(serial, now, certificate=certificate)
            produced = crl.make(now)
            return RevocationOutcome(root, serial, already, produced, base)

    def store(self, produced: ProducedCrl) -> None:
        """Keeps ``produced`` in the history (pruned); it becomes the latest CRL.

        Blocking. Runs next to the xdelta of the same request.
        """
        self._crls[produced.root].store(produced, self._now(), keep=self._history)
        self._latest[produced.root] = produced

    # -- the request ---------------------------------------------------------

    def handle(self, request: codec.RevokeRequest) -> "Deferred[bytes]":
        """Field 1 of the answer to ``request``; fails with RequestRefused when refused."""
        try:
            root, certificate, client_sha1 = self._check(request)
        except RequestRefused as refused:
            return fail(refused)
        return self._request_lock.run(self._serve, root, certificate, client_sha1)

    def _check(
        self, request: codec.RevokeRequest
    ) -> tuple[int, x509.Certificate | None, str]:
        crl = self._crls.get(request.root)
        if crl is None:
            raise RequestRefused(f"root {request.root} is not configured")
        client_sha1 = check_crl_hash(request.crl_sha1)
        certificate = None
        if request.certificate.strip():
            certificate = parse_certificate(request.certificate)
            check_issued_by(certificate, crl.signer.certificate, request.root)
        return request.root, certificate, client_sha1

    def _checkpoint_later(self) -> None:
        """Folds the database log (which now holds a whole CRL) in, off the answer's path."""

        def failed(failure: Failure) -> None:
            self.log.failure("CA database checkpoint failed", failure)

        self._run_blocking(self._db.checkpoint).addErrback(failed)

    @inlineCallbacks
    def _serve(
        self, root: int, certificate: x509.Certificate | None, client_sha1: str
    ) -> Any:
        started = self._reactor.seconds()
        outcome: RevocationOutcome = yield self._run_blocking(
            self.revoke_and_make, root, certificate, client_sha1
        )
        new = outcome.crl
        produced = self._reactor.seconds()
        # Storing the CRL (tens of MB for a big CA) and making the delta overlap.
        stored: Deferred[None] = self._run_blocking(self.store, new)
        self.log.info(
            "Root {root}: {what}CRL {number} with {entries} entries, {size} bytes, in {ms:.0f} ms",
            root=root,
            what=(
                ""
                if outcome.serial is None
                else f"serial {outcome.serial:x} "
                + ("was already revoked; " if outcome.already_revoked else "revoked; ")
            ),
            number=new.crl_number,
            entries=new.entries,
            size=len(new.der),
            ms=(produced - started) * 1000,
        )
        try:
            payload = yield self._answer(outcome, new, stored, client_sha1, produced)
        finally:
            # Once the answer is ready: the checkpoint must not compete with
            # xdelta for the disk.
            self._checkpoint_later()
        return payload

    @inlineCallbacks
    def _answer(
        self,
        outcome: RevocationOutcome,
        new: ProducedCrl,
        stored: "Deferred[None]",
        client_sha1: str,
        produced: float,
    ) -> Any:
        root = outcome.root
        if outcome.base_crl is None:
            self.log.info(
                "Root {root}: the client's CRL {sha1} is unknown; answering the full CRL",
                root=root,
                sha1=client_sha1,
            )
            yield stored
            if pem_length(len(new.der)) <= self._max_answer:
                pem: bytes = yield self._run_blocking(new.pem)
                return pem
            return self._full_der(new)
        delta = make_delta(
            self._reactor,
            outcome.base_crl,
            new.der,
            executable=self._xdelta,
            run_blocking=self._run_blocking,
        )
        try:
            yield stored  # the answer leaves only once its CRL is in the history
        except BaseException:
            delta.addErrback(lambda _: None)  # its outcome no longer matters
            raise
        try:
            patch = yield delta
        except XdeltaError as e:
            self.log.error(
                "Root {root}: no delta ({error}); answering the full CRL in DER",
                root=root,
                error=str(e),
            )
            return self._full_der(new)
        self.log.info(
            "Root {root}: delta of {size} bytes from the client's CRL in {ms:.0f} ms",
            root=root,
            size=len(patch),
            ms=(self._reactor.seconds() - produced) * 1000,
        )
        if len(new.der) <= len(patch):
            return new.der
        return patch

    def _full_der(self, new: ProducedCrl) -> bytes:
        """The CRL in DER when it fits in one answer; RequestRefused otherwise."""
        if len(new.der) <= self._max_answer:
            return new.der
        raise RequestRefused(
            f"CRL {new.crl_number} of root {new.root} has {len(new.der)} bytes, more than one"
            f" answer may carry ({self._max_answer}); the client needs it by other means"
        )


def answer_kind(payload: bytes) -> str:
    """``pem``, ``xdelta``, ``der`` or ``empty``: what a revoke answer carries."""
    if not payload:
        return "empty"
    if payload.startswith(b"-----BEGIN X509 CRL-----"):
        return "pem"
    if payload.startswith(b"%XDZ"):
        return "xdelta"
    return "der"


__all__ = [
    "RevocationOutcome",
    "RevocationService",
    "answer_kind",
    "check_crl_hash",
    "check_issued_by",
    "der_to_pem",
    "parse_certificate",
]
