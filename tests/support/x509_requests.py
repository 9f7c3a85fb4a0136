"""Certificate requests for the X.509 CA tests: good, weak and broken ones.

PKCS#10 CSRs come from :mod:`tests.support.testca`; this module adds CSRs
with a damaged signature, CSRs with extensions the CA must ignore, EC CSRs,
and Netscape SPKACs built from scratch with asn1crypto + cryptography (signed
with MD5 like the browsers did, with SHA-256, or with a broken signature).
"""

from __future__ import annotations

import base64
import datetime
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from asn1crypto import algos, core, keys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from signer.protocol.codec import SignX509Request
from signer.server.config import LoadedRoot, RootConfig
from signer.server.spkac import PublicKeyAndChallenge, SignedPublicKeyAndChallenge
from tests.support.testca import make_root, rsa_key

#: A fixed instant for deterministic validity checks.
NOW = datetime.datetime(2026, 12, 4, 20, 0, 0, tzinfo=datetime.timezone.utc)


def csr_der(pem: bytes) -> bytes:
    """The DER form of a PEM CSR."""
    return x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)


def broken_signature_csr(common_name: str = "www.example.org") -> bytes:
    """A well-formed PEM CSR whose signature does not verify (last byte flipped)."""
    from tests.support.testca import make_csr

    der = bytearray(csr_der(make_csr(common_name)))
    der[-1] ^= 0x01
    return _pem("CERTIFICATE REQUEST", bytes(der))


def tampered_subject_csr() -> bytes:
    """A CSR whose signed subject was changed after signing (one CN byte altered)."""
    from tests.support.testca import make_csr

    der = csr_der(make_csr("www.example.org"))
    tampered = der.replace(b"www.example.org", b"www.example.com", 1)
    assert tampered != der
    return _pem("CERTIFICATE REQUEST", tampered)


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode()


def csr_with_extensions(common_name: str = "evil.example.org") -> bytes:
    """A CSR asking for CA:TRUE and a SAN: the CA must copy neither."""
    key = rsa_key(2048, 1)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("bank.example.com")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


@lru_cache(maxsize=None)
def ec_key(curve_name: str = "secp256r1") -> ec.EllipticCurvePrivateKey:
    """A cached EC key on the named curve."""
    curve = {"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1(), "secp192r1": ec.SECP192R1()}[
        curve_name
    ]
    return ec.generate_private_key(curve)


def ec_csr(curve_name: str = "secp256r1", common_name: str = "ec.example.org") -> bytes:
    """A PEM CSR with an EC key."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(ec_key(curve_name), hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def spkac_der(
    key: rsa.RSAPrivateKey | None = None,
    digest: str = "md5",
    challenge: str = "test-challenge",
    break_signature: bool = False,
) -> bytes:
    """A DER SignedPublicKeyAndChallenge signed with RSA PKCS#1 v1.5."""
    key = key or rsa_key(2048, 3)
    spki = keys.PublicKeyInfo.load(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    signed = PublicKeyAndChallenge({"spki": spki, "challenge": challenge})
    tbs = signed.dump()
    algorithm = {"md5": hashes.MD5(), "sha1": hashes.SHA1(), "sha256": hashes.SHA256()}[digest]
    signature = key.sign(tbs, padding.PKCS1v15(), algorithm)
    if break_signature:
        signature = bytes([signature[0] ^ 0x40]) + signature[1:]
    return SignedPublicKeyAndChallenge(
        {
            "public_key_and_challenge": signed,
            "signature_algorithm": algos.SignedDigestAlgorithm(
                {"algorithm": f"{digest}_rsa", "parameters": core.Null()}
            ),
            "signature": core.OctetBitString(signature),
        }
    ).dump()


def spkac_text(
    lines: Sequence[str] = ("CN=Bob Builder", "emailAddress=bob@example.org"),
    separator: str = " = ",
    **kwargs: object,
) -> bytes:
    """An SPKAC request as the legacy client sends it: DN lines then ``SPKAC = ...``."""
    der = spkac_der(**kwargs)  # type: ignore[arg-type]
    encoded = base64.b64encode(der).decode("ascii")
    return ("\n".join([*lines, f"SPKAC{separator}{encoded}"]) + "\n").encode()


def loaded_roots(
    urls: dict[int, str] | None = None, ocsp: str = "http://ocsp.cacert.org/"
) -> dict[int, LoadedRoot]:
    """Roots 0 and 1 of :func:`tests.support.testca.make_root` as loaded roots."""
    urls = urls or {
        0: "http://crl.cacert.org/revoke.crl",
        1: "http://crl.cacert.org/class3-revoke.crl",
    }
    roots = {}
    for index, url in urls.items():
        root = make_root(f"Signer Test Root {index}")
        config = RootConfig(index, Path(f"root{index}.crt"), Path(f"root{index}.key"), url, ocsp)
        roots[index] = LoadedRoot(index, root.certificate, root.key, config)
    return roots


def sign_request(
    csr: bytes,
    subject: bytes = b"/CN=www.example.org",
    san: bytes = b"",
    root: int = 0,
    profile: int = 5,
    digest: int = 8,
    days: int = 365,
    keytype: int = 0,
) -> SignX509Request:
    """A SignX509Request with test defaults (server profile, sha256, 365 days)."""
    return SignX509Request(
        csr=csr, subject=subject, san=san, root=root, profile=profile, digest=digest, days=days,
        keytype=keytype,
    )
