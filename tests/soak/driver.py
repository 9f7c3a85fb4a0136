"""The soak: client and server as separate processes over ``signer linksim``, with faults and kill -9.

Run on demand::

    python -m tests.soak.driver --requests 1000 --seed 1 --kills 6 --flip-rate 1e-5

What it does (see ``docs/soak.md``):

1. makes a throw-away test signer (``signer init-test-signer``) and a seeded
   sqlite WebDB with ``--requests`` rows: X.509 rows of the four tables (with
   SANs, code signing, both roots, two digests), OpenPGP rows, and a few
   "poison" rows the client or the server must refuse (a forbidden character
   in the subject, a missing request file, a 1024-bit key); every row has its
   own member (own mail address), so mails can be counted per row;
2. starts ``signer linksim`` (bit flips, drops, random stalls), the server on
   side A and the client on side B (``twistd -n``), and an SMTP sink;
3. while the rows are worked off, marks a seeded share of the completed X.509
   rows "please revoke", and kills each daemon ``--kills`` times with SIGKILL
   at seeded moments (progress thresholds plus a random delay), restarting it
   after a seeded pause;
4. when every row is settled, waits for the client's mail outbox to drain,
   stops everything and checks the outcome against the WebDB, the files, the
   CA database (``data/ca.sqlite3``), the mails and the logs.

A row is *settled* when it is completed (certificate/key stored, row updated)
or its warning count reached the threshold; a row marked for revocation is
settled when its ``revoked`` column holds the time of the revocation.

The figures (:class:`SoakResult.counts`) distinguish what the client
guarantees from what a kill -9 can legitimately cost: an *orphan* is a
certificate in the CA database that no row holds (the signer issued it, the
answer never got stored: a kill between the server's commit and the client's
rename, or a conversation abandoned on the line); a *re-request* is a row
for which the signer issued more than one certificate. :meth:`SoakResult.problems`
lists the violations of the guarantees (a row lost, a warning without a
logged reason, a completed row whose file, row and CA database disagree, a
mail missing for a completed row, a daemon's traceback).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import random
import re
import signal
import socketserver
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Sequence

from cryptography import x509

BIN = Path(sys.executable).parent
ZERO = "0000-00-00 00:00:00"
REVOKE_REQUESTED = "1970-01-01 10:00:01"
WARNING_THRESHOLD = 3
PREFIXES = {
    "emailcerts": "client",
    "domaincerts": "server",
    "orgemailcerts": "orgclient",
    "orgdomaincerts": "orgserver",
    "gpg": "gpg",
}
X509_TABLES = ("emailcerts", "domaincerts", "orgemailcerts", "orgdomaincerts")
#: Share of each kind among the rows (the rest of 1.0 goes to emailcerts).
MIX = (("gpg", 0.08), ("domaincerts", 0.25), ("orgemailcerts", 0.15), ("orgdomaincerts", 0.17))
POISONS = ("forbidden-character", "missing-request", "weak-key")


# -- settings and results ------------------------------------------------------


@dataclass(frozen=True)
class SoakSettings:
    """One soak run.

    :ivar requests: rows seeded into the WebDB (signing requests of all kinds).
    :ivar kills: SIGKILL + restart per daemon.
    :ivar flip_rate: linksim bit-flip probability per byte.
    :ivar baud: line speed (0 = unpaced).
    :ivar revoke_share: share of the X.509 rows revoked once they are signed.
    :ivar poison_share: share of rows that must end with warnings.
    :ivar timeout: seconds the whole run may take before it is declared stuck.
    """

    requests: int = 1000
    seed: int = 1
    kills: int = 6
    flip_rate: float = 1e-5
    drop_rate: float = 0.0
    stall_rate: float = 0.05
    stall_ms: float = 400.0
    stall_at: tuple[str, ...] = ()
    baud: int = 115200
    revoke_share: float = 0.08
    poison_share: float = 0.03
    gpg_keys: int = 8
    polling_interval: float = 0.2
    timeout: float = 3600.0
    workdir: Path | None = None
    verbose: bool = False


@dataclass
class RowSpec:
    """A seeded row and what the soak expects of it."""

    table: str
    id: int
    memid: int
    email: str
    cn: str
    poison: str = ""
    revoke: bool = False


@dataclass
class SoakResult:
    """The counts printed at the end and the violated guarantees."""

    counts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        lines = ["soak results:"]
        width = max(len(k) for k in self.counts) if self.counts else 0
        for key, value in self.counts.items():
            lines.append(f"  {key:<{width}}  {value}")
        if self.problems:
            lines.append(f"PROBLEMS ({len(self.problems)}):")
            lines += [f"  - {p}" for p in self.problems[:50]]
            if len(self.problems) > 50:
                lines.append(f"  ... and {len(self.problems) - 50} more")
        else:
            lines.append("no guarantee violated")
        return "\n".join(lines)


# -- an SMTP sink in a thread ---------------------------------------------------------


@dataclass(frozen=True)
class SinkMail:
    recipient: str
    subject: str
    body: str


class _SMTPHandler(socketserver.StreamRequestHandler):
    """A minimal SMTP server conversation (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT)."""

    def handle(self) -> None:
        sink: SMTPThreadSink = self.server.sink  # type: ignore[attr-defined]
        out = self.wfile
        out.write(b"220 soak.example ESMTP sink\r\n")
        recipients: list[str] = []
        while True:
            line = self.rfile.readline(65536)
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                out.write(b"250 soak.example\r\n")
            elif verb == b"MAIL":
                recipients = []
                out.write(b"250 ok\r\n")
            elif verb == b"RCPT":
                match = re.search(rb"<([^>]*)>", line)
                recipients.append(match.group(1).decode() if match else "")
                out.write(b"250 ok\r\n")
            elif verb == b"DATA":
                out.write(b"354 go ahead\r\n")
                out.flush()
                data = []
                while True:
                    part = self.rfile.readline(1 << 20)
                    if not part or part in (b".\r\n", b".\n"):
                        break
                    data.append(part[1:] if part.startswith(b"..") else part)
                sink.store(recipients, b"".join(data))
                out.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                out.write(b"221 bye\r\n")
                return
            else:
                out.write(b"250 ok\r\n")
            out.flush()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SMTPThreadSink:
    """A real (tiny) SMTP server on 127.0.0.1 in a background thread; keeps every mail."""

    def __init__(self) -> None:
        self.mails: list[SinkMail] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _SMTPHandler)
        self._server.sink = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def store(self, recipients: list[str], raw: bytes) -> None:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        part = message.get_body(("plain",)) if message.is_multipart() else message
        body = part.get_content() if part is not None else ""
        with self._lock:
            for recipient in recipients:
                self.mails.append(SinkMail(recipient, str(message["Subject"]), str(body)))

    def count(self) -> int:
        with self._lock:
            return len(self.mails)


# -- processes --------------------------------------------------------------------------


class Daemon:
    """A ``twistd -n`` daemon, restartable, logging (appending) to one file."""

    def __init__(self, name: str, argv: list[str], log: Path, cwd: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"=== soak: start {self.starts} of {self.name} at {time.time():.3f}\n".encode())
            out.flush()
            self.process = subprocess.Popen(self.argv, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        with self.log.open("ab") as out:
            out.write(f"=== soak: SIGKILL of {self.name} at {time.time():.3f}\n".encode())

    def terminate(self, timeout: float = 60) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# -- seeding ----------------------------------------------------------------------------


def _csr(key: Any, subject_cn: str, email_address: str | None) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]
    if email_address:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email_address))
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes)).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def _rsa_keys(count: int, bits: int) -> list[Any]:
    from tests.support.testca import rsa_key

    return [rsa_key(bits, 900 + index) for index in range(count)]


def _request_path(base: Path, table: str, row_id: int, kind: str = "csr") -> Path:
    prefix = PREFIXES[table]
    return base / kind / prefix / str(row_id // 1000) / f"{prefix}-{row_id}.{kind}"


def seed(settings: SoakSettings, db_path: Path, web: Path, rng: random.Random) -> list[RowSpec]:
    """Create the sqlite WebDB and the request files; return the rows."""
    from tests.support.gpg import KeyMaker, short_tempdir
    from tests.support.webdb import sqlite_webdb

    db = sqlite_webdb(db_path)
    keys = _rsa_keys(24, 2048)
    weak = _rsa_keys(1, 1024)[0]
    kinds: list[str] = []
    for _ in range(settings.requests):
        draw = rng.random()
        kind = "emailcerts"
        for table, share in MIX:
            if draw < share:
                kind = table
                break
            draw -= share
        kinds.append(kind)
    n_gpg = kinds.count("gpg")
    gpg_keys: list[bytes] = []
    if n_gpg:
        home = short_tempdir("soak")
        maker = KeyMaker(home / "h")
        for index in range(min(n_gpg, settings.gpg_keys)):
            gpg_keys.append(maker.make(f"Soak Key {index} <key{index}@soak.example>").armored)
        maker.close()
    next_id: Counter[str] = Counter()
    rows: list[RowSpec] = []
    for number, table in enumerate(kinds):
        next_id[table] += 1
        row_id = next_id[table]
        memid = 1000 + number
        address = f"m{memid}@soak.example"
        db.add_user(memid, address, f"Member{memid}", "en_US")
        if rng.random() < 0.5:
            db.add_points(memid, 100)
        if table == "gpg":
            db.add_gpg(row_id, memid, address)
            path = _request_path(web, table, row_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gpg_keys[number % len(gpg_keys)])
            rows.append(RowSpec(table, row_id, memid, address, f"gpg-{row_id}"))
            continue
        poison = rng.choice(POISONS) if rng.random() < settings.poison_share else ""
        revoke = not poison and rng.random() < settings.revoke_share
        tag = f"{PREFIXES[table]}{row_id}"
        rootcert = 2 if rng.random() < 0.3 else 1
        md = rng.choice(("sha256", "sha256", "sha512"))
        owner = memid
        email_address: str | None = None
        if table == "domaincerts":
            db.add_domain(memid, memid, f"{tag}.soak.example")
        elif table in ("orgemailcerts", "orgdomaincerts"):
            db.add_org_admin(memid, memid)
        if table in ("domaincerts", "orgdomaincerts"):
            cn = f"{tag}.soak.example"
            subject = f"/CN={cn}"
            if table == "orgdomaincerts":
                subject += "/O=Soak Org"
            sans = [f"DNS:{cn}", f"DNS:www.{cn}"] + ([f"DNS:alt.{cn}"] if rng.random() < 0.3 else [])
            subject += "".join(f"/subjectAltName={s}" for s in sans)
        else:
            cn = f"Soak {tag}"
            email_address = f"{tag}@soak.example"
            subject = f"/CN={cn}/emailAddress={email_address}"
            if table == "orgemailcerts":
                subject = f"/CN={cn}/O=Soak Org/emailAddress={email_address}"
        codesign = 1 if table in ("emailcerts", "orgemailcerts") and rng.random() < 0.1 else 0
        if poison == "forbidden-character":
            subject = subject.replace(f"/CN={cn}", f"/CN={cn}#bad", 1)
        db.add_cert(table, row_id, owner, subject, cn=cn, md=md, rootcert=rootcert, codesign=codesign)
        if poison != "missing-request":
            key = weak if poison == "weak-key" else keys[number % len(keys)]
            path = _request_path(web, table, row_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_csr(key, cn, email_address))
        rows.append(RowSpec(table, row_id, memid, address, cn, poison, revoke))
    db.close()
    return rows


# -- configuration files ---------------------------------------------------------------


CLIENT_TOML = """
[database]
driver = "sqlite"
sqlite_path = "{db}"

