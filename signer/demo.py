"""The one-command demo: a real signer and a real client sign a few requests.

``python -m signer.demo [--out demo/out] [--keep-running]`` (``make demo``):

1. starts clean (removes and recreates the output folder) and checks that the
   ``gpg`` and ``xdelta`` binaries are installed;
2. creates a throw-away signer (two CA roots, an OpenPGP CA key; see
   :mod:`signer.server.testsigner`), an embedded sqlite WebDB and the legacy
   request files, seeded with pending work: a personal client certificate (for
   a German-speaking member), a personal server certificate with SANs, an
   organisation server certificate, an OpenPGP key, and the revocation of a
   certificate the same signer issued a month ago;
3. runs ``signer linksim`` (a pseudo-terminal pair, no hardware), a real
   ``twistd signer-server`` and a real ``twistd signer-client`` as separate
   processes, and an SMTP sink in this process that writes every mail it
   receives to ``<out>/mail/NNN.eml``;
4. watches the WebDB until every row is done (signed, revoked, or given up
   after ``warning`` reached the threshold), waits for the mails, stops the
   daemons with SIGTERM;
5. checks the results (every certificate verifies against its demo root, the
   CRLs verify and list the revoked serial, the OpenPGP key carries the CA's
   certification) and prints a short summary, also written as
   ``<out>/summary.json``.

The exit status is 0 only when everything was signed, revoked, mailed and
verified. With ``--keep-running`` the daemons stay up afterwards (until
Ctrl-C) so that more rows can be added to the sqlite WebDB by hand.

The sqlite WebDB is made with the schema shipped in
:mod:`signer.client.schema`.
"""

from __future__ import annotations

import argparse
import datetime
import email
import email.policy
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from signer.client.schema import create_sqlite_webdb

__all__ = [
    "DemoError",
    "DemoLayout",
    "Job",
    "main",
    "prepare",
    "run_demo",
]

ZERO = "0000-00-00 00:00:00"
REVOKE_REQUESTED = "1970-01-01 10:00:01"
#: Rows with warning >= this are given up by the client (its default).
WARNING_THRESHOLD = 3
#: Seconds between the client's polling rounds in the demo.
POLL_INTERVAL = 0.2
#: Longest the daemons may take for the whole job (the demo should need ~10 s).
WORK_TIMEOUT = 45.0
#: Longest a daemon may take to start (server "serving on", linksim "READY").
START_TIMEOUT = 30.0
#: Longest a daemon may take to stop after SIGTERM.
STOP_TIMEOUT = 20.0

APT_HINT = "sudo apt-get install gnupg xdelta"
#: File that marks a folder as the demo's own (only such a folder is removed).
MARKER = ".signer-demo"


class DemoError(Exception):
    """The demo cannot run (missing tool, daemon that does not start, ...)."""


# -- the embedded WebDB ---------------------------------------------------------

#: The owner column of each certificate table.
OWNER_COLUMNS = {"emailcerts": "memid", "domaincerts": "domid", "orgemailcerts": "orgid",
                 "orgdomaincerts": "orgid"}

#: File-name prefix per table (client.md, "File layout").
PREFIXES = {
    "emailcerts": "client",
    "domaincerts": "server",
    "orgemailcerts": "orgclient",
    "orgdomaincerts": "orgserver",
    "gpg": "gpg",
}


# -- what the demo does -----------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A WebDB user."""

    id: int
    email: str
    fname: str
    lname: str
    language: str
    points: int


@dataclass(frozen=True)
class Job:
    """One piece of pending work in the WebDB and how to recognise it as done.

    ``kind`` is ``"x509"``, ``"openpgp"`` or ``"revoke"``; ``rootcert`` is the
    1-based WebDB root number (0 for OpenPGP).
    """

    kind: str
    table: str
    id: int
    label: str
    recipients: tuple[str, ...]
    rootcert: int = 0

    @property
    def prefix(self) -> str:
        return PREFIXES[self.table]

    def relative(self, suffix: str) -> str:
        """``<prefix>/<id//1000>/<prefix>-<id>.<suffix>`` (the legacy layout)."""
        return f"{self.prefix}/{self.id // 1000}/{self.prefix}-{self.id}.{suffix}"


MEMBERS = (
    Member(1, "anna@example.org", "Anna", "Schmidt", "de_DE", 100),
    Member(2, "bob@example.org", "Bob", "Example", "en_US", 35),
    Member(3, "carol@example.com", "Carol", "Admin", "en_US", 100),
)
DOMAIN_ID, DOMAIN_OWNER = 1, 2
ORG_ID, ORG_ADMIN = 1, 3

JOBS = (
    Job("x509", "emailcerts", 2, "client certificate for Anna Schmidt <anna@example.org>",
        ("anna@example.org",), rootcert=1),
    Job("x509", "domaincerts", 1, "server certificate for www.example.org (SAN www.example.org, example.org)",
        ("bob@example.org",), rootcert=2),
    Job("x509", "orgdomaincerts", 1, "organisation server certificate for shop.example.com (Example Shop Ltd)",
        ("carol@example.com",), rootcert=1),
    Job("openpgp", "gpg", 1, "OpenPGP key of Anna Schmidt <anna@example.org>", ("anna@example.org",)),
    Job("revoke", "emailcerts", 1, "client certificate of Bob Example <bob@example.org>, issued a month ago",
        ("bob@example.org",), rootcert=1),
)

