"""End to end: the `signer` CLI against a running `twistd signer-server` over a pty pair.

Both sides are separate processes and the line is a real socat pseudo-terminal
pair: this is what an operator does to rehearse a deployment.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.server.conftest import Signer
from tests.support.gpg import KeyMaker, check_sigs, short_tempdir
from tests.support.pty import socat_available
from tests.support.testca import make_csr
from tests.support.x509_requests import broken_signature_csr

pytestmark = pytest.mark.skipif(not socat_available(), reason="socat is not installed")


def test_ping(signer: Signer) -> None:
    """A NUL round trip succeeds and prints its time."""
    result = signer.cli("ping", "--count", "3")
    assert result.returncode == 0, result.stderr
    assert "median" in result.stdout


def test_client_certificate(signer: Signer, tmp_path: Path) -> None:
    """A client certificate on root 0 is issued, verifies against root 0 and is recorded."""
    csr = tmp_path / "client.csr"
    csr.write_bytes(make_csr("Alice Example", email="alice@example.org", index=11))
    out = tmp_path / "client.crt"
    result = signer.cli(
        "sign-x509", "--csr", csr, "--subject", "/CN=Alice Example/emailAddress=alice@example.org",
        "--root", "0", "--profile", "client", "--digest", "sha256", "--days", "365", "--out", out,
    )
    assert result.returncode == 0, result.stderr
    certificate = x509.load_pem_x509_certificate(out.read_bytes())
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@example.org"]
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(signer.directory / "roots" / "root0.crt"), str(out)],
        capture_output=True, text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"{certificate.serial_number:X}" in signer.log_text()


def test_server_certificate_with_sans(signer: Signer, tmp_path: Path) -> None:
    """A server certificate on root 1 carries exactly the SANs that were asked for."""
    csr = tmp_path / "server.csr"
    csr.write_bytes(make_csr("www.example.org", index=12))
    out = tmp_path / "server.crt"
    result = signer.cli(
        "sign-x509", "--csr", csr, "--subject", "/CN=www.example.org",
        "--san", "DNS:www.example.org,DNS:example.org", "--root", "1", "--profile", "server",
        "--digest", "sha256", "--days", "730", "--out", out,
    )
    assert result.returncode == 0, result.stderr
    certificate = x509.load_pem_x509_certificate(out.read_bytes())
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["www.example.org", "example.org"]
    root1 = x509.load_pem_x509_certificate((signer.directory / "roots" / "root1.crt").read_bytes())
    certificate.verify_directly_issued_by(root1)


def test_openpgp_certification(signer: Signer) -> None:
    """A user's key comes back carrying a certification by the test signer's OpenPGP CA key."""
    home = short_tempdir()
    maker = KeyMaker(home)
    try:
        user = maker.make("E2E User <e2e@example.org>")
        key_file = home / "user.asc"
        key_file.write_bytes(user.armored)
        out = home / "signed.asc"
        result = signer.cli("sign-openpgp", "--key", key_file, "--out", out)
        assert result.returncode == 0, result.stderr
        ca_public = subprocess.run(
            ["gpg", "--homedir", str(signer.directory / "gnupg"), "--export", "--armor"],
            capture_output=True, check=True,
        ).stdout
        fingerprint = next(
            line.split('"')[1]
            for line in (signer.directory / "signer-server.toml").read_text().splitlines()
            if line.startswith("key_id")
        )
        listings = check_sigs(out.read_bytes(), ca_public)
        assert [listing.fingerprint for listing in listings] == [user.fingerprint]
        for uid in listings[0].uids:
            by_ca = [c for c in uid.certifications if c.made_by(fingerprint)]
            assert by_ca, f"user ID {uid.raw!r} carries no certification by the CA key"
            assert all(c.check == "!" for c in by_ca), "the CA certification does not verify"
    finally:
        maker.close()
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def test_revocation_then_delta(signer: Signer, tmp_path: Path) -> None:
    """Unknown CRL hash: the full CRL; known hash: a patch (or smaller DER) giving the new CRL."""
    csr = tmp_path / "victim.csr"
    csr.write_bytes(make_csr("victim.example.org", index=13))
    cert = tmp_path / "victim.crt"
    assert signer.cli(
        "sign-x509", "--csr", csr, "--subject", "/CN=victim.example.org", "--root", "1",
        "--profile", "server", "--digest", "sha256", "--days", "30", "--out", cert,
    ).returncode == 0
    crl = tmp_path / "root1.crl"
    ca = signer.directory / "roots" / "root1.crt"
    first = signer.cli("revoke", "--root", "1", "--crl", crl, "--apply", "--ca-cert", ca)
    assert first.returncode == 0, first.stderr
    serial = x509.load_pem_x509_certificate(cert.read_bytes()).serial_number
    revoked = x509.load_der_x509_crl(crl.read_bytes())
    assert revoked.get_revoked_certificate_by_serial_number(serial) is None  # not yet: no cert sent
    second = signer.cli("revoke", "--root", "1", "--crl", crl, "--cert", cert, "--out", tmp_path / "answer")
    assert second.returncode == 0, second.stderr
    answer = (tmp_path / "answer").read_bytes()
    # The hash is known now: the answer is an xdelta patch, or the DER CRL when
    # that is smaller; never PEM. Apply it the way the legacy client does.
    assert not answer.startswith(b"-----BEGIN"), answer[:40]
    if answer.startswith(b"%XDZ004%"):
        patched = tmp_path / "patched.crl"
        subprocess.run(
            ["xdelta", "patch", str(tmp_path / "answer"), str(crl), str(patched)], check=False
        )
        new = x509.load_der_x509_crl(patched.read_bytes())
    else:
        new = x509.load_der_x509_crl(answer)
    assert new.get_revoked_certificate_by_serial_number(serial) is not None
    root1 = x509.load_pem_x509_certificate(ca.read_bytes())
    assert new.is_signature_valid(root1.public_key())


@pytest.mark.parametrize(
    "args",
    [
        ("--subject", "/CN=bad#name", "--root", "0", "--profile", "client"),
        ("--subject", "/CN=x", "--root", "7", "--profile", "client"),
        ("--subject", "/CN=x", "--root", "0", "--profile", "client", "--digest", "md5"),
    ],
    ids=["forbidden-character", "unknown-root", "md5"],
)
def test_refusals_answer_empty_and_server_keeps_serving(
    signer: Signer, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """A refused request gets an empty answer (exit 3), a log line, and the next ping works."""
    csr = tmp_path / "r.csr"
    csr.write_bytes(make_csr("x", index=14))
    command = ["sign-x509", "--csr", csr, "--days", "30", *args]
    if "--digest" not in args:
        command += ["--digest", "sha256"]
    result = signer.cli(*command)
    assert result.returncode == 3, (result.returncode, result.stderr)
    assert signer.cli("ping").returncode == 0


def test_broken_csr_signature_refused_then_served(signer: Signer, tmp_path: Path) -> None:
    """A CSR with a broken signature is refused with a logged reason; the server stays up."""
    csr = tmp_path / "broken.csr"
    csr.write_bytes(broken_signature_csr())
    before = signer.log_text().count("refused")
    result = signer.cli(
        "sign-x509", "--csr", csr, "--subject", "/CN=x", "--root", "0", "--profile", "client",
        "--digest", "sha256", "--days", "30",
    )
    assert result.returncode == 3
    deadline = time.monotonic() + 5
    while signer.log_text().count("refused") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert signer.log_text().count("refused") > before
    assert "Traceback" not in signer.log_text()
    assert signer.cli("ping").returncode == 0
