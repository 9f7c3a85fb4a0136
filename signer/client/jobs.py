"""One polling round of the client, in the legacy order, crash-safe.

A round (:meth:`Jobs.run_round`) does, in this order (client.md):

1. OpenPGP requests (``gpg``);
2. certificate requests for ``emailcerts``, ``domaincerts``,
   ``orgemailcerts``, ``orgdomaincerts``;
3. revocations for the same four tables;
4. in the first round and every ``crl_check_every``-th after, a CRL freshness
   check per configured root;
5. a NUL keep-alive when nothing else was sent in this round.

Every failure of a row ends in a warning count (signing) or a log line
(revocation, CRL) and the round goes on with the next row; a link failure
(:class:`~signer.protocol.link.LinkError`) or a lost database ends the round,
which the next one retries. The jobs talk to the signer through any object
with ``request(message) -> Deferred[Response]`` (:class:`IRequester`).

Crash safety (MyISAM has no transactions)
-----------------------------------------

The client may die between any two steps. The steps of a signing are::

    A  read row (pending)             E  hold the mails (outbox .hold files)
    B  journal "table id in flight"   F  UPDATE row (crt_name, serial, expire)
    C  request -> answer              G  clear journal
    D  write certificate file         H  release the mails (.hold -> .eml), send,
       (temp + fsync + rename)           remove each file after its attempt

and what a restart finds after a crash between them:

- before B: nothing happened; the row is still pending and is sent again.
- B..C (request sent, no answer stored): the signer may have issued a
  certificate we never received. The protocol has no way to fetch it again,
  so the restart finds the journal entry and counts a **warning** on the row
  before it is retried: a request that keeps killing the client stops after
  ``warning_threshold`` attempts instead of looping forever. This is the one
  window where the signer can be asked twice for the same row; it is as
  narrow as the time between the signer's last byte and our rename.
- C..D: the answer is lost with the process: as above.
- A link failure (timeout, reset) instead of an answer is no crash: the
  journal entry is cleared and the row is retried in the next round without
  a warning (the signer being away must not use up the rows' attempts),
  except when the signer ACKed the request and then never answered
  (:class:`~signer.protocol.link.NoResponse`): that is how a request that
  crashes the legacy server looks, so it counts a warning. A conversation
  abandoned on stop (after the stop grace) keeps its entry and counts as a
  crash.
- With our server the request asked again after a crash gets the
  certificate already issued (its replay window), so nothing is issued twice.
- D..F (file written, row still pending): the restart sees a certificate
  file for a pending row whose public key matches the row's request and
  **completes the row from the file** (serial and notAfter read from it)
  without asking the signer. A file that does not match the request (left
  over from elsewhere) is ignored and will be replaced.
- F..G: the row is complete; the stale journal entry names a row that is no
  longer pending and is dropped.
- Mails (:mod:`signer.client.outbox`): they are rendered and written as
  ``.hold`` files *before* F and renamed to ``.eml`` after it; a restart
  sends ``.hold`` files whose row is complete and drops the others (their
  row is completed again, which renders them again), and sends every
  ``.eml``. So a crash anywhere loses no mail and doubles none, except one
  the SMTP server took just before the crash. Without a ``state_dir`` mails
  are sent after F, at most once (and there is no journal either).

Revocations: send (with the SHA-1 of the current CRL) -> install the verified
new CRL -> hold the mails -> ``revoked = NOW()`` -> release the mails. Before asking, the client checks
whether its current, verified CRL already lists the certificate's serial (a
crash between installing the CRL and the UPDATE): then it only completes the
row. Re-sending a revocation is harmless anyway (the signer treats a repeat
as no error), and the UPDATE is guarded by ``revoked = '1970-01-01 10:00:01'``.

CRL files are only ever replaced atomically by a verified CRL, so a crash
leaves either the old or the new file.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from twisted.internet.defer import CancelledError, Deferred, DeferredList, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from signer.client.certs import (
    BadCertificate,
    CertificateFacts,
    issued_by,
    load_certificate,
    matches_request,
    openpgp_certification_expiry,
    request_public_key_der,
)
from signer.client.config import ClientConfig, RootConfig
from signer.client.crlinstall import CrlInstaller, CrlInstallError, CrlState, load_ca_certificate
from signer.client.files import FileLayout, read_request, write_atomic
from signer.client.mailer import BadAddress, Mail, MailRenderer
from signer.client.outbox import Outbox
from signer.client.webdb import (
    CERT_TABLES,
    ORG_TABLES,
    SERVER_TABLES,
    CertRow,
    GpgRow,
    Recipient,
    WebDB,
)
from signer.protocol import codec
from signer.protocol.link import LinkError, NoResponse

#: ``md`` column -> wire digest id (empty = the CA's default).
DIGEST_IDS: dict[str, int] = {
    "": 0,
    "md5": 1,
    "sha1": 2,
    "rmd160": 3,
    "ripemd160": 3,
    "sha256": 8,
    "sha384": 9,
    "sha512": 10,
}
#: Characters refused in subject and SAN (the server's rules).
FORBIDDEN_CHARACTERS = "\0\r\n\t#\"'\\"
_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})")
_SAN_KEY = "subjectaltname="


class IRequester(Protocol):
    """What the jobs need of the link: one request, one Deferred response."""

    def request(self, message: codec.Request) -> Deferred[codec.Response]: ...


class IMailSender(Protocol):
    """Sends a rendered mail; the Deferred fires when the server took it."""

    def send(self, mail: Mail) -> Deferred[Any]: ...


class RowProblem(Exception):
    """A row that cannot be sent (bad data); counted as a warning."""


@dataclass
class RoundReport:
    """What one round did (for logs, health and tests)."""

    number: int
    sent: int = 0
    signed: list[tuple[str, int]] = field(default_factory=list)
    recovered: list[tuple[str, int]] = field(default_factory=list)
    warned: list[tuple[str, int]] = field(default_factory=list)
    revoked: list[tuple[str, int]] = field(default_factory=list)
    crl_refreshed: list[int] = field(default_factory=list)
    keepalive: bool = False
    aborted: str = ""


# -- pure helpers ----------------------------------------------------------


def split_subject(subject: str) -> tuple[str, str]:
    """Move every ``subjectAltName=`` component of a slash-form DN into the SAN list.

    ``/CN=a/subjectAltName=DNS:a/subjectAltName=DNS:b`` -> (``/CN=a``, ``DNS:a,DNS:b``).
    """
    kept: list[str] = []
    sans: list[str] = []
    for part in subject.split("/"):
        if not part:
            continue
        if part.lower().startswith(_SAN_KEY):
            value = part[len(_SAN_KEY) :]
            if value:
                sans.append(value)
        else:
            kept.append(part)
    return "".join("/" + part for part in kept), ",".join(sans)


def unescape(text: str) -> str:
    """Decode ``\\xHH`` escapes the way the server does before its checks."""
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), text)


def subject_problem(subject: str, san: str) -> str | None:
    """Why the server would refuse this subject/SAN, or None."""
    for name, value in (("subject", subject), ("subjectAltName", san)):
        decoded = unescape(value)
        for character in FORBIDDEN_CHARACTERS:
            if character in decoded:
                return f"{name} contains the forbidden character {character!r}"
    if " " in unescape(san):
        return "subjectAltName contains a space"
    return None


def select_profile(row: CertRow) -> int:
    """The wire profile id for a row (client.md, "Profile selection")."""
    if row.type in (8, 9):
        return row.type
    if row.table in ORG_TABLES:
        if row.codesign:
            return 2
        return 6 if row.table in SERVER_TABLES else 1
    if row.codesign:
        return 2
    return 5 if row.table in SERVER_TABLES else 0


def wire_root(rootcert: int) -> int:
    """``rootcert`` is 1-based in the WebDB; the wire index is ``rootcert - 1`` (at least 0)."""
    return max(rootcert - 1, 0)


def _today(clock: IReactorTime) -> datetime.date:
    return datetime.datetime.fromtimestamp(clock.seconds(), datetime.timezone.utc).date()


class InFlightJournal:
    """One line naming the row whose request is on the line (``table id``).

    ``path`` None disables it (no state directory configured).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def begin(self, table: str, row_id: int) -> None:
        if self.path is not None:
            write_atomic(self.path, f"{table} {row_id}\n".encode("ascii"), mode=0o600)

    def end(self) -> None:
        if self.path is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def read(self) -> tuple[str, int] | None:
        if self.path is None:
            return None
        try:
            text = self.path.read_text("ascii").split()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        if len(text) != 2 or not text[1].isdigit() or text[0] not in (*CERT_TABLES, "gpg"):
            return None
        return text[0], int(text[1])


