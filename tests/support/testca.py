"""Throw-away X.509 material for tests: CA roots, end-entity keys, CSRs."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from signer.server.testsigner import self_signed_root


@dataclass(frozen=True)
class TestRoot:
    """A self-signed CA certificate and its private key."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@lru_cache(maxsize=None)
def rsa_key(bits: int = 2048, index: int = 0) -> rsa.RSAPrivateKey:
    """An RSA key, cached per (bits, index) so a test run generates each once."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@lru_cache(maxsize=None)
def make_root(name: str = "Signer Test Root 0", bits: int = 2048) -> TestRoot:
    """A self-signed CA root valid from yesterday for ten years."""
    key = rsa_key(bits, hash(name) & 0xFFFF)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Signer Test CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = self_signed_root(
        key, subject, now - datetime.timedelta(days=1), datetime.timedelta(days=3651)
    )
    return TestRoot(certificate, key)


def make_csr(
    common_name: str = "www.example.org",
    bits: int = 2048,
    index: int = 1,
    email: str | None = None,
) -> bytes:
    """A PEM PKCS#10 request signed by a (cached) RSA key."""
    key = rsa_key(bits, index)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if email:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)
