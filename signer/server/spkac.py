"""Netscape SPKAC requests (the HTML ``<keygen>`` element's output).

The request text is what ``openssl ca -spkac`` reads: ``name=value`` lines,
one of them ``SPKAC=<base64 DER>``, the others subject attributes such as
``CN=Bob Builder`` or ``emailAddress=bob@example.org`` (a prefix up to the
first ``.``, ``:`` or ``,`` is dropped, so ``0.OU=`` and ``1.OU=`` give two
OUs, as in OpenSSL). White space around ``=`` is allowed; blank lines and
``#`` comments are skipped.

The DER structure (no type for it ships with asn1crypto)::

    PublicKeyAndChallenge ::= SEQUENCE {
        spki       SubjectPublicKeyInfo,
        challenge  IA5String }
    SignedPublicKeyAndChallenge ::= SEQUENCE {
        publicKeyAndChallenge  PublicKeyAndChallenge,
        signatureAlgorithm     AlgorithmIdentifier,
        signature              BIT STRING }

The signature over the DER of ``publicKeyAndChallenge`` is verified with the
embedded key. Browsers signed with MD5, so MD5 (and SHA-1) are accepted here:
the signature only proves possession of the key; the certificate itself is
signed with the CA's digest. The challenge is returned but not checked (the
legacy server did not either).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from asn1crypto import algos, core, keys
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from signer.server.errors import RequestRefused

__all__ = [
    "PublicKeyAndChallenge",
    "SignedPublicKeyAndChallenge",
    "SPKACRequest",
    "is_spkac",
    "parse_spkac",
    "verify_spkac",
]


class PublicKeyAndChallenge(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """The signed part of an SPKAC."""

    _fields = [
        ("spki", keys.PublicKeyInfo),
        ("challenge", core.IA5String),
    ]


class SignedPublicKeyAndChallenge(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """A Netscape SPKAC."""

    _fields = [
        ("public_key_and_challenge", PublicKeyAndChallenge),
        ("signature_algorithm", algos.SignedDigestAlgorithm),
        ("signature", core.OctetBitString),
    ]


@dataclass(frozen=True)
class SPKACRequest:
    """A verified SPKAC request: the key, and the subject lines beside it."""

    public_key: PublicKeyTypes
    challenge: str
    signature_hash: str
    subject_pairs: tuple[tuple[str, str], ...]


_MARKER = re.compile(rb"(?m)^[ \t]*SPKAC[ \t]*=")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def is_spkac(data: bytes) -> bool:
    """True when ``data`` holds an ``SPKAC=`` line (the legacy recognition)."""
    return _MARKER.search(data) is not None


def verify_spkac(der: bytes) -> tuple[PublicKeyTypes, str, str]:
    """Decode and verify an SPKAC; return (public key, challenge, hash name)."""
    try:
        spkac = SignedPublicKeyAndChallenge.load(der, strict=True)
        signed = spkac["public_key_and_challenge"]
        tbs = signed.dump()
        spki_der = signed["spki"].dump()
        challenge = signed["challenge"].native or ""
        algorithm = spkac["signature_algorithm"]
        signature_algo = algorithm.signature_algo
        hash_name = algorithm.hash_algo if signature_algo not in ("ed25519", "ed448") else ""
        signature = spkac["signature"].native
    except (ValueError, TypeError, KeyError) as error:
        raise RequestRefused(f"malformed SPKAC structure: {error}") from None
    try:
        public_key = serialization.load_der_public_key(spki_der)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise RequestRefused(f"SPKAC public key cannot be loaded: {error}") from None
    try:
        if signature_algo == "rsassa_pkcs1v15" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, tbs, padding.PKCS1v15(), _hash(hash_name))
        elif signature_algo == "ecdsa" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, tbs, ec.ECDSA(_hash(hash_name)))
        elif signature_algo == "ed25519" and isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, tbs)
        elif signature_algo == "ed448" and isinstance(public_key, ed448.Ed448PublicKey):
            public_key.verify(signature, tbs)
        else:
            raise RequestRefused(
                f"unsupported SPKAC signature algorithm {signature_algo} "
                f"for a {type(public_key).__name__}"
            )
    except InvalidSignature:
        raise RequestRefused("SPKAC signature does not verify") from None
    except (ValueError, UnsupportedAlgorithm) as error:
        raise RequestRefused(f"SPKAC signature cannot be checked: {error}") from None
    return public_key, str(challenge), hash_name


def _hash(name: str) -> hashes.HashAlgorithm:
    try:
        return _HASHES[name]()
    except KeyError:
        raise RequestRefused(f"unsupported SPKAC signature digest {name!r}") from None


def parse_spkac(data: bytes) -> SPKACRequest:
    """Parse the SPKAC request text, verify its signature; raise :class:`RequestRefused`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestRefused(f"SPKAC request is not UTF-8 text ({error.reason})") from None
    pairs: list[tuple[str, str]] = []
    encoded: str | None = None
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals:
            raise RequestRefused(f"SPKAC request line {number} is not name=value")
        name = name.strip()
        value = value.strip()
        for position, char in enumerate(name):
            if char in ".:,":
                if name[position + 1 :]:
                    name = name[position + 1 :]
                break
        if name == "SPKAC":
            if encoded is not None:
                raise RequestRefused("SPKAC request holds more than one SPKAC line")
            encoded = value
        else:
            pairs.append((name, value))
    if encoded is None:
        raise RequestRefused("SPKAC request has no SPKAC= line")
    try:
        der = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestRefused("SPKAC value is not valid base64") from None
    public_key, challenge, hash_name = verify_spkac(der)
    return SPKACRequest(public_key, challenge, hash_name, tuple(pairs))
