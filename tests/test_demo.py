"""`python -m signer.demo` (what `make demo` runs), end to end, as a user runs it.

The demo starts `signer linksim`, `twistd signer-server` and `twistd
signer-client` as real processes; these tests check its results
independently of the demo's own checks: counts in summary.json, every listed
file on disk, certificates verified against the demo roots with cryptography
and `openssl verify`, the revoked serial on a CRL signed by its root, the
OpenPGP key certified by the demo CA key (checked with gpg), the WebDB rows
updated, the mails (one in German), clean daemon stops, a clean restart.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from signer.server.openpgp import Gpg
from tests.support.gpg import check_sigs

pytestmark = pytest.mark.skipif(
    shutil.which("gpg") is None or shutil.which("xdelta") is None, reason="gpg and xdelta are needed"
)


def run_demo(out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "signer.demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    done = run_demo(out)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, json.loads((out / "summary.json").read_text()), done.stdout


def test_counts_and_printed_summary(demo: tuple[Path, dict[str, Any], str]) -> None:
    """summary.json has the expected counts, nothing failed, and the printed summary says so."""
    out, summary, stdout = demo
    assert (summary["signed_x509"], summary["signed_openpgp"], summary["revoked"], summary["failed"]) == (3, 1, 1, 0)
    assert summary["ok"] is True and summary["verified"] is True and summary["problems"] == []
    assert 0 < summary["wall_time_seconds"] < 60
    assert "signed X.509    3" in stdout and "revoked         1" in stdout and "failed          0" in stdout
    assert str(out / "summary.json") in stdout


def test_every_listed_file_exists(demo: tuple[Path, dict[str, Any], str]) -> None:
    """Each path in "files" exists and the list covers certificates, key, CRLs and mails."""
    out, summary, _ = demo
    files = [Path(p) for p in summary["files"]]
    assert files and all(p.is_file() for p in files), [p for p in files if not p.is_file()]
    assert sum(p.suffix == ".crt" for p in files) == 5  # 3 signed, 1 OpenPGP, 1 revoked
    assert sum(p.suffix == ".crl" for p in files) == 2
    assert sum(p.suffix == ".eml" for p in files) == 5
    assert all(out in p.parents for p in files)


def test_certificates_verify_against_the_demo_roots(demo: tuple[Path, dict[str, Any], str]) -> None:
    """Every X.509 certificate (signed and revoked) verifies against its root, by signature and openssl."""
    out, summary, _ = demo
    entries = summary["certificates"] + summary["revocations"]
    assert len(entries) == 4
    for entry in entries:
        root_path = out / "ca" / "roots" / f"root{entry['rootcert'] - 1}.crt"
        certificate = x509.load_pem_x509_certificate(Path(entry["path"]).read_bytes())
        certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(root_path.read_bytes()))
        assert certificate.serial_number == int(entry["serial"], 16)
        if shutil.which("openssl"):
            checked = subprocess.run(["openssl", "verify", "-CAfile", str(root_path), entry["path"]],
                                     capture_output=True, text=True)
            assert checked.returncode == 0, checked.stdout + checked.stderr
    server = next(e for e in summary["certificates"] if e["table"] == "domaincerts")
    assert server["rootcert"] == 2
    san = x509.load_pem_x509_certificate(Path(server["path"]).read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["example.org", "www.example.org"]


def test_revoked_serial_is_on_the_verified_crl(demo: tuple[Path, dict[str, Any], str]) -> None:
    """The revoked certificate's serial is on root 0's DER CRL, whose signature verifies; root 1's CRL too."""
    out, summary, _ = demo
    (revocation,) = summary["revocations"]
    for rootcert, name in ((1, "revoke.crl"), (2, "class3-revoke.crl")):
        crl = x509.load_der_x509_crl((out / "web" / "www" / name).read_bytes())
        root = x509.load_pem_x509_certificate((out / "ca" / "roots" / f"root{rootcert - 1}.crt").read_bytes())
        assert crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
        listed = crl.get_revoked_certificate_by_serial_number(int(revocation["serial"], 16))
        assert (listed is not None) == (rootcert == 1)


def test_openpgp_key_certified_by_the_demo_ca(demo: tuple[Path, dict[str, Any], str]) -> None:
    """The signed OpenPGP key carries a good certification made by the demo CA key."""
    out, summary, _ = demo
    (key,) = summary["openpgp_keys"]
    server_config = (out / "ca" / "signer-server.toml").read_text()
    fingerprint = server_config.split('key_id = "')[1].split('"')[0]
    ca_public = Gpg(out / "ca" / "gnupg").run(["--armor", "--export", fingerprint]).stdout
    listing = check_sigs(Path(key["path"]).read_bytes(), ca_public)
    assert any(c.made_by(fingerprint) and c.check == "!"
               for k in listing for uid in k.uids for c in uid.certifications)


