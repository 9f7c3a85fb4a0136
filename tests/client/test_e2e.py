"""End to end: `twistd signer-client` and `twistd signer-server` over a pty pair, WebDB in MariaDB.

Pending rows of all five kinds plus a revocation end up signed/revoked, with
files on disk, rows updated and mails (in the member's language) received by
the in-process SMTP server. Both daemons are separate processes started the
way an operator starts them; the client is stopped with SIGTERM at the end and
must exit cleanly.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from tests.client.conftest import open_test_webdb
from tests.support.gpg import KeyMaker, short_tempdir
from tests.support.pty import pty_pair, socat_available
from tests.support.smtp import SMTPSink
from tests.support.testca import make_csr
from tests.support.webdb import REVOKE_REQUESTED, TestWebDB

pytestmark = [
    pytest.mark.mariadb,
    pytest.mark.skipif(not socat_available(), reason="socat is not installed"),
]

BIN = Path(sys.executable).parent


@inlineCallbacks
def wait_for(condition: Any, what: str, timeout: float, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            text = "\n".join(f"--- {p}\n{p.read_text()[-4000:]}" for p in logs if p.exists())
            raise AssertionError(f"timed out waiting for {what}\n{text}")
        yield deferLater(reactor, 0.1, lambda: None)


@pytest.fixture
def signer_dir(tmp_path: Path) -> tuple[Path, str]:
    directory = tmp_path / "signer"
    made = subprocess.run([str(BIN / "signer"), "init-test-signer", str(directory)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    fingerprint = re.search(r"OpenPGP CA key ([0-9A-F]{40})", made.stdout).group(1)  # type: ignore[union-attr]
    return directory, fingerprint


@pytest.fixture
def mariadb(tmp_path: Path) -> Iterator[TestWebDB]:
    db = open_test_webdb("mariadb", tmp_path)
    yield db
    db.drop()


CLIENT_CONFIG = """
[database]
driver = "mysql"
host = "{host}"
port = {port}
user = "{user}"
database = "{database}"

[link]
serial_config = "{serial}"
response_timeout = 60.0

[files]
csr_dir = "{base}/csr"
crt_dir = "{base}/crt"
crt_name_prefix = "../crt"
state_dir = "{base}/state"

[[roots]]
rootcert = 1
crl = "{base}/www/revoke.crl"
ca_certificate = "{signer}/roots/root0.crt"

[[roots]]
rootcert = 2
crl = "{base}/www/class3-revoke.crl"
ca_certificate = "{signer}/roots/root1.crt"

[polling]
interval = 0.3

[mail]
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
sender = "support@cacert.example"
timeout = 10.0