[link]
serial_config = "{serial}"
start_ack_timeout = 5.0
frame_ack_timeout = 3.0
response_timeout = 20.0
frame_byte_timeout = 3.0

[files]
csr_dir = "{web}/csr"
crt_dir = "{web}/crt"
crt_name_prefix = "../crt"
state_dir = "{web}/state"

[[roots]]
rootcert = 1
crl = "{web}/www/revoke.crl"
ca_certificate = "{signer}/roots/root0.crt"

[[roots]]
rootcert = 2
crl = "{web}/www/class3-revoke.crl"
ca_certificate = "{signer}/roots/root1.crt"

[polling]
interval = {interval}
warning_threshold = {threshold}

[mail]
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
sender = "support@cacert.example"
timeout = 10.0

[openpgp]
ca_key_id = "{fingerprint}"
"""

SERVER_LINK = """

[link]
start_timeout = 5.0
ack_timeout = 3.0
frame_timeout = 10.0
"""


# -- the run --------------------------------------------------------------------------


class Soak:
    """One soak run (set up, drive, check)."""

    def __init__(self, settings: SoakSettings, out: IO[str] = sys.stdout) -> None:
        self.settings = settings
        self.out = out
        self.rng = random.Random(settings.seed)
        self.kill_log: list[tuple[float, str]] = []
        self.revoke_marked: set[tuple[str, int]] = set()

    def say(self, text: str) -> None:
        print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=self.out, flush=True)

    def run(self) -> SoakResult:
        if self.settings.workdir is not None:
            self.settings.workdir.mkdir(parents=True, exist_ok=True)
            return self._run(self.settings.workdir)
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
            return self._run(Path(tmp))

    def _run(self, work: Path) -> SoakResult:
        s = self.settings
        signer = work / "signer"
        made = subprocess.run([str(BIN / "signer"), "init-test-signer", str(signer)],
                              capture_output=True, text=True, timeout=120)
        if made.returncode != 0:
            raise RuntimeError(f"init-test-signer failed: {made.stderr}")
        fingerprint = re.search(r"OpenPGP CA key ([0-9A-F]{40})", made.stdout).group(1)  # type: ignore[union-attr]
        with (signer / "signer-server.toml").open("a") as toml:
            toml.write(SERVER_LINK)
        web = work / "web"
        (web / "www").mkdir(parents=True)
        db_path = work / "webdb.sqlite"
        seeded = time.monotonic()
        rows = seed(s, db_path, web, self.rng)
        self.say(f"seeded {len(rows)} rows in {time.monotonic() - seeded:.1f} s: "
                 + ", ".join(f"{t} {n}" for t, n in sorted(Counter(r.table for r in rows).items()))
                 + f"; poison {sum(1 for r in rows if r.poison)}, to revoke {sum(1 for r in rows if r.revoke)}")

        sink = SMTPThreadSink()
        sink.start()
        link_a, link_b = work / "ttyA", work / "ttyB"
        linksim_log = work / "linksim.log"
        linksim_argv = [
            str(BIN / "signer"), "linksim", "--link-a", str(link_a), "--link-b", str(link_b),
            "--baud", str(s.baud), "--seed", str(s.seed), "--flip-rate", repr(s.flip_rate),
            "--drop-rate", repr(s.drop_rate), "--stall-rate", repr(s.stall_rate), "--stall-ms", repr(s.stall_ms),
            "--json",
        ]
        for schedule in s.stall_at:
            linksim_argv += ["--stall-at", schedule]
        linksim_out = linksim_log.open("wb")
        linksim = subprocess.Popen(linksim_argv, stdout=linksim_out, stderr=subprocess.STDOUT, cwd=work)
        server = client = None
        try:
            self._wait(lambda: "READY" in linksim_log.read_text(), "linksim READY", 30, linksim)
            (work / "server-serial.conf").write_text(f'[serial]\ndevice = "{link_a}"\nbaudrate = 115200\n')
            (work / "client-serial.conf").write_text(f'[serial]\ndevice = "{link_b}"\nbaudrate = 115200\n')
            (work / "client.toml").write_text(CLIENT_TOML.format(
                db=db_path, serial=work / "client-serial.conf", web=web, signer=signer,
                interval=s.polling_interval, threshold=WARNING_THRESHOLD, smtp_port=sink.port,
                fingerprint=fingerprint,
            ))
            twistd = [str(BIN / "twistd"), "-n", "--pidfile=", "--logfile", "-"]
            server = Daemon("server", twistd + ["signer-server", "--config", str(signer / "signer-server.toml"),
                                                "--serial-config", str(work / "server-serial.conf")],
                            work / "server.log", work)
            client = Daemon("client", twistd + ["signer-client", "--config", str(work / "client.toml")],
                            work / "client.log", work)
            started = time.monotonic()
            self._start_server(server)
            client.start()
            self._drive(rows, db_path, web, server, client, sink)
            wall = time.monotonic() - started
            self.say(f"all rows settled after {wall:.1f} s; stopping")
        finally:
            codes = {}
            for daemon in (client, server):
                if daemon is not None:
                    codes[daemon.name] = daemon.terminate()
            linksim.send_signal(signal.SIGTERM)
            try:
                linksim.wait(timeout=30)
            except subprocess.TimeoutExpired:
                linksim.kill()
                linksim.wait()
            linksim_out.close()
            sink.stop()
        self.db_path, self.web, self.signer, self.sink, self.client = db_path, web, signer, sink, client
        self._context = (rows, db_path, web, signer, server, client, linksim_log, sink, wall, codes)
        return self._check(*self._context)

    def recheck(self) -> SoakResult:
        """Check the outcome of the finished run again (after a test tampered with it)."""
        return self._check(*self._context)

    # -- driving ---------------------------------------------------------------

    def _wait(self, condition: Any, what: str, timeout: float, process: Any = None) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{what}: the process exited ({process.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def _start_server(self, server: Daemon) -> None:
        before = server.text().count("serving on")
        server.start()
        self._wait(lambda: server.text().count("serving on") > before, "server start", 60, server.process)

    def _kill_plan(self) -> list[tuple[float, str]]:
        """(progress threshold, daemon) for every kill, seeded, in order."""
        victims = ["server"] * self.settings.kills + ["client"] * self.settings.kills
        self.rng.shuffle(victims)
        thresholds = sorted(self.rng.uniform(0.03, 0.85) for _ in victims)
        return list(zip(thresholds, victims))

    def _drive(self, rows: list[RowSpec], db_path: Path, web: Path, server: Daemon, client: Daemon,
               sink: SMTPThreadSink) -> None:
        s = self.settings
        plan = self._kill_plan()
        by_key = {(r.table, r.id): r for r in rows}
        deadline = time.monotonic() + s.timeout
        last_report = 0.0
        connection = sqlite3.connect(str(db_path), timeout=30, isolation_level=None)
        try:
            while True:
                if time.monotonic() > deadline:
                    self.say("TIMEOUT: not every row settled")
                    return
                for daemon in (server, client):
                    if not daemon.alive():
                        self.say(f"{daemon.name} exited by itself ({daemon.process.returncode}); restarting")  # type: ignore[union-attr]
                        self.kill_log.append((time.time(), f"{daemon.name}-exit"))
                        self._start_server(server) if daemon is server else client.start()
                state = self._state(connection, rows)
                self._mark_revocations(connection, state, by_key)
                settled = sum(1 for r in rows if state[(r.table, r.id)]["settled"])
                progress = settled / len(rows)
                if plan and progress >= plan[0][0]:
                    _, victim = plan.pop(0)
                    time.sleep(self.rng.uniform(0.0, 0.6))
                    daemon = server if victim == "server" else client
                    daemon.kill9()
                    self.kill_log.append((time.time(), victim))
                    self.say(f"kill -9 {victim} at {settled}/{len(rows)} settled")
                    time.sleep(self.rng.uniform(0.1, 1.5))
                    self._start_server(server) if daemon is server else client.start()
                    continue
                if time.monotonic() - last_report > 10:
                    last_report = time.monotonic()
                    self.say(f"{settled}/{len(rows)} settled, {len(self.revoke_marked)} revocations asked, "
                             f"{sink.count()} mails")
                if settled == len(rows) and not plan:
                    outbox = web / "state" / "outbox"
                    if not outbox.exists() or not any(outbox.iterdir()):
                        count = sink.count()
                        time.sleep(1.0)
                        if sink.count() == count and (not outbox.exists() or not any(outbox.iterdir())):
                            return
                time.sleep(0.3)
        finally:
            connection.close()

    def _state(self, connection: sqlite3.Connection, rows: list[RowSpec]) -> dict[tuple[str, int], dict[str, Any]]:
        state: dict[tuple[str, int], dict[str, Any]] = {}
        for table in X509_TABLES:
            for row_id, crt_name, warning, revoked in connection.execute(
                f"SELECT id, crt_name, warning, revoked FROM {table}"
            ):
                state[(table, row_id)] = {"done": bool(crt_name), "warning": warning, "revoked": revoked}
        for row_id, crt, warning in connection.execute("SELECT id, crt, warning FROM gpg"):
            state[("gpg", row_id)] = {"done": bool(crt), "warning": warning, "revoked": ZERO}
        for row in rows:
            entry = state[(row.table, row.id)]
            signing_settled = entry["done"] or entry["warning"] >= WARNING_THRESHOLD
            if row.revoke and entry["done"]:
                entry["settled"] = entry["revoked"] not in (ZERO, REVOKE_REQUESTED)
            else:
                entry["settled"] = signing_settled
        return state

    def _mark_revocations(self, connection: sqlite3.Connection, state: dict[tuple[str, int], dict[str, Any]],
                          by_key: dict[tuple[str, int], RowSpec]) -> None:
        for key, entry in state.items():
            row = by_key.get(key)
            if row is None or not row.revoke or not entry["done"] or key in self.revoke_marked:
                continue
            connection.execute(f"UPDATE {row.table} SET revoked = ? WHERE id = ? AND revoked = ?",
                               (REVOKE_REQUESTED, row.id, ZERO))
            self.revoke_marked.add(key)

    # -- checking ------------------------------------------------------------------

    def _check(self, rows: list[RowSpec], db_path: Path, web: Path, signer: Path, server: Daemon | None,
               client: Daemon | None, linksim_log: Path, sink: SMTPThreadSink, wall: float,
               codes: dict[str, int | None]) -> SoakResult:
        result = SoakResult()
        problems = result.problems
        webdb = sqlite3.connect(str(db_path))
        webdb.row_factory = sqlite3.Row
        ca = sqlite3.connect(str(signer / "data" / "ca.sqlite3"))
        client_log = client.text() if client else ""
        server_log = server.text() if server else ""

        # the CA database: every certificate, keyed by CN
        issued: dict[str, list[tuple[int, int, int, str]]] = defaultdict(list)  # cn -> (root, serial, at, status)
        ca_total = 0
        for root, serial, der, issued_at, status in ca.execute(
            "SELECT root, serial, der, issued_at, status FROM certificates"
        ):
            ca_total += 1
            certificate = x509.load_der_x509_certificate(der)
            cns = certificate.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
            cn = str(cns[0].value) if cns else ""
            issued[cn].append((root, int(serial, 16), issued_at or 0, status))

        # mails per recipient and event
        mails: Counter[tuple[str, str]] = Counter()
        for mail in sink.mails:
            event = "revoked" if "has been revoked" in mail.body else "issued"
            mails[(mail.recipient, event)] += 1

        warned_reasons = _warning_reasons(client_log)
        counts: Counter[str] = Counter()
        delivered_serials: set[tuple[int, int]] = set()
        duplicate_rows: list[str] = []
        expected_mails = 0
        for row in rows:
            label = f"{row.table} {row.id}"
            record = dict(webdb.execute(f"SELECT * FROM {row.table} WHERE id = ?", (row.id,)).fetchone())
            done = bool(record["crt" if row.table == "gpg" else "crt_name"])
            warning = int(record["warning"])
            if warning:
                counts["rows with warnings"] += 1
                counts["warnings counted"] += warning
                if label not in warned_reasons:
                    problems.append(f"{label}: warning {warning} without a logged reason")
            if row.table == "gpg":
                counts["openpgp rows"] += 1
            else:
                counts["x509 rows"] += 1
            if not done:
                if warning >= WARNING_THRESHOLD:
                    counts["given up with warnings"] += 1
                    if not row.poison:
                        counts["given up, not poison"] += 1
                else:
                    problems.append(f"{label}: LOST (not completed, warning {warning})")
                    counts["lost"] += 1
                if row.table != "gpg" and issued.get(row.cn):
                    counts["certificates issued for given-up rows"] += len(issued[row.cn])
                continue
            if row.poison:
                problems.append(f"{label}: poison row ({row.poison}) was completed")
            counts["completed"] += 1
            crt_path = _request_path(web, row.table, row.id, "crt")
            if not crt_path.exists():
                problems.append(f"{label}: completed but no file {crt_path}")
                continue
            expected_mails += 1
            got = mails[(row.email, "issued")]
            if got == 0:
                problems.append(f"{label}: no 'issued' mail")
                counts["mails missing"] += 1
            elif got > 1:
                counts["mails duplicated"] += got - 1
            if row.table == "gpg":
                counts["openpgp completed"] += 1
                if not crt_path.read_bytes().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"):
                    problems.append(f"{label}: the key file is not an armored key")
                continue
            counts["x509 completed"] += 1
            certificate = x509.load_pem_x509_certificate(crt_path.read_bytes())
            root = max(int(record["rootcert"]) - 1, 0)
            if int(record["serial"], 16) != certificate.serial_number:
                problems.append(f"{label}: row serial {record['serial']} != file serial {certificate.serial_number:X}")
            mine = issued.get(row.cn, [])
            if (root, certificate.serial_number) not in {(r, n) for r, n, _, _ in mine}:
                problems.append(f"{label}: its certificate {certificate.serial_number:X} is not in the CA database")
            delivered_serials.add((root, certificate.serial_number))
            if len(mine) > 1:
                problems.append(f"{label}: {len(mine)} certificates issued for one request row")
                duplicate_rows.append(label)
                counts["re-requested rows (>1 certificate issued)"] += 1
                counts["extra certificates for completed rows"] += len(mine) - 1
            if row.revoke and row.table != "gpg":
                counts["revocations asked"] += 1 if (row.table, row.id) in self.revoke_marked else 0
                if record["revoked"] in (ZERO, REVOKE_REQUESTED):
                    problems.append(f"{label}: revocation not completed ({record['revoked']})")
                    continue
                counts["revoked"] += 1
                status = [st for r, n, _, st in mine if (r, n) == (root, certificate.serial_number)]
                if status != ["R"]:
                    problems.append(f"{label}: revoked in the WebDB but CA status {status}")
                expected_mails += 1
                got = mails[(row.email, "revoked")]
                if got == 0:
                    problems.append(f"{label}: no 'revoked' mail")
                    counts["mails missing"] += 1
                elif got > 1:
                    counts["mails duplicated"] += got - 1
        # one file per completed row, nothing else (a kill -9 inside write_atomic leaves its temp file)
        crt_files = [p for p in (web / "crt").rglob("*") if p.is_file()] if (web / "crt").exists() else []
        expected_files = {_request_path(web, r.table, r.id, "crt") for r in rows}
        counts["certificate/key files"] = sum(1 for p in crt_files if p in expected_files)
        stray = [p for p in crt_files if p not in expected_files]
        counts["stray temporary files"] = sum(1 for p in stray if p.name.endswith(".tmp"))
        if len(stray) != counts["stray temporary files"]:
            problems.append(f"unexpected files in crt_dir: {[p.name for p in stray if not p.name.endswith('.tmp')][:5]}")
        if counts["certificate/key files"] != counts["completed"]:
            problems.append(f"{counts['certificate/key files']} certificate files for {counts['completed']} completed rows")
        # the client's crash state is clean after a graceful stop
        state = web / "state"
        leftovers = [p.name for p in state.rglob("*") if p.is_file()] if state.exists() else []
        counts["stray temporary files"] += sum(1 for name in leftovers if name.endswith(".tmp"))
        leftovers = [name for name in leftovers if not name.endswith(".tmp")]
        if leftovers:
            problems.append(f"client state left after the stop: {leftovers[:5]}")
        # the published CRLs verify and list every revoked serial of their root
        crl_listed = _crl_problems(rows, webdb, web, signer)
        problems.extend(crl_listed)
        known_cns = {r.cn for r in rows}
        strangers = sum(len(v) for cn, v in issued.items() if cn not in known_cns)
        orphans = ca_total - len(delivered_serials)
        if strangers:
            problems.append(f"{strangers} certificate(s) in the CA database for no row")
        x509_completed = counts["x509 completed"]
        if ca_total != x509_completed + orphans:
            problems.append(f"CA certificates {ca_total} != completed {x509_completed} + orphans {orphans}")
        for name, text in (("client", client_log), ("server", server_log),
                           ("linksim", linksim_log.read_text(errors="replace"))):
            for needle in ("Traceback", "Unhandled"):
                found = text.count(needle)
                counts[f"{name} log '{needle}'"] = found
                if found:
                    problems.append(f"{name} log has {found} '{needle}'")

        poison_labels = {f"{r.table} {r.id}" for r in rows if r.poison}
        other_reasons: Counter[str] = Counter()
        for match in re.finditer(r"\b([a-z]+) (\d+): ([^\n]*(?:warning count raised|counting a warning)[^\n]*)",
                                 client_log):
            if f"{match.group(1)} {match.group(2)}" not in poison_labels:
                other_reasons[re.sub(r"\d+", "N", match.group(3))[:120]] += 1
        kills = Counter(victim for _, victim in self.kill_log)
        link = _linksim_counters(linksim_log)
        served = Counter(re.findall(r"(\S+) request served", server_log))
        refused = Counter(re.findall(r"(\S+) request refused", server_log))
        total_mails = len(sink.mails)
        result.counts = {
            "rows seeded": len(rows),
            "x509 rows / openpgp rows": f"{counts['x509 rows']} / {counts['openpgp rows']}",
            "poison rows": sum(1 for r in rows if r.poison),
            "completed (x509 + openpgp)": f"{counts['completed']} ({x509_completed} + {counts['openpgp completed']})",
            "given up with warnings (poison / other)":
                f"{counts['given up with warnings']} ({counts['given up with warnings'] - counts['given up, not poison']}"
                f" / {counts['given up, not poison']})",
            "lost rows": counts["lost"],
            "rows with warnings (total warnings)": f"{counts['rows with warnings']} ({counts['warnings counted']})",
            "revocations asked / done": f"{len(self.revoke_marked)} / {counts['revoked']}",
            "CA certificates": ca_total,
            "orphans (issued, never delivered)": orphans,
            "re-requested rows (>1 certificate issued)": counts["re-requested rows (>1 certificate issued)"],
            "certificates issued for given-up rows": counts["certificates issued for given-up rows"],
            "certificate/key files (stray .tmp files left by kills)":
                f"{counts['certificate/key files']} ({counts['stray temporary files']})",
            "re-requests answered with the certificate already issued (server replay window)":
                server_log.count("identical request repeated"),
            "openpgp certifications beyond one per completed row":
                served.get("sign-openpgp", 0) - counts["openpgp completed"],
            "crash-window warnings (client journal)":
                client_log.count("its request was on the line when the client stopped"),
            "rows completed from an existing file": client_log.count("completing from the existing"),
            "warnings on non-poison rows, by reason": dict(other_reasons),
            "server requests served": dict(served),
            "server requests refused": dict(refused),
            "mails expected / received": f"{expected_mails} / {total_mails}",
            "mails missing": counts["mails missing"],
            "mails duplicated": counts["mails duplicated"],
            "mails sent from the outbox after a restart": client_log.count("left from before the restart"),
            "kills (server / client)": f"{kills['server']} / {kills['client']}",
            "daemon exits by themselves": kills["server-exit"] + kills["client-exit"],
            "line: bytes A->B / B->A": f"{link.get('a_to_b', {}).get('received', '?')} / "
                                       f"{link.get('b_to_a', {}).get('received', '?')}",
            "line: bits flipped": _sum(link, "flipped"),
            "line: bytes dropped": _sum(link, "dropped"),
            "line: stalls": _sum(link, "stalls"),
            "line: bytes lost (no reader)": _sum(link, "overflow_lost"),
            "frame resends after NAK (client / server)":
                f"{client_log.count('NAK received, resending')} / {server_log.count('NAK received, resending')}",
            "NAKs sent (client / server)":
                f"{client_log.count('sent NAK')} / {server_log.count('sent NAK')}",
            "client rounds ended by a link error": client_log.count("ended early: "),
            "exit codes at SIGTERM": codes,
            "wall time (s)": round(wall, 1),
            "requests/s (settled rows / wall)": round(len(rows) / wall, 2) if wall else 0,
        }
        for key in ("client log 'Traceback'", "client log 'Unhandled'", "server log 'Traceback'",
                    "server log 'Unhandled'", "linksim log 'Traceback'", "linksim log 'Unhandled'"):
            result.counts[key] = counts[key]
        result.counts["duplicate rows (first 10)"] = duplicate_rows[:10]
        webdb.close()
        ca.close()
        return result


def _crl_problems(rows: list[RowSpec], webdb: sqlite3.Connection, web: Path, signer: Path) -> list[str]:
    """The client's CRL files verify against their root and list every revoked row's serial."""
    problems = []
    crls = {}
    for rootcert, name in ((1, "revoke.crl"), (2, "class3-revoke.crl")):
        path = web / "www" / name
        if not path.exists():
            continue
        crl = x509.load_der_x509_crl(path.read_bytes())
        ca = x509.load_pem_x509_certificate((signer / "roots" / f"root{rootcert - 1}.crt").read_bytes())
        if not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
            problems.append(f"{name} does not verify against root {rootcert - 1}")
        crls[rootcert] = crl
    for row in rows:
        if row.table == "gpg":
            continue
        record = webdb.execute(f"SELECT rootcert, serial, revoked FROM {row.table} WHERE id = ?", (row.id,)).fetchone()
        if record["revoked"] in (ZERO, REVOKE_REQUESTED):
            continue
        published = crls.get(int(record["rootcert"]))
        if published is None or published.get_revoked_certificate_by_serial_number(int(record["serial"], 16)) is None:
            problems.append(f"{row.table} {row.id}: revoked but serial {record['serial']} not in the client's CRL")
    return problems


def _warning_reasons(log: str) -> set[str]:
    """``table id`` of every row the client logged a warning reason for."""
    found = set()
    for match in re.finditer(r"\b([a-z]+) (\d+): [^\n]*(?:warning count raised|counting a warning)", log):
        found.add(f"{match.group(1)} {match.group(2)}")
    return found


def _linksim_counters(log: Path) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                last = json.loads(line)
            except ValueError:
                pass
    return last


def _sum(link: dict[str, Any], key: str) -> Any:
    if not link:
        return "?"
    return link.get("a_to_b", {}).get(key, 0) + link.get("b_to_a", {}).get(key, 0)


def run_soak(settings: SoakSettings, out: IO[str] = sys.stdout) -> SoakResult:
    """Run one soak and return its result (nothing is asserted here)."""
    return Soak(settings, out).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.driver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kills", type=int, default=6, help="SIGKILL + restart per daemon")
    parser.add_argument("--flip-rate", type=float, default=1e-5)
    parser.add_argument("--drop-rate", type=float, default=0.0)
    parser.add_argument("--stall-rate", type=float, default=0.05, help="random stalls per second per direction")
    parser.add_argument("--stall-ms", type=float, default=400.0)
    parser.add_argument("--stall-at", action="append", default=[], metavar="T:DURATION",
                        help="a scheduled stall of both directions (repeatable)")
    parser.add_argument("--baud", type=int, default=115200, help="0 = unpaced")
    parser.add_argument("--revoke-share", type=float, default=0.08)
    parser.add_argument("--poison-share", type=float, default=0.03)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here (default: a temp dir)")
    args = parser.parse_args(argv)
    settings = SoakSettings(
        requests=args.requests, seed=args.seed, kills=args.kills, flip_rate=args.flip_rate,
        drop_rate=args.drop_rate, stall_rate=args.stall_rate, stall_ms=args.stall_ms,
        stall_at=tuple(args.stall_at), baud=args.baud,
        revoke_share=args.revoke_share, poison_share=args.poison_share, timeout=args.timeout,
        workdir=args.workdir,
    )
    result = run_soak(settings)
    print(result.render(), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