_X509_ROWS = {
    ("emailcerts", 2): dict(owner=1, cn="anna@example.org", md="sha256",
                            subject="/CN=Anna Schmidt/emailAddress=anna@example.org"),
    ("domaincerts", 1): dict(owner=DOMAIN_ID, cn="www.example.org", md="sha512",
                             subject="/CN=www.example.org/subjectAltName=DNS:www.example.org"
                                     "/subjectAltName=DNS:example.org"),
    ("orgdomaincerts", 1): dict(owner=ORG_ID, cn="shop.example.com", md="sha256",
                                subject="/CN=shop.example.com/O=Example Shop Ltd/L=Hamburg/C=DE"
                                        "/subjectAltName=DNS:shop.example.com"),
}
_REVOKED_SUBJECT = "/CN=Bob Example/emailAddress=bob@example.org"


@dataclass(frozen=True)
class DemoLayout:
    """Where everything goes under the output folder."""

    out: Path

    @property
    def ca(self) -> Path:
        return self.out / "ca"

    @property
    def server_config(self) -> Path:
        return self.ca / "signer-server.toml"

    @property
    def webdb(self) -> Path:
        return self.out / "webdb.sqlite"

    @property
    def web(self) -> Path:
        return self.out / "web"

    @property
    def csr_dir(self) -> Path:
        return self.web / "csr"

    @property
    def crt_dir(self) -> Path:
        return self.web / "crt"

    @property
    def www(self) -> Path:
        return self.web / "www"

    def crl(self, rootcert: int) -> Path:
        return self.www / ("revoke.crl" if rootcert == 1 else "class3-revoke.crl")

    def root_certificate(self, rootcert: int) -> Path:
        return self.ca / "roots" / f"root{rootcert - 1}.crt"

    @property
    def link(self) -> Path:
        return self.out / "link"

    @property
    def tty_server(self) -> Path:
        return self.link / "ttyA"

    @property
    def tty_client(self) -> Path:
        return self.link / "ttyB"

    @property
    def client_dir(self) -> Path:
        return self.out / "client"

    @property
    def client_config(self) -> Path:
        return self.client_dir / "signer-client.toml"

    @property
    def state_dir(self) -> Path:
        return self.client_dir / "state"

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def mail(self) -> Path:
        return self.out / "mail"

    @property
    def summary(self) -> Path:
        return self.out / "summary.json"


def missing_tools() -> list[str]:
    """The required binaries that are not on PATH (``gpg``, ``xdelta``)."""
    return [tool for tool in ("gpg", "xdelta") if shutil.which(tool) is None]


def _toml(value: str | Path) -> str:
    return json.dumps(str(value))


def _write_serial_config(path: Path, device: Path) -> None:
    path.write_text(
        "# The demo's pseudo-terminal (signer linksim); see etc/serial.conf.example.\n"
        f"[serial]\ndevice = {_toml(device)}\nbaudrate = 115200\n",
        encoding="utf-8",
    )


def client_config_text(layout: DemoLayout, smtp_port: int, ca_fingerprint: str) -> str:
    """The demo client's TOML (every key is in ``etc/signer-client.toml.example``)."""
    roots = "".join(
        f"\n[[roots]]\nrootcert = {rootcert}\ncrl = {_toml(layout.crl(rootcert))}\n"
        f"ca_certificate = {_toml(layout.root_certificate(rootcert))}\n"
        for rootcert in (1, 2)
    )
    return f"""# signer-client configuration written by the demo (python -m signer.demo).
[database]
driver = "sqlite"
sqlite_path = {_toml(layout.webdb)}

[link]
serial_config = {_toml(layout.link / "client-serial.conf")}
response_timeout = 30.0

[files]
csr_dir = {_toml(layout.csr_dir)}
crt_dir = {_toml(layout.crt_dir)}
crt_name_prefix = "../crt"
state_dir = {_toml(layout.state_dir)}
{roots}
[polling]
interval = {POLL_INTERVAL}
warning_threshold = {WARNING_THRESHOLD}

[mail]
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
sender = "support@cacert.example"
timeout = 10.0

[openpgp]
ca_key_id = {_toml(ca_fingerprint)}
"""