def test_webdb_rows_updated(demo: tuple[Path, dict[str, Any], str]) -> None:
    """The sqlite WebDB shows what the client wrote: crt_name/serial, gpg crt, revoked = NOW()."""
    out, summary, _ = demo
    db = sqlite3.connect(out / "webdb.sqlite")
    try:
        for entry in summary["certificates"]:
            crt_name, serial = db.execute(f"SELECT crt_name, serial FROM {entry['table']} WHERE id = ?",
                                          (entry["id"],)).fetchone()
            assert crt_name.startswith("../crt/") and serial == entry["serial"]
        assert db.execute("SELECT crt FROM gpg WHERE id = 1").fetchone()[0] == "../crt/gpg/0/gpg-1.crt"
        (revoked,) = db.execute("SELECT revoked FROM emailcerts WHERE id = 1").fetchone()
        assert revoked not in ("1970-01-01 10:00:01", "0000-00-00 00:00:00")
    finally:
        db.close()


def test_mails_written_one_in_german(demo: tuple[Path, dict[str, Any], str]) -> None:
    """Five mails were saved as .eml files; Anna's are German, Bob's revocation notice names the serial."""
    out, summary, _ = demo
    saved = sorted((out / "mail").glob("*.eml"))
    assert [p.name for p in saved] == [f"{n:03d}.eml" for n in range(1, 6)]
    messages = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in saved]
    anna = [m for m in messages if m["To"] == "anna@example.org"]
    assert "[CAcert.org] Ihr Zertifikat" in [m["Subject"] for m in anna]
    assert all("Hallo Anna" in m.get_body(("plain",)).get_content() for m in anna)  # type: ignore[union-attr]
    (revocation,) = summary["revocations"]
    bob = [m.get_body(("plain",)).get_content() for m in messages if m["To"] == "bob@example.org"]  # type: ignore[union-attr]
    assert any(revocation["serial"] in body for body in bob)


def test_daemons_stopped_cleanly(demo: tuple[Path, dict[str, Any], str]) -> None:
    """linksim, server and client stopped on SIGTERM without a traceback; their logs are in logs/."""
    out, summary, _ = demo
    assert [d["name"] for d in summary["daemons"]] == ["linksim", "signer-server", "signer-client"]
    assert all(d["clean_stop"] for d in summary["daemons"]), summary["daemons"]
    server_log = (out / "logs" / "signer-server.log").read_text()
    client_log = (out / "logs" / "signer-client.log").read_text()
    assert "serving on" in server_log and "Server Shut Down." in server_log
    assert "Serial line open" in client_log and "Serial line closed" in client_log
    assert "Traceback" not in server_log + client_log


def test_rerun_starts_clean(tmp_path: Path) -> None:
    """A second run removes what the first left (and anything added) and gets the same counts."""
    out = tmp_path / "out"
    first = run_demo(out)
    assert first.returncode == 0, first.stdout + first.stderr
    (out / "stale.txt").write_text("left over")
    (out / "mail" / "999.eml").write_text("left over")
    second = run_demo(out)
    assert second.returncode == 0, second.stdout + second.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["signed_x509"], summary["signed_openpgp"], summary["revoked"], summary["failed"]) == (3, 1, 1, 0)
    assert not (out / "stale.txt").exists() and len(list((out / "mail").glob("*.eml"))) == 5


def test_refuses_to_remove_a_foreign_folder(tmp_path: Path) -> None:
    """A non-empty folder the demo did not make is left alone (exit status 2)."""
    (tmp_path / "precious.txt").write_text("keep me")
    done = run_demo(tmp_path)
    assert done.returncode == 2 and "not removing it" in done.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_missing_tools_named_with_the_apt_command(tmp_path: Path) -> None:
    """Without gpg and xdelta on PATH the demo stops at once, naming them and the apt-get command."""
    empty = tmp_path / "bin"
    empty.mkdir()
    done = run_demo(tmp_path / "out", env=dict(os.environ, PATH=str(empty)))
    assert done.returncode == 2
    assert "gpg and xdelta not installed" in done.stderr and "apt-get install gnupg xdelta" in done.stderr
    assert not (tmp_path / "out").exists()