[openpgp]
ca_key_id = "{fingerprint}"
"""


def spkac_request() -> bytes:
    """A Netscape SPKAC request as ``openssl spkac`` makes it."""
    from cryptography.hazmat.primitives import serialization

    from tests.support.testca import rsa_key

    pem = rsa_key(2048, 26).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
    return subprocess.run(["openssl", "spkac", "-key", "/dev/stdin", "-challenge", "hello"],
                          input=pem, capture_output=True, check=True).stdout


def write_csr(base: Path, prefix: str, row_id: int, data: bytes) -> None:
    path = base / "csr" / prefix / str(row_id // 1000) / f"{prefix}-{row_id}.csr"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def crt(base: Path, prefix: str, row_id: int) -> Path:
    return base / "crt" / prefix / str(row_id // 1000) / f"{prefix}-{row_id}.crt"


@pytest_twisted.inlineCallbacks
def test_all_five_kinds_and_a_revocation(tmp_path: Path, signer_dir: tuple[Path, str], mariadb: TestWebDB,
                                         smtp_sink: SMTPSink) -> None:
    """The daemons sign five kinds (plus an SPKAC request), revoke one, update MariaDB, write files, mail in de/en, stop on SIGTERM."""
    signer, fingerprint = signer_dir
    base = tmp_path / "web"
    (base / "www").mkdir(parents=True)
    db = mariadb
    db.add_user(10, "anna@example.org", "Anna", "de_DE")
    db.add_user(11, "bob@example.org", "Bob", "en_US")
    db.add_points(10, 100)
    db.add_domain(5, 11, "example.org")
    db.add_org_admin(7, 10)
    db.add_cert("emailcerts", 1, 10, "/CN=Anna Example/emailAddress=anna@example.org", cn="anna@example.org")
    db.add_cert("domaincerts", 2, 5,
                "/CN=www.example.org/subjectAltName=DNS:www.example.org/subjectAltName=DNS:example.org",
                cn="www.example.org", rootcert=2, md="sha512")
    db.add_cert("orgemailcerts", 3, 7, "/CN=Org Person/O=Example Org/emailAddress=op@example.org", cn="op@example.org")
    db.add_cert("orgdomaincerts", 4, 7, "/CN=org.example.org/O=Example Org", cn="org.example.org")
    db.add_cert("emailcerts", 6, 10, "/CN=Anna Spkac/emailAddress=anna@example.org", cn="anna@example.org",
                keytype="NS")
    db.add_gpg(1, 11, "bob@example.org")
    write_csr(base, "client", 1, make_csr("Anna Example", index=21))
    write_csr(base, "server", 2, make_csr("www.example.org", index=22))
    write_csr(base, "orgclient", 3, make_csr("Org Person", index=23))
    write_csr(base, "orgserver", 4, make_csr("org.example.org", index=24))
    write_csr(base, "client", 6, spkac_request())
    keys_home = short_tempdir("sge2e")
    maker = KeyMaker(keys_home / "h")
    key = maker.make("Bob Example <bob@example.org>")
    maker.close()
    write_csr(base, "gpg", 1, key.armored)

    server_log, client_log = tmp_path / "server.log", tmp_path / "client.log"
    logs = [server_log, client_log]
    with pty_pair() as pair:
        server_serial = tmp_path / "server-serial.conf"
        server_serial.write_text(f'[serial]\ndevice = "{pair.b}"\n')
        client_serial = tmp_path / "client-serial.conf"
        client_serial.write_text(f'[serial]\ndevice = "{pair.a}"\n')
        config = tmp_path / "signer-client.toml"
        config.write_text(CLIENT_CONFIG.format(
            host=db.config.host, port=db.config.port, user=db.config.user, database=db.config.database,
            serial=client_serial, base=base, signer=signer, smtp_port=smtp_sink.port, fingerprint=fingerprint,
        ))
        with server_log.open("wb") as out:
            server = subprocess.Popen(
                [str(BIN / "twistd"), "-n", "--pidfile=", "--logfile", "-", "signer-server",
                 "--config", str(signer / "signer-server.toml"), "--serial-config", str(server_serial)],
                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        client = None
        try:
            yield wait_for(lambda: "serving on" in server_log.read_text(), "server start", 30, logs)
            with client_log.open("wb") as out:
                client = subprocess.Popen(
                    [str(BIN / "twistd"), "-n", "--pidfile=", "--logfile", "-", "signer-client",
                     "--config", str(config)],
                    cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)

            def all_signed() -> bool:
                done = [db.row(t, i)["crt_name"] for t, i in
                        (("emailcerts", 1), ("domaincerts", 2), ("orgemailcerts", 3), ("orgdomaincerts", 4),
                         ("emailcerts", 6))]
                return all(done) and bool(db.row("gpg", 1)["crt"])

            yield wait_for(all_signed, "all five rows signed", 90, logs)
            db.execute("UPDATE emailcerts SET revoked = ? WHERE id = 1", (REVOKE_REQUESTED,))
            yield wait_for(lambda: db.row("emailcerts", 1)["revoked"] != REVOKE_REQUESTED, "revocation", 60, logs)
            yield wait_for(lambda: len(smtp_sink.messages) >= 7, "seven mails", 30, logs)
        finally:
            if client is not None and client.poll() is None:
                client.send_signal(signal.SIGTERM)
                client_rc = client.wait(timeout=60)
            else:
                client_rc = None
            server.terminate()
            server.wait(timeout=30)
    client_text = client_log.read_text()
    # twistd re-raises the SIGTERM after a clean shutdown so the exit status tells why it ended
    assert client_rc in (0, -signal.SIGTERM), client_text[-4000:]
    assert "Server Shut Down." in client_text and "Serial line closed" in client_text
    assert "Traceback" not in client_text, client_text[-4000:]
    assert "Serial line open" in client_text and "WebDB reached" in client_text

    # files and rows
    for table, row_id, prefix, root in (("emailcerts", 1, "client", 0), ("domaincerts", 2, "server", 1),
                                         ("orgemailcerts", 3, "orgclient", 0), ("orgdomaincerts", 4, "orgserver", 0),
                                         ("emailcerts", 6, "client", 0)):
        row = db.row(table, row_id)
        certificate = x509.load_pem_x509_certificate(crt(base, prefix, row_id).read_bytes())
        assert row["crt_name"] == f"../crt/{prefix}/0/{prefix}-{row_id}.crt"
        assert int(row["serial"], 16) == certificate.serial_number and len(row["serial"]) % 2 == 0
        assert row["expire"] == certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S")
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(signer / "roots" / f"root{root}.crt"),
                                 str(crt(base, prefix, row_id))], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    server_cert = x509.load_pem_x509_certificate(crt(base, "server", 2).read_bytes())
    san = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["example.org", "www.example.org"]
    gpg_row = db.row("gpg", 1)
    assert gpg_row["crt"] == "../crt/gpg/0/gpg-1.crt" and gpg_row["expire"] != "0000-00-00 00:00:00"
    assert crt(base, "gpg", 1).read_bytes().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")

    # the revocation: CRL of root 0 verified, listing the serial
    revoked_serial = int(db.row("emailcerts", 1)["serial"], 16)
    root0 = x509.load_pem_x509_certificate((signer / "roots" / "root0.crt").read_bytes())
    crl = x509.load_der_x509_crl((base / "www" / "revoke.crl").read_bytes())
    assert crl.is_signature_valid(root0.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(revoked_serial) is not None
    assert x509.load_der_x509_crl((base / "www" / "class3-revoke.crl").read_bytes()).issuer == server_cert.issuer

    spkac_cert = x509.load_pem_x509_certificate(crt(base, "client", 6).read_bytes())
    assert "CN=Anna Spkac" in spkac_cert.subject.rfc4514_string()

    # mails: Anna (de) gets her two client certs, the org certs (admin) and the revocation; Bob (en) server + gpg
    anna = smtp_sink.to("anna@example.org")
    bob = smtp_sink.to("bob@example.org")
    assert sorted(m.subject for m in bob) == ["[CAcert.org] Your GPG/PGP Key", "[CAcert.org] Your certificate"]
    assert all(m.subject == "[CAcert.org] Ihr Zertifikat" for m in anna) and len(anna) == 5
    assert any("widerrufen" in m.body and db.row("emailcerts", 1)["serial"] in m.body for m in anna)
    assert list((base / "state" / "outbox").iterdir()) == []  # every held mail went out