# -- preparation (before any daemon runs) -----------------------------------------


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` made."""

    layout: DemoLayout
    ca_fingerprint: str
    revoked_serial: str


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_csr(common_name: str, email_address: str | None = None) -> bytes:
    """A PEM PKCS#10 request for a fresh RSA-2048 key (the key is thrown away)."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if email_address:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email_address))
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    return request.sign(_rsa_key(), hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def make_openpgp_key(uid: str) -> bytes:
    """An armored throw-away ed25519/cv25519 public key for ``uid``, made with gpg."""
    from signer.server.openpgp import Gpg, parse_listing

    home = Path(tempfile.mkdtemp(prefix="sgdemo", dir="/tmp"))  # short: gpg-agent socket path
    gpg = Gpg(home, timeout=60)
    try:
        gpg.run(["--passphrase", "", "--quick-generate-key", uid, "ed25519", "sign,cert", "2y"])
        keys = parse_listing(gpg.run(["--with-colons", "--list-keys", "--", f"={uid}"]).stdout)
        fingerprint = keys[0].fingerprint
        gpg.run(["--passphrase", "", "--quick-add-key", fingerprint, "cv25519", "encr", "2y"])
        return gpg.run(["--armor", "--export", fingerprint]).stdout
    finally:
        gpg.kill_agent()
        shutil.rmtree(home, ignore_errors=True)


def _issue_earlier_certificate(layout: DemoLayout, csr: bytes) -> x509.Certificate:
    """Sign Bob's old certificate with the demo signer's own CA code, dated a
    month back, and record it in the signer's CA database (as if it had been
    issued over the link back then)."""
    from signer.protocol.codec import SignX509Request
    from signer.server.cadb import CADatabase
    from signer.server.config import load_and_check
    from signer.server.service import CA_DATABASE_NAME
    from signer.server.x509ca import X509Authority

    config, roots = load_and_check(layout.server_config)
    then = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) - datetime.timedelta(days=30)
    authority = X509Authority.from_config(config, roots, lambda: then)
    issued = authority.issue(
        SignX509Request(csr=csr, subject=_REVOKED_SUBJECT.encode(), root=0, profile=0, days=366)
    )
    with CADatabase(config.data_dir / CA_DATABASE_NAME) as database:
        database.record_issued(0, issued.certificate, issued.profile, then)
    return issued.certificate


def _serial_hex(certificate: x509.Certificate) -> str:
    text = f"{certificate.serial_number:X}"
    return text if len(text) % 2 == 0 else "0" + text


def _when(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _insert(connection: sqlite3.Connection, table: str, columns: dict[str, Any]) -> None:
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    connection.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(columns.values()))


def prepare(out: Path) -> Prepared:
    """Start clean in ``out`` and create the CA, the WebDB, request files and configs.

    The client configuration is written later (:func:`run_demo`), once the
    SMTP sink's port is known.
    """
    from signer.server.openpgp import Gpg, create_ca_key
    from signer.server.testsigner import create_test_signer, set_openpgp_key_id

    layout = DemoLayout(out.absolute())
    if layout.out.exists():
        if any(layout.out.iterdir()) and not (layout.out / MARKER).exists():
            raise DemoError(f"{layout.out} is not empty and was not made by the demo; not removing it")
        shutil.rmtree(layout.out)
    layout.out.mkdir(parents=True)
    (layout.out / MARKER).write_text("made by python -m signer.demo; removed by the next run\n")
    for folder in (layout.out, layout.link, layout.www, layout.client_dir, layout.state_dir,
                   layout.logs, layout.mail):
        folder.mkdir(parents=True, exist_ok=True)
    _write_serial_config(layout.link / "server-serial.conf", layout.tty_server)
    _write_serial_config(layout.link / "client-serial.conf", layout.tty_client)

    # the signer: two roots and the OpenPGP CA key
    create_test_signer(layout.ca, layout.link / "server-serial.conf")
    fingerprint = create_ca_key(layout.ca / "gnupg", name="Demo OpenPGP CA", email="gpg@cacert.example")
    Gpg(layout.ca / "gnupg").kill_agent()
    set_openpgp_key_id(layout.server_config, fingerprint)

    # request files in the legacy layout
    def write_request(job_table: str, row_id: int, data: bytes) -> str:
        relative = f"{PREFIXES[job_table]}/{row_id // 1000}/{PREFIXES[job_table]}-{row_id}.csr"
        path = layout.csr_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return "../csr/" + relative

    csr_names = {
        ("emailcerts", 2): write_request("emailcerts", 2, make_csr("Anna Schmidt", "anna@example.org")),
        ("domaincerts", 1): write_request("domaincerts", 1, make_csr("www.example.org")),
        ("orgdomaincerts", 1): write_request("orgdomaincerts", 1, make_csr("shop.example.com")),
        ("gpg", 1): write_request("gpg", 1, make_openpgp_key("Anna Schmidt <anna@example.org>")),
    }
    old_csr = make_csr("Bob Example", "bob@example.org")
    csr_names[("emailcerts", 1)] = write_request("emailcerts", 1, old_csr)

    # Bob's certificate from a month ago, now to be revoked
    earlier = _issue_earlier_certificate(layout, old_csr)
    revoked_job = next(job for job in JOBS if job.kind == "revoke")
    earlier_path = layout.crt_dir / revoked_job.relative("crt")
    earlier_path.parent.mkdir(parents=True, exist_ok=True)
    earlier_path.write_bytes(earlier.public_bytes(serialization.Encoding.PEM))

    # the WebDB
    create_sqlite_webdb(layout.webdb)
    connection = sqlite3.connect(str(layout.webdb))
    try:
        for member in MEMBERS:
            connection.execute(
                "INSERT INTO users (id, email, fname, lname, language) VALUES (?, ?, ?, ?, ?)",
                (member.id, member.email, member.fname, member.lname, member.language),
            )
            connection.execute(
                "INSERT INTO notary (`from`, `to`, points, awarded) VALUES (1, ?, ?, ?)",
                (member.id, member.points, member.points),
            )
        connection.execute("INSERT INTO domains (id, memid, domain) VALUES (?, ?, 'example.org')",
                           (DOMAIN_ID, DOMAIN_OWNER))
        connection.execute("INSERT INTO org (orgid, memid, OU) VALUES (?, ?, 'Example Shop Ltd')",
                           (ORG_ID, ORG_ADMIN))
        now = _when(datetime.datetime.now(datetime.timezone.utc))
        for (table, row_id), row in _X509_ROWS.items():
            job = next(j for j in JOBS if (j.table, j.id) == (table, row_id))
            columns = {
                "id": row_id, OWNER_COLUMNS[table]: row["owner"], "CN": row["cn"], "subject": row["subject"],
                "csr_name": csr_names[(table, row_id)], "created": now, "md": row["md"],
                "rootcert": job.rootcert,
            }
            if table in ("emailcerts", "orgemailcerts"):
                columns.update(keytype="", codesign=0)  # PKCS#10 ('NS' would mean SPKAC)
            _insert(connection, table, columns)
        issued_at = _when(earlier.not_valid_before_utc)
        _insert(connection, "emailcerts", {
            "id": revoked_job.id, "memid": 2, "CN": "bob@example.org", "subject": _REVOKED_SUBJECT,
            "keytype": "", "codesign": 0, "csr_name": csr_names[("emailcerts", 1)],
            "crt_name": "../crt/" + revoked_job.relative("crt"), "created": issued_at, "modified": issued_at,
            "revoked": REVOKE_REQUESTED, "expire": _when(earlier.not_valid_after_utc),
            "serial": _serial_hex(earlier), "md": "sha256", "rootcert": revoked_job.rootcert,
        })
        connection.execute(
            "INSERT INTO gpg (id, memid, email, csr) VALUES (1, 1, 'anna@example.org', ?)",
            (csr_names[("gpg", 1)],),
        )
        connection.commit()
    finally:
        connection.close()
    return Prepared(layout, fingerprint, _serial_hex(earlier))


# -- progress in the WebDB --------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    """Where one job stands: ``state`` is ``pending``, ``done`` or ``failed``."""

    job: Job
    state: str
    warning: int
    serial: str = ""
    crt_name: str = ""
    expire: str = ""


def read_states(webdb: Path, jobs: Sequence[Job] = JOBS) -> list[JobState]:
    """Read every job's row (read-only connection) and classify it."""
    connection = sqlite3.connect(f"file:{webdb}?mode=ro", uri=True, timeout=5)
    try:
        states = []
        for job in jobs:
            if job.kind == "openpgp":
                crt, warning, expire = connection.execute(
                    "SELECT crt, warning, expire FROM gpg WHERE id = ?", (job.id,)
                ).fetchone()
                state = "done" if crt else ("failed" if warning >= WARNING_THRESHOLD else "pending")
                states.append(JobState(job, state, warning, crt_name=crt, expire=expire))
                continue
            crt_name, warning, serial, revoked, expire = connection.execute(
                f"SELECT crt_name, warning, serial, revoked, expire FROM {job.table} WHERE id = ?",
                (job.id,),
            ).fetchone()
            if job.kind == "x509":
                state = "done" if crt_name else ("failed" if warning >= WARNING_THRESHOLD else "pending")
            else:
                state = "pending" if revoked == REVOKE_REQUESTED else "done"
            states.append(JobState(job, state, warning, serial, crt_name, expire))
        return states
    finally:
        connection.close()


# -- the SMTP sink ----------------------------------------------------------------


@dataclass(frozen=True)
class SavedMail:
    """One received mail, as written to disk."""

    path: Path
    sender: str
    recipient: str
    subject: str
    language: str


class MailSink:
    """A real SMTP server on 127.0.0.1 (free port) that saves each mail as ``NNN.eml``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.saved: list[SavedMail] = []
        self.port = 0
        self._listening: Any = None
        self._count = 0

    def start(self, reactor: Any) -> int:
        from twisted.mail import smtp

        sink = self

        class Factory(smtp.SMTPFactory):
            protocol = smtp.ESMTP

            def buildProtocol(self, addr: Any) -> Any:
                protocol = super().buildProtocol(addr)
                protocol.delivery = _delivery(sink)
                protocol.host = b"demo-sink.test"
                return protocol

        self._listening = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.port = self._listening.getHost().port
        return self.port

    def stop(self) -> Any:
        from twisted.internet.defer import succeed

        listening, self._listening = self._listening, None
        return listening.stopListening() if listening else succeed(None)

    def next_path(self) -> Path:
        self._count += 1
        return self.folder / f"{self._count:03d}.eml"

    @staticmethod
    def save(path: Path, sender: str, recipient: str, raw: bytes) -> SavedMail:
        """Write ``raw`` with envelope headers to ``path`` (in a thread)."""
        envelope = f"X-Envelope-From: <{sender}>\r\nX-Envelope-To: <{recipient}>\r\n".encode()
        path.write_bytes(envelope + raw)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        language = next((m.language for m in MEMBERS if m.email == recipient), "")
        return SavedMail(path, sender, recipient, str(message.get("Subject", "")), language)


def _delivery(sink: MailSink) -> Any:
    from twisted.internet.threads import deferToThread
    from twisted.mail import smtp
    from zope.interface import implementer

    @implementer(smtp.IMessage)
    class Message:
        def __init__(self, sender: str, recipient: str) -> None:
            self.sender, self.recipient = sender, recipient
            self.lines: list[bytes] = []

        def lineReceived(self, line: bytes) -> None:
            self.lines.append(line)

        def eomReceived(self) -> Any:
            raw = b"\r\n".join(self.lines) + b"\r\n"
            d = deferToThread(MailSink.save, sink.next_path(), self.sender, self.recipient, raw)
            d.addCallback(sink.saved.append)
            return d

        def connectionLost(self) -> None:
            self.lines = []

    @implementer(smtp.IMessageDelivery)
    class Delivery:
        sender = ""

        def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> None:
            return None

        def validateFrom(self, helo: Any, origin: Any) -> Any:
            self.sender = str(origin)
            return origin

        def validateTo(self, user: Any) -> Callable[[], Message]:
            recipient = str(user.dest)
            return lambda: Message(self.sender, recipient)

    return Delivery()


# -- the daemons ------------------------------------------------------------------


def _bin(name: str) -> str:
    """``name`` next to this Python (the virtualenv), else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise DemoError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


@dataclass
class Daemon:
    """A child process with its log file."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    returncode: int | None = None
    killed: bool = False

    def start(self, cwd: Path) -> None:
        environment = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=environment,
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


def _sleep(reactor: Any, seconds: float) -> Any:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


def _wait_until(reactor: Any, condition: Callable[[], bool], timeout: float,
                give_up: Callable[[], bool] = lambda: False, step: float = 0.05) -> Any:
    """A Deferred firing True once ``condition()``; False at timeout or when ``give_up()``."""
    from twisted.internet.defer import inlineCallbacks

    @inlineCallbacks
    def loop() -> Any:
        deadline = time.monotonic() + timeout
        while not condition():
            if give_up() or time.monotonic() > deadline:
                return False
            yield _sleep(reactor, step)
        return True

    return loop()


def _stop(reactor: Any, daemon: Daemon) -> Any:
    """SIGTERM ``daemon``, wait for it (SIGKILL after :data:`STOP_TIMEOUT`)."""
    from twisted.internet.defer import inlineCallbacks

    @inlineCallbacks
    def stop() -> Any:
        process = daemon.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            stopped = yield _wait_until(reactor, lambda: process.poll() is not None, STOP_TIMEOUT)
            if not stopped:
                process.kill()
                daemon.killed = True
                yield _wait_until(reactor, lambda: process.poll() is not None, 5.0)
        daemon.returncode = process.poll()

    return stop()


@dataclass
class RunOutcome:
    """What happened while the daemons ran."""

    states: list[JobState] = field(default_factory=list)
    mails: list[SavedMail] = field(default_factory=list)
    daemons: list[Daemon] = field(default_factory=list)
    work_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    interrupted: bool = False
    idle_seconds: float = 0.0  # kept running by --keep-running (not counted as wall time)


def run_daemons(reactor: Any, prepared: Prepared, keep_running: bool, interrupted: Any) -> Any:
    """Run linksim, server and client until the work is done; a Deferred of :class:`RunOutcome`.

    ``interrupted`` is a Deferred fired on SIGINT/SIGTERM.
    """
    from twisted.internet.defer import inlineCallbacks
    from twisted.internet.threads import deferToThread

    layout = prepared.layout
    outcome = RunOutcome()
    sink = MailSink(layout.mail)
    signer = _bin("signer")
    twistd = _bin("twistd")
    linksim = Daemon("linksim", [signer, "linksim", "--link-a", str(layout.tty_server), "--link-b",
                                 str(layout.tty_client), "--baud", "0"], layout.logs / "linksim.log")
    server = Daemon("signer-server", [twistd, "-n", "--pidfile=", "--logfile", "-", "signer-server",
                                      "--config", str(layout.server_config)],
                    layout.logs / "signer-server.log")
    client = Daemon("signer-client", [twistd, "-n", "--pidfile=", "--logfile", "-", "signer-client",
                                      "--config", str(layout.client_config)],
                    layout.logs / "signer-client.log")
    outcome.daemons = [linksim, server, client]
    stopped_by_user = lambda: interrupted.called  # noqa: E731

    def dead(daemon: Daemon) -> Callable[[], bool]:
        return lambda: stopped_by_user() or not daemon.running()

    @inlineCallbacks
    def run() -> Any:
        port = sink.start(reactor)
        layout.client_config.write_text(client_config_text(layout, port, prepared.ca_fingerprint),
                                        encoding="utf-8")
        try:
            linksim.start(layout.out)
            ok = yield _wait_until(reactor, lambda: "READY" in linksim.text(), START_TIMEOUT, dead(linksim))
            if not ok:
                if stopped_by_user():
                    raise DemoError("interrupted while starting the daemons")
                raise DemoError(f"signer linksim did not start:\n{linksim.tail()}")
            server.start(layout.out)
            ok = yield _wait_until(reactor, lambda: "serving on" in server.text(), START_TIMEOUT, dead(server))
            if not ok:
                if stopped_by_user():
                    raise DemoError("interrupted while starting the daemons")
                raise DemoError(f"twistd signer-server did not start:\n{server.tail()}")
            started = time.monotonic()
            client.start(layout.out)

            def crls_present() -> bool:
                return all(layout.crl(rootcert).exists() for rootcert in (1, 2))

            deadline = started + WORK_TIMEOUT
            while True:
                outcome.states = yield deferToThread(read_states, layout.webdb)
                if all(s.state != "pending" for s in outcome.states) and crls_present():
                    break
                if stopped_by_user():
                    outcome.interrupted = True
                    break
                if not client.running():
                    outcome.problems.append(f"signer-client exited early:\n{client.tail()}")
                    break
                if time.monotonic() > deadline:
                    outcome.problems.append(f"the daemons did not finish within {WORK_TIMEOUT:.0f} s")
                    break
                yield _sleep(reactor, POLL_INTERVAL / 2)
            wanted = sum(len(s.job.recipients) for s in outcome.states if s.state == "done")

            def mailed() -> bool:
                outbox = layout.state_dir / "outbox"
                drained = not outbox.exists() or not any(outbox.iterdir())
                return len(sink.saved) >= wanted and drained

            if not outcome.interrupted:
                ok = yield _wait_until(reactor, mailed, 10.0, stopped_by_user)
                if not ok and not stopped_by_user():
                    outcome.problems.append(f"{len(sink.saved)} of {wanted} mails arrived")
            outcome.work_seconds = time.monotonic() - started
            if keep_running and not stopped_by_user() and not outcome.problems:
                print(_keep_running_text(layout), flush=True)
                idle_from = time.monotonic()
                yield interrupted
                outcome.idle_seconds = time.monotonic() - idle_from
        finally:
            for daemon in (client, server, linksim):
                yield _stop(reactor, daemon)
            yield sink.stop()
        outcome.mails = sorted(sink.saved, key=lambda mail: mail.path.name)
        outcome.interrupted = outcome.interrupted or (stopped_by_user() and not keep_running)
        return outcome

    return run()


def _keep_running_text(layout: DemoLayout) -> str:
    return (
        "\nThe work is done; the daemons keep running (Ctrl-C stops them).\n"
        f"  add rows to {layout.webdb} (sqlite3) and request files under {layout.csr_dir}\n"
        f"  logs: tail -f {layout.logs}/signer-client.log {layout.logs}/signer-server.log\n"
    )


def run_on_reactor(prepared: Prepared, keep_running: bool) -> RunOutcome:
    """Run :func:`run_daemons` on the global reactor and return its outcome."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, maybeDeferred

    interrupted: Deferred[None] = Deferred()
    result: list[Any] = []

    def on_signal(signum: int, frame: Any) -> None:
        def fire() -> None:
            if not interrupted.called:
                interrupted.callback(None)

        # the global reactor's declared type leaves out IReactorFromThreads
        reactor.callFromThread(fire)  # type: ignore[attr-defined]

    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGINT, signal.SIGTERM)}

    def go() -> None:
        d = maybeDeferred(run_daemons, reactor, prepared, keep_running, interrupted)
        d.addBoth(result.append)
        d.addBoth(lambda _: reactor.stop())

    try:
        reactor.callWhenRunning(go)
        # IReactorCore.run() declares no arguments; every reactor's run() takes this one
        reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    from twisted.python.failure import Failure

    if not result:
        raise DemoError("the reactor stopped before the demo finished")
    if isinstance(result[0], Failure):
        result[0].raiseException()
    return result[0]  # type: ignore[no-any-return]


# -- checking the results -----------------------------------------------------------


def verify_certificate(path: Path, root_path: Path) -> tuple[bool, str]:
    """``path`` verifies against ``root_path``: ``openssl verify`` when installed,
    always also the signature and validity period with cryptography."""
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    root = x509.load_pem_x509_certificate(root_path.read_bytes())
    try:
        certificate.verify_directly_issued_by(root)
    except Exception as error:  # InvalidSignature, ValueError, TypeError
        return False, f"signature: {error or type(error).__name__}"
    now = datetime.datetime.now(datetime.timezone.utc)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        return False, "outside its validity period"
    if shutil.which("openssl"):
        checked = subprocess.run(["openssl", "verify", "-CAfile", str(root_path), str(path)],
                                 capture_output=True, text=True, timeout=30)
        if checked.returncode != 0:
            return False, "openssl verify: " + (checked.stdout + checked.stderr).strip()
        return True, "openssl verify: OK"
    return True, "signature and validity: OK"


def check_openpgp(key_path: Path, ca_home: Path, ca_fingerprint: str) -> tuple[bool, str]:
    """The key at ``key_path`` carries a good certification by the CA key."""
    from signer.server.openpgp import Gpg, parse_listing

    home = Path(tempfile.mkdtemp(prefix="sgdemo", dir="/tmp"))
    gpg = Gpg(home, timeout=60)
    try:
        ca_public = Gpg(ca_home, timeout=60).run(["--armor", "--export", ca_fingerprint]).stdout
        gpg.run(["--import"], stdin=ca_public)
        data = key_path.read_bytes()
        gpg.run(["--import"], stdin=data)
        shown = parse_listing(gpg.run(["--with-colons", "--show-keys"], stdin=data).stdout)
        listing = parse_listing(
            gpg.run(["--with-colons", "--check-sigs", *(key.fingerprint for key in shown)], check=False).stdout
        )
        good = [
            uid.display()
            for key in listing
            for uid in key.uids
            if any(c.made_by(ca_fingerprint) and c.check == "!" for c in uid.certifications)
        ]
        if not good:
            return False, "no good certification by the demo OpenPGP CA"
        return True, "certified by the demo OpenPGP CA: " + ", ".join(good)
    finally:
        gpg.kill_agent()
        shutil.rmtree(home, ignore_errors=True)


def check_crl(path: Path, root_path: Path) -> tuple[bool, str, list[int]]:
    """``path`` is a DER CRL signed by ``root_path``; also its revoked serials."""
    if not path.exists():
        return False, "missing", []
    crl = x509.load_der_x509_crl(path.read_bytes())
    root = x509.load_pem_x509_certificate(root_path.read_bytes())
    if not crl.is_signature_valid(root.public_key()):  # type: ignore[arg-type]
        return False, "bad signature", []
    return True, f"signed by {root.subject.rfc4514_string()}", [entry.serial_number for entry in crl]


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def build_summary(prepared: Prepared, outcome: RunOutcome, wall_seconds: float) -> dict[str, Any]:
    """Check every file and put together the JSON summary."""
    layout = prepared.layout
    problems = list(outcome.problems)
    certificates, openpgp_keys, revocations = [], [], []
    crls: list[dict[str, Any]] = []
    crl_serials: dict[int, list[int]] = {}
    for rootcert in (1, 2):
        ok, note, serials = check_crl(layout.crl(rootcert), layout.root_certificate(rootcert))
        crl_serials[rootcert] = serials
        crls.append({"rootcert": rootcert, "path": str(layout.crl(rootcert)), "verified": ok,
                     "note": note, "revoked_serials": [f"{s:X}" for s in serials]})
        if not ok:
            problems.append(f"CRL of root {rootcert}: {note}")
    for state in outcome.states:
        job = state.job
        path = layout.crt_dir / job.relative("crt")
        entry: dict[str, Any] = {"table": job.table, "id": job.id, "what": job.label, "state": state.state,
                                 "warning": state.warning, "path": str(path)}
        if state.state != "done":
            problems.append(f"{job.table} {job.id} ({job.label}): {state.state}")
        if job.kind == "openpgp":
            entry["expire"] = state.expire
            if state.state == "done":
                ok, note = check_openpgp(path, layout.ca / "gnupg", prepared.ca_fingerprint)
                entry.update(verified=ok, note=note)
                if not ok:
                    problems.append(f"{path}: {note}")
            openpgp_keys.append(entry)
            continue
        entry.update(rootcert=job.rootcert, serial=state.serial, expire=state.expire,
                     ca_certificate=str(layout.root_certificate(job.rootcert)))
        if path.exists():
            ok, note = verify_certificate(path, layout.root_certificate(job.rootcert))
            certificate = x509.load_pem_x509_certificate(path.read_bytes())
            entry.update(verified=ok, note=note, subject=certificate.subject.rfc4514_string())
            try:
                san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                entry["san"] = [str(name.value) for name in san]
            except x509.ExtensionNotFound:
                entry["san"] = []
            if not ok:
                problems.append(f"{path}: {note}")
            if state.serial and int(state.serial, 16) != certificate.serial_number:
                problems.append(f"{path}: serial {state.serial} in the WebDB does not match the file")
        elif state.state == "done":
            entry["verified"] = False
            problems.append(f"{path}: missing")
        if job.kind == "revoke":
            listed = bool(state.serial) and int(state.serial, 16) in crl_serials.get(job.rootcert, [])
            entry.update(crl=str(layout.crl(job.rootcert)), listed_in_crl=listed)
            if state.state == "done" and not listed:
                problems.append(f"serial {state.serial} is not on the CRL {layout.crl(job.rootcert)}")
            revocations.append(entry)
        else:
            certificates.append(entry)
    wanted = sum(len(s.job.recipients) for s in outcome.states if s.state == "done")
    mails = [{"path": str(m.path), "to": m.recipient, "subject": m.subject, "language": m.language}
             for m in outcome.mails]
    if len(mails) < wanted:
        problems.append(f"{len(mails)} of {wanted} mails arrived")
    daemons = []
    for daemon in outcome.daemons:
        text = daemon.text()
        # twistd re-raises SIGTERM after a clean shutdown; linksim exits 0
        clean = daemon.returncode in (0, -signal.SIGTERM) and not daemon.killed and "Traceback" not in text
        daemons.append({"name": daemon.name, "log": str(daemon.log), "returncode": daemon.returncode,
                        "clean_stop": clean})
        if daemon.process is not None and not clean:
            problems.append(f"{daemon.name} did not stop cleanly (status {daemon.returncode}); see {daemon.log}")
    failed = sum(1 for s in outcome.states if s.state != "done")
    files = ([c["path"] for c in certificates if Path(c["path"]).exists()]
             + [k["path"] for k in openpgp_keys if Path(k["path"]).exists()]
             + [r["path"] for r in revocations]
             + [c["path"] for c in crls if Path(c["path"]).exists()]
             + [m["path"] for m in mails])
    return {
        "ok": not problems and not outcome.interrupted,
        "signed_x509": sum(1 for c in certificates if c["state"] == "done"),
        "signed_openpgp": sum(1 for k in openpgp_keys if k["state"] == "done"),
        "revoked": sum(1 for r in revocations if r["state"] == "done"),
        "failed": failed,
        "verified": bool(outcome.states) and all(
            entry.get("verified", False) for entry in (*certificates, *openpgp_keys, *revocations)
        ) and all(c["verified"] for c in crls),
        "wall_time_seconds": round(wall_seconds, 2),
        "work_time_seconds": round(outcome.work_seconds, 2),
        "certificates": certificates,
        "openpgp_keys": openpgp_keys,
        "revocations": revocations,
        "crls": crls,
        "mails": mails,
        "files": files,
        "daemons": daemons,
        "paths": {
            "out": str(layout.out),
            "webdb": str(layout.webdb),
            "ca": str(layout.ca),
            "server_config": str(layout.server_config),
            "client_config": str(layout.client_config),
            "crt_dir": str(layout.crt_dir),
            "mail": str(layout.mail),
            "logs": str(layout.logs),
            "summary": str(layout.summary),
        },
        "problems": problems,
        "interrupted": outcome.interrupted,
    }


def summary_text(summary: dict[str, Any]) -> str:
    """The short human summary printed at the end."""
    paths = {key: _display(Path(value)) for key, value in summary["paths"].items()}
    lines = [
        "",
        f"signer demo: {'done' if summary['ok'] else 'FAILED'} in {summary['wall_time_seconds']:.1f} s "
        f"(the daemons worked {summary['work_time_seconds']:.1f} s)",
        f"  signed X.509    {summary['signed_x509']}",
    ]
    for cert in summary["certificates"]:
        mark = "ok" if cert.get("verified") else cert["state"]
        lines.append(f"    [{mark}] {cert['what']} (root {cert['rootcert']}, serial {cert['serial'] or '-'})")
    lines.append(f"  signed OpenPGP  {summary['signed_openpgp']}")
    for key in summary["openpgp_keys"]:
        mark = "ok" if key.get("verified") else key["state"]
        lines.append(f"    [{mark}] {key['what']}")
    lines.append(f"  revoked         {summary['revoked']}")
    for revocation in summary["revocations"]:
        mark = "ok" if revocation.get("listed_in_crl") else revocation["state"]
        lines.append(f"    [{mark}] {revocation['what']}: serial {revocation['serial']} "
                     f"is on {_display(Path(revocation['crl']))}")
    lines.append(f"  failed          {summary['failed']}")
    verified = "yes" if summary["verified"] else "NO"
    lines.append(f"  every certificate verifies against the demo CA, CRLs signed by their roots: {verified}")
    german = sum(1 for mail in summary["mails"] if mail["language"].startswith("de"))
    lines += [
        "",
        f"  certificates   {paths['crt_dir']}/",
        f"  CRLs           {', '.join(_display(Path(c['path'])) for c in summary['crls'])}",
        f"  mails          {paths['mail']}/ ({len(summary['mails'])} mails, {german} in German)",
        f"  WebDB          {paths['webdb']} (sqlite3)",
        f"  demo CA        {paths['ca']}/ (roots/root0.crt, roots/root1.crt, gnupg/)",
        f"  logs           {paths['logs']}/",
        f"  summary        {paths['summary']}",
    ]
    for problem in summary["problems"]:
        lines.append(f"  problem: {problem}")
    return "\n".join(lines)


# -- the command ------------------------------------------------------------------


def run_demo(out: Path, keep_running: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole demo in ``out``; return the summary (also written to ``summary.json``)."""
    begun = time.monotonic()
    missing = missing_tools()
    if missing:
        raise DemoError(f"{' and '.join(missing)} not installed; install with: {APT_HINT}")
    echo(f"signer demo: preparing a throw-away CA, OpenPGP key and WebDB in {_display(out.absolute())}/")
    from signer.server.config import ConfigError
    from signer.server.openpgp import GpgFailed

    try:
        prepared = prepare(out)
    except (OSError, ValueError, ConfigError, GpgFailed) as error:
        raise DemoError(f"preparing the demo in {out} failed: {error}") from None
    echo("signer demo: starting signer linksim, twistd signer-server and twistd signer-client")
    outcome = run_on_reactor(prepared, keep_running)
    summary = build_summary(prepared, outcome, time.monotonic() - begun - outcome.idle_seconds)
    prepared.layout.summary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m signer.demo``; exit status 0 when everything worked."""
    parser = argparse.ArgumentParser(
        prog="python -m signer.demo",
        description="Run the signer demo: a throw-away CA, a sqlite WebDB with pending requests, "
        "twistd signer-server and signer-client over a pseudo-terminal pair, an SMTP sink; "
        "prints a summary and writes OUT/summary.json. Starts clean: OUT is removed first.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo/out"), help="output folder (default demo/out)")
    parser.add_argument("--keep-running", action="store_true",
                        help="keep the daemons running after the work is done, until Ctrl-C")
    args = parser.parse_args(argv)
    try:
        summary = run_demo(args.out, args.keep_running)
    except DemoError as error:
        print(f"signer demo: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("signer demo: interrupted", file=sys.stderr)
        return 130
    print(summary_text(summary))
    if summary["interrupted"]:
        return 130
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
