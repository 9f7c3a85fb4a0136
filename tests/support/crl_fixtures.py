"""Helpers for CA database, CRL and revocation tests: leaf certificates, the
legacy client's CRL procedure, ``openssl crl`` verification, bulk revoked rows."""

from __future__ import annotations

import datetime
import hashlib
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from signer.server.cadb import STATUS_REVOKED, CertificateRecord
from tests.support.testca import TestRoot, rsa_key

UTC = datetime.timezone.utc
XDELTA = "/usr/bin/xdelta"


def issue(
    root: TestRoot,
    serial: int | None = None,
    *,
    common_name: str = "leaf.example.org",
    not_before: datetime.datetime | None = None,
    days: int = 365,
) -> x509.Certificate:
    """An end-entity certificate signed by ``root`` (a cached leaf key)."""
    start = not_before or datetime.datetime.now(UTC) - datetime.timedelta(hours=1)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(root.certificate.subject)
        .public_key(rsa_key(2048, 7).public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(root.key, hashes.SHA256())
    )


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@lru_cache(maxsize=None)
def make_ec_root(name: str = "Signer Test EC Root") -> TestRoot:
    """A self-signed P-256 CA (the key type field is typed RSA in TestRoot; duck-typed)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return TestRoot(certificate, key)  # type: ignore[arg-type]


def openssl_verify_crl(der: bytes, ca: x509.Certificate) -> subprocess.CompletedProcess[str]:
    """``openssl crl -inform DER -CAfile ca.pem -noout`` on ``der`` (stderr says verify OK)."""
    with tempfile.TemporaryDirectory(prefix="crl-verify-") as directory:
        crl_path = Path(directory, "crl.der")
        ca_path = Path(directory, "ca.pem")
        crl_path.write_bytes(der)
        ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        return subprocess.run(
            ["openssl", "crl", "-inform", "DER", "-in", str(crl_path), "-CAfile", str(ca_path), "-noout"],
            capture_output=True,
            text=True,
            timeout=60,
        )


def xdelta_patch_cli(patch: bytes, old: bytes) -> bytes | None:
    """``xdelta patch PATCH OLD NEW`` run directly; the new file, or None when it fails."""
    with tempfile.TemporaryDirectory(prefix="xdelta-cli-") as directory:
        Path(directory, "patch").write_bytes(patch)
        Path(directory, "old.crl").write_bytes(old)
        result = subprocess.run(
            [XDELTA, "patch", "patch", "old.crl", "new.crl"],
            cwd=directory,
            capture_output=True,
            timeout=60,
        )
        if result.returncode != 0:
            return None
        return Path(directory, "new.crl").read_bytes()


def legacy_client_apply(answer: bytes, current: bytes) -> bytes:
    """What the legacy client makes of a revoke answer, given its current CRL file.

    A PEM CRL is taken as is (converted to DER); anything else is first tried
    as an xdelta patch against the current file and, if that fails, taken as
    a DER CRL (protocol.md / client.md).
    """
    if answer.startswith(b"-----BEGIN X509 CRL-----"):
        return x509.load_pem_x509_crl(answer).public_bytes(serialization.Encoding.DER)
    patched = xdelta_patch_cli(answer, current)
    return patched if patched is not None else answer


def sha1_hex(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def revoked_records(
    root: int,
    count: int,
    *,
    first_serial: int = 1 << 100,
    step: int = 7919,
    revoked_at: datetime.datetime,
    not_after: datetime.datetime,
) -> Iterator[CertificateRecord]:
    """``count`` revoked certificate rows (no DER) for bulk inserts."""
    for index in range(count):
        yield CertificateRecord(
            root=root,
            serial=first_serial + index * step,
            subject=f"CN=bulk {index}",
            not_after=not_after,
            status=STATUS_REVOKED,
            revoked_at=revoked_at,
        )


OPENSSL_CA_CONFIG = """\
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
default_days = 365
default_crl_days = 7
policy = policy_any
unique_subject = no
copy_extensions = none
[ policy_any ]
commonName = supplied
emailAddress = optional
"""


def run_openssl(*args: str, cwd: Path) -> None:
    """Runs openssl with ``args`` in ``cwd``; fails loudly with its stderr."""
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {result.stderr}")


def make_openssl_ca(directory: Path, names: list[str]) -> Path:
    """A real `openssl ca` database in ``directory`` that issued one certificate per name.

    Serials start at 0x1000. Returns the config file path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "newcerts").mkdir()
    (directory / "index.txt").write_text("")
    (directory / "serial").write_text("1000\n")
    (directory / "crlnumber").write_text("05\n")
    config = directory / "ca.cnf"
    config.write_text(OPENSSL_CA_CONFIG.format(dir=directory))
    key = rsa_key(2048, 11)
    (directory / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    run_openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem",
        "-subj", "/CN=OpenSSL Import Test CA", "-days", "3650", cwd=directory,
    )
    leaf_key = directory / "leaf.key"
    leaf_key.write_bytes(
        rsa_key(2048, 12).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for name in names:
        run_openssl(
            "req", "-new", "-key", "leaf.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}/emailAddress={name}@example.org", cwd=directory,
        )
        run_openssl(
            "ca", "-batch", "-config", str(config), "-in", f"{name}.csr", "-out", f"{name}.pem",
            cwd=directory,
        )
    return config