# -- the jobs ----------------------------------------------------------------


class Jobs:
    """The polling round against one WebDB, one link, one mailer."""

    log = Logger()

    def __init__(
        self,
        config: ClientConfig,
        webdb: WebDB,
        requester: IRequester,
        clock: IReactorTime,
        crl: CrlInstaller,
        renderer: MailRenderer | None = None,
        sender: IMailSender | None = None,
        run_blocking: Callable[..., Deferred[Any]] | None = None,
    ) -> None:
        self.config = config
        self.webdb = webdb
        self.requester = requester
        self.clock = clock
        self.crl = crl
        self.renderer = renderer
        self.sender = sender
        self.run_blocking = run_blocking or deferToThread
        self.layout = FileLayout(
            config.files.csr_dir, config.files.crt_dir, config.files.crt_name_prefix
        )
        state_dir = config.files.state_dir
        self.journal = InFlightJournal(state_dir / "in-flight" if state_dir else None)
        self.outbox = Outbox(state_dir / "outbox") if state_dir else None
        self.rounds = 0
        self.stopping = False
        self.last_round: RoundReport | None = None
        self.crl_age: dict[int, float | None] = {}
        self._mails: set[Deferred[Any]] = set()
        self._recovered_journal = False
        self._reported: set[tuple[Any, ...]] = set()

    # -- round -------------------------------------------------------------

    def stop(self) -> None:
        """Start no new conversation; the one in flight completes."""
        self.stopping = True

    @inlineCallbacks
    def run_round(self) -> Any:
        """One polling round; never fails (errors are logged and end the round)."""
        report = RoundReport(number=self.rounds)
        started = self.clock.seconds()
        try:
            if not self._recovered_journal:
                yield self._recover_journal()
                yield self._recover_outbox()
                self._recovered_journal = True
            yield self._openpgp(report)
            for table in CERT_TABLES:
                yield self._certificates(table, report)
            for table in CERT_TABLES:
                yield self._revocations(table, report)
            if self.rounds % self.config.polling.crl_check_every == 0:
                yield self._crl_check(report)
            if report.sent == 0 and not self.stopping:
                yield self._keepalive(report)
        except LinkError as error:
            report.aborted = f"link: {error}"
            self.log.warn("Polling round {number} ended early: {error}", number=report.number, error=str(error))
        except _Stopping:
            report.aborted = "stopping"
        except _DATABASE_ERRORS as error:
            report.aborted = f"database: {error}"
            self.log.error("Polling round {number} ended early, WebDB error: {error}",
                           number=report.number, error=str(error) or type(error).__name__)
        except OSError as error:
            report.aborted = f"files: {error}"
            self.log.error("Polling round {number} ended early, file error: {error}",
                           number=report.number, error=str(error))
        except CancelledError:
            report.aborted = "abandoned while stopping"
            self.log.warn("Polling round {number} abandoned: the service is stopping", number=report.number)
        except Exception as error:
            report.aborted = f"{type(error).__name__}: {error}"
            self.log.failure("Polling round {number} failed", number=report.number)
        self.rounds += 1
        self.last_round = report
        if report.sent and not report.keepalive:
            self.log.info(
                "Round {number}: {sent} requests, signed {signed}, revoked {revoked}, "
                "warnings {warned}, in {seconds:.2f} s",
                number=report.number,
                sent=report.sent,
                signed=len(report.signed) + len(report.recovered),
                revoked=len(report.revoked),
                warned=len(report.warned),
                seconds=self.clock.seconds() - started,
            )
        return report

    def _check_stopping(self) -> None:
        if self.stopping:
            raise _Stopping()

    @inlineCallbacks
    def _send(self, message: codec.Request, report: RoundReport) -> Any:
        self._check_stopping()
        report.sent += 1
        started = self.clock.seconds()
        response = yield self.requester.request(message)
        emit = self.log.debug if isinstance(message, codec.NulRequest) else self.log.info
        emit(
            "{kind} answered with {length} bytes in {seconds:.2f} s",
            kind=message.kind,
            length=len(response.payload),
            seconds=self.clock.seconds() - started,
        )
        return response

    def _once(self, key: tuple[Any, ...]) -> bool:
        """True the first time ``key`` is seen (to log a persisting problem once)."""
        if key in self._reported:
            return False
        self._reported.add(key)
        return True

    @inlineCallbacks
    def _warn(self, table: str, row_id: int, reason: str, report: RoundReport) -> Any:
        self.log.warn(
            "{table} {id}: {reason}; warning count raised", table=table, id=row_id, reason=reason
        )
        yield self.webdb.add_warning(table, row_id)
        report.warned.append((table, row_id))

    @inlineCallbacks
    def _link_failed(self, table: str, row_id: int, error: Exception, report: RoundReport) -> Any:
        """A signing request got no answer; the caller re-raises ``error``.

        A cancelled conversation (a stop that could not wait) keeps its journal
        entry: it may have been signed. Any other failure clears it. When the
        signer took the request but never answered (:class:`NoResponse`), the
        request may be what crashes it (the legacy server exits on bad input):
        it is counted against the row, so a poison request cannot block the
        queue forever.
        """
        if isinstance(error, CancelledError):
            return
        self.journal.end()
        if isinstance(error, NoResponse):
            yield self._warn(
                table, row_id, f"the signer accepted the request but never answered ({error})", report
            )

    @inlineCallbacks
    def _recover_journal(self) -> Any:
        entry = self.journal.read()
        if entry is None:
            return
        table, row_id = entry
        if table == "gpg":
            row = yield self.webdb.openpgp_row(row_id)
            pending = row is not None and not row.crt
        else:
            row = yield self.webdb.certificate_row(table, row_id)
            pending = row is not None and not row.crt_name
        if pending and not self.layout.crt_path(table, row_id).exists():
            self.log.warn(
                "{table} {id}: its request was on the line when the client stopped; "
                "the answer is lost, counting a warning before it is retried",
                table=table,
                id=row_id,
            )
            yield self.webdb.add_warning(table, row_id)
        self.journal.end()

    # -- OpenPGP -----------------------------------------------------------

    @inlineCallbacks
    def _openpgp(self, report: RoundReport) -> Any:
        rows = yield self.webdb.pending_openpgp(self.config.polling.warning_threshold)
        for row in rows:
            self._check_stopping()
            yield self._sign_openpgp(row, report)

    def _ca_key(self) -> str:
        return self.config.openpgp.ca_key_id

    @inlineCallbacks
    def _sign_openpgp(self, row: GpgRow, report: RoundReport) -> Any:
        crt_path = self.layout.crt_path("gpg", row.id)
        existing = yield self.run_blocking(_read_if_exists, crt_path)
        if existing is not None:
            try:
                expire = openpgp_certification_expiry(existing, self._ca_key())
            except BadCertificate as exc:
                self.log.warn(
                    "gpg {id}: ignoring unusable key file {path} ({error})",
                    id=row.id, path=str(crt_path), error=str(exc),
                )
            else:
                self.log.info("gpg {id}: completing from the existing key file", id=row.id)
                yield self._complete_openpgp(row, expire, report, recovered=True)
                return
        try:
            key = yield self.run_blocking(read_request, self.layout.csr_path("gpg", row.id))
        except (OSError, ValueError) as exc:
            yield self._warn("gpg", row.id, f"cannot read the key request: {exc}", report)
            return
        if not key.strip():
            yield self._warn("gpg", row.id, "the key request file is empty", report)
            return
        request = codec.SignOpenPGPRequest(key=key, days=self.config.validity.openpgp)
        yield self.run_blocking(self.journal.begin, "gpg", row.id)
        try:
            response = yield self._send(request, report)
        except Exception as error:
            yield self._link_failed("gpg", row.id, error, report)
            raise
        if not response.payload:
            self.journal.end()
            yield self._warn("gpg", row.id, "the signer did not sign the key", report)
            return
        try:
            expire = openpgp_certification_expiry(response.payload, self._ca_key())
        except BadCertificate as exc:
            self.journal.end()
            yield self._warn("gpg", row.id, f"unusable answer: {exc}", report)
            return
        yield self.run_blocking(write_atomic, crt_path, response.payload)
        yield self._complete_openpgp(row, expire, report)

    @inlineCallbacks
    def _complete_openpgp(self, row: GpgRow, expire: str, report: RoundReport, recovered: bool = False) -> Any:
        recipients = yield self.webdb.users([row.memid])
        held = yield self._hold(
            "gpg", row.id, "issued", recipients,
            lambda r: self.renderer.openpgp_signed(r.email, r.fname, r.language, row.email, row.id),  # type: ignore[union-attr]
        )
        yield self.webdb.mark_openpgp_signed(row.id, self.layout.crt_name("gpg", row.id), expire)
        self.journal.end()
        (report.recovered if recovered else report.signed).append(("gpg", row.id))
        self.log.info("gpg {id}: key signed, certification expires {expire}", id=row.id, expire=expire)
        yield self._release("gpg", row.id, held)

    # -- X.509 -------------------------------------------------------------

    @inlineCallbacks
    def _certificates(self, table: str, report: RoundReport) -> Any:
        rows = yield self.webdb.pending_certificates(table, self.config.polling.warning_threshold)
        for row in rows:
            self._check_stopping()
            yield self._sign_certificate(row, report)

    @inlineCallbacks
    def _days(self, row: CertRow) -> Any:
        policy = self.config.validity
        if row.table in ORG_TABLES:
            return policy.org_server if row.table in SERVER_TABLES else policy.org_client
        memid: int | None = row.owner
        if row.table == "domaincerts":
            memid = yield self.webdb.domain_owner(row.owner)
        points = 0 if memid is None else (yield self.webdb.assurance_points(memid))
        return policy.personal_assured if points >= policy.assured_points else policy.personal_unassured

    @inlineCallbacks
    def _build_request(self, row: CertRow, csr: bytes) -> Any:
        if not csr.strip():
            raise RowProblem("the request file is empty")
        try:
            request_public_key_der(csr)
        except BadCertificate as exc:
            raise RowProblem(f"the request file holds no valid request ({exc})") from None
        subject, san = split_subject(row.subject)
        problem = subject_problem(subject, san)
        if problem:
            raise RowProblem(problem)
        md = row.md.strip().lower()
        if md not in DIGEST_IDS:
            raise RowProblem(f"unknown message digest {row.md!r}")
        days = yield self._days(row)
        return codec.SignX509Request(
            csr=csr,
            subject=subject.encode("utf-8"),
            san=san.encode("utf-8"),
            root=wire_root(row.rootcert),
            profile=select_profile(row),
            digest=DIGEST_IDS[md],
            days=days,
            keytype=1 if row.keytype.upper() == "NS" else 0,
        )

    @inlineCallbacks
    def _sign_certificate(self, row: CertRow, report: RoundReport) -> Any:
        table = row.table
        csr_path = self.layout.csr_path(table, row.id)
        crt_path = self.layout.crt_path(table, row.id)
        try:
            csr = yield self.run_blocking(read_request, csr_path)
        except (OSError, ValueError) as exc:
            csr = None
            csr_error = str(exc)
        existing = yield self.run_blocking(_read_if_exists, crt_path)
        if existing is not None:
            facts = _facts_or_none(existing)
            if facts is not None and csr is not None and matches_request(facts, csr):
                self.log.info(
                    "{table} {id}: completing from the existing certificate file (serial {serial})",
                    table=table, id=row.id, serial=facts.serial,
                )
                yield self._complete_certificate(row, facts, report, recovered=True)
                return
            self.log.warn(
                "{table} {id}: ignoring certificate file {path}: not issued for this request",
                table=table, id=row.id, path=str(crt_path),
            )
        if csr is None:
            yield self._warn(table, row.id, f"cannot read the request file: {csr_error}", report)
            return
        try:
            request = yield self._build_request(row, csr)
        except RowProblem as problem:
            yield self._warn(table, row.id, str(problem), report)
            return
        yield self.run_blocking(self.journal.begin, table, row.id)
        try:
            response = yield self._send(request, report)
        except Exception as error:
            yield self._link_failed(table, row.id, error, report)
            raise
        if not response.payload:
            self.journal.end()
            yield self._warn(table, row.id, "the signer did not sign", report)
            return
        try:
            facts = load_certificate(response.payload)
        except BadCertificate as exc:
            self.journal.end()
            yield self._warn(table, row.id, f"unusable answer: {exc}", report)
            return
        if not matches_request(facts, csr):
            self.journal.end()
            yield self._warn(table, row.id, "the answer is a certificate for another key", report)
            return
        wrong_issuer = yield self.run_blocking(self._issuer_problem, row.rootcert, facts)
        if wrong_issuer:
            self.journal.end()
            yield self._warn(table, row.id, f"unusable answer: {wrong_issuer}", report)
            return
        yield self.run_blocking(write_atomic, crt_path, facts.pem)
        yield self._complete_certificate(row, facts, report)

    def _issuer_problem(self, rootcert: int, facts: CertificateFacts) -> str | None:
        """Why the certificate was not signed by the row's root, or None (blocking).

        A root without a configured CA certificate cannot be checked: that is
        logged once and the certificate taken.
        """
        root = self.config.root(rootcert)
        if root is None:
            if self._once(("unchecked root", rootcert)):
                self.log.warn(
                    "rootcert {rootcert} has no [[roots]] entry: its certificates are stored "
                    "without checking who signed them",
                    rootcert=rootcert,
                )
            return None
        try:
            ca = load_ca_certificate(root.ca_certificate)
        except CrlInstallError as error:
            return str(error)
        if not issued_by(facts, ca):
            return f"the certificate is not signed by the CA certificate of rootcert {rootcert}"
        return None

    @inlineCallbacks
    def _complete_certificate(
        self, row: CertRow, facts: CertificateFacts, report: RoundReport, recovered: bool = False
    ) -> Any:
        memids = yield self.webdb.owners(row)
        recipients = yield self.webdb.users(memids)
        if not recipients:
            self.log.warn("{table} {id}: no member to mail", table=row.table, id=row.id)
        name = row.cn or _subject_name(row.subject)
        server = row.table in SERVER_TABLES
        held = yield self._hold(
            row.table, row.id, "issued", recipients,
            lambda r: self.renderer.certificate_issued(  # type: ignore[union-attr]
                r.email, r.fname, r.language, name, row.id, server
            ),
        )
        yield self.webdb.mark_signed(
            row.table, row.id, self.layout.crt_name(row.table, row.id), facts.serial, facts.expire
        )
        self.journal.end()
        (report.recovered if recovered else report.signed).append((row.table, row.id))
        self.log.info(
            "{table} {id}: signed, serial {serial}, expires {expire}",
            table=row.table, id=row.id, serial=facts.serial, expire=facts.expire,
        )
        yield self._release(row.table, row.id, held)

    # -- revocations -------------------------------------------------------

    @inlineCallbacks
    def _revocations(self, table: str, report: RoundReport) -> Any:
        rows = yield self.webdb.pending_revocations(table)
        for row in rows:
            self._check_stopping()
            yield self._revoke(row, report)

    @inlineCallbacks
    def _revoke(self, row: CertRow, report: RoundReport) -> Any:
        root = self.config.root(row.rootcert)
        if root is None:
            if self._once((row.table, row.id, "no root")):
                self.log.error(
                    "{table} {id}: no CRL configured for rootcert {rootcert}; cannot revoke",
                    table=row.table, id=row.id, rootcert=row.rootcert,
                )
            return
        crt_path = self.layout.crt_path(row.table, row.id)
        data = yield self.run_blocking(_read_if_exists, crt_path)
        facts = None if data is None else _facts_or_none(data)
        if facts is None:
            if self._once((row.table, row.id, "no certificate")):
                self.log.error(
                    "{table} {id}: certificate file {path} missing or unreadable; cannot revoke "
                    "(logged once)",
                    table=row.table, id=row.id, path=str(crt_path),
                )
            return
        serial = facts.certificate.serial_number
        current = yield self.crl.current(root)
        if current.lists(serial) and (yield self._verified(root, current)):
            self.log.info(
                "{table} {id}: the current CRL already lists serial {serial}; completing the row",
                table=row.table, id=row.id, serial=facts.serial,
            )
            yield self._complete_revocation(row, facts, report)
            return
        request = codec.RevokeRequest(
            crl_sha1=current.sha1.encode("ascii"), certificate=facts.pem, root=wire_root(row.rootcert)
        )
        response = yield self._send(request, report)
        try:
            new = yield self.crl.install(root, response.payload, current)
        except (CrlInstallError, OSError) as exc:
            self.log.error(
                "{table} {id}: revocation not completed, CRL of rootcert {rootcert} kept: {error}",
                table=row.table, id=row.id, rootcert=root.rootcert, error=str(exc),
            )
            return
        self.crl_age[root.rootcert] = self.clock.seconds()
        if not new.lists(serial):
            self.log.error(
                "{table} {id}: the new CRL does not list serial {serial}; not marked revoked",
                table=row.table, id=row.id, serial=facts.serial,
            )
            return
        yield self._complete_revocation(row, facts, report)

    def _verified(self, root: RootConfig, state: CrlState) -> Deferred[bool]:
        from signer.client.crlinstall import verify_crl

        def check() -> bool:
            try:
                verify_crl(state.data or b"", load_ca_certificate(root.ca_certificate))
            except CrlInstallError:
                return False
            return True

        return self.run_blocking(check)

    @inlineCallbacks
    def _complete_revocation(self, row: CertRow, facts: CertificateFacts, report: RoundReport) -> Any:
        memids = yield self.webdb.owners(row)
        recipients = yield self.webdb.users(memids)
        name = row.cn or _subject_name(row.subject)
        held = yield self._hold(
            row.table, row.id, "revoked", recipients,
            lambda r: self.renderer.certificate_revoked(  # type: ignore[union-attr]
                r.email, r.fname, r.language, name, facts.serial
            ),
        )
        yield self.webdb.mark_revoked(row.table, row.id)
        report.revoked.append((row.table, row.id))
        self.log.info(
            "{table} {id}: serial {serial} revoked", table=row.table, id=row.id, serial=facts.serial
        )
        yield self._release(row.table, row.id, held)

    # -- CRL freshness and keep-alive ------------------------------------

    @inlineCallbacks
    def _crl_check(self, report: RoundReport) -> Any:
        today = _today(self.clock)
        for root in self.config.roots:
            self._check_stopping()
            current = yield self.crl.current(root)
            last = current.last_update()
            if last is not None and last.date() == today:
                continue
            self.log.info(
                "CRL of rootcert {rootcert} is from {last}; asking for a fresh one",
                rootcert=root.rootcert, last=str(last) if last else "nowhere",
            )
            request = codec.RevokeRequest(crl_sha1=current.sha1.encode("ascii"), root=wire_root(root.rootcert))
            response = yield self._send(request, report)
            try:
                yield self.crl.install(root, response.payload, current)
            except (CrlInstallError, OSError) as exc:
                self.log.error(
                    "CRL of rootcert {rootcert} not refreshed, old file kept: {error}",
                    rootcert=root.rootcert, error=str(exc),
                )
                continue
            self.crl_age[root.rootcert] = self.clock.seconds()
            report.crl_refreshed.append(root.rootcert)

    @inlineCallbacks
    def _keepalive(self, report: RoundReport) -> Any:
        idle = getattr(self.requester, "is_idle", None)
        if idle is not None and not idle():
            return
        now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.timezone.utc)
        yield self._send(codec.NulRequest(timestamp=codec.format_nul_timestamp(now)), report)
        report.keepalive = True

    # -- mails -------------------------------------------------------------

    def _mailing(self) -> bool:
        return self.renderer is not None and self.sender is not None and self.config.mail.enabled

    @inlineCallbacks
    def _hold(
        self, table: str, row_id: int, event: str, recipients: list[Recipient],
        render: Callable[[Recipient], Mail],
    ) -> Any:
        """Render the mails of an event and, with an outbox, write them as ``.hold`` files.

        Runs before the row's UPDATE. Returns what :meth:`_release` sends.
        """
        if not self._mailing():
            return []
        mails = []
        for user in recipients:
            try:
                mails.append(render(user))
            except (BadAddress, KeyError, ValueError) as exc:
                self.log.warn("{table} {id}: no mail to member {memid}: {error}",
                              table=table, id=row_id, memid=user.memid, error=str(exc))
        if self.outbox is None or not mails:
            return mails
        paths = yield self.run_blocking(self.outbox.hold, table, row_id, event, mails)
        return paths

    @inlineCallbacks
    def _release(self, table: str, row_id: int, held: list[Any]) -> Any:
        """After the UPDATE: make held mails ready and send them in the background."""
        if not held:
            return
        if self.outbox is None:
            for mail in held:
                self._send_mail(table, row_id, mail, None)
            return
        ready = yield self.run_blocking(self.outbox.release, held)
        for path in ready:
            mail = yield self.run_blocking(Outbox.load, path)
            if mail is not None:
                self._send_mail(table, row_id, mail, path)

    @inlineCallbacks
    def _recover_outbox(self) -> Any:
        """After a restart: promote held mails whose row is complete, send ready ones."""
        if self.outbox is None or not self._mailing():
            return
        held = yield self.run_blocking(self.outbox.held)
        for item in held:
            if item.event == "revoked":
                done = yield self.webdb.revocation_done(item.table, item.row_id)
            elif item.table == "gpg":
                row = yield self.webdb.openpgp_row(item.row_id)
                done = row is not None and bool(row.crt)
            else:
                row = yield self.webdb.certificate_row(item.table, item.row_id)
                done = row is not None and bool(row.crt_name)
            if done:
                yield self.run_blocking(self.outbox.release, [item.path])
            else:
                yield self.run_blocking(Outbox.discard, item.path)
        ready = yield self.run_blocking(self.outbox.ready)
        for path in ready:
            mail = yield self.run_blocking(Outbox.load, path)
            if mail is not None:
                self.log.info("Sending mail {name} left from before the restart", name=path.name)
                self._send_mail("outbox", 0, mail, path)

    def _send_mail(self, table: str, row_id: int, mail: Mail, path: Path | None) -> None:
        """Send one mail in the background; failures are only logged; its file goes after the attempt."""
        assert self.sender is not None
        d = self.sender.send(mail)
        self._mails.add(d)

        def sent(_: Any) -> None:
            self.log.info("{table} {id}: mail sent to {to}", table=table, id=row_id, to=mail.recipient)

        def failed(failure: Any) -> None:
            self.log.warn(
                "{table} {id}: mail to {to} failed (the signing stands): {error}",
                table=table, id=row_id, to=mail.recipient, error=failure.getErrorMessage(),
            )

        def done(_: Any) -> None:
            self._mails.discard(d)
            if path is not None:
                Outbox.discard(path)

        d.addCallbacks(sent, failed)
        d.addBoth(done)

    def when_mails_sent(self) -> Deferred[Any]:
        """Fires when every mail started so far was sent or failed."""
        if not self._mails:
            return succeed(None)
        return DeferredList(list(self._mails), consumeErrors=True).addCallback(lambda _: None)


def _database_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    import pymysql
    from twisted.enterprise.adbapi import ConnectionLost

    return (ConnectionLost, sqlite3.Error, pymysql.err.Error)


_DATABASE_ERRORS = _database_errors()


class _Stopping(Exception):
    """The service is stopping: start no new conversation."""


def _read_if_exists(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _facts_or_none(data: bytes) -> CertificateFacts | None:
    try:
        return load_certificate(data)
    except BadCertificate:
        return None


def _subject_name(subject: str) -> str:
    """CN (else emailAddress) of a slash-form subject, for the mail text."""
    fields = dict(
        part.split("=", 1) for part in subject.split("/") if "=" in part
    )
    return fields.get("CN") or fields.get("emailAddress") or subject
