"""The X.509 certificate authority (sans-IO, synchronous, CPU-bound).

:class:`X509Authority` turns a :class:`~signer.protocol.codec.SignX509Request`
into an :class:`IssuedCertificate` or raises
:class:`~signer.server.errors.RequestRefused` with a reason for the log. It
does no I/O and reads the time only through the injected ``now`` callable;
the server runs :meth:`X509Authority.issue` in a thread (``deferToThread``)
and records the result in the CA database before answering.

Rules applied, in order:

1. root, profile (known and enabled) and digest (0 = the root's default;
   md5/sha1/ripemd160 only when allowed by configuration; the profile must
   allow it); days = 0 refused, more than the profile's maximum capped;
2. subject and SAN fields: ``\\xHH`` escapes decoded, forbidden characters
   refused (:mod:`signer.server.subject`);
3. the request: SPKAC when it holds an ``SPKAC=`` line (the keytype byte is
   only informational), else PKCS#10 in PEM or DER; its signature verified;
4. the key: RSA below the configured minimum, RSA with a bad exponent, EC
   on a curve below 256 bits, DSA and anything else unusual refused;
5. the subject: the request line's wins; when it is empty the SPKAC's
   ``name=value`` lines, else the CSR's subject;
6. extensions only from the profile and the SAN field, never from the CSR:
   basicConstraints, keyUsage (critical), extendedKeyUsage, subjectAltName
   (for profiles with ``email_san_from_subject`` and an empty SAN field: the
   subject's emailAddress values), SKI, AKI, AIA OCSP and CRL distribution
   point of the root, optional certificatePolicies;
7. validity from now to now + days, never beyond the root's own notAfter.
"""

from __future__ import annotations

import datetime
import secrets
import threading
from dataclasses import dataclass
from typing import Callable, Mapping

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ObjectIdentifier

from signer.protocol.codec import DIGESTS, SignX509Request
from signer.server.config import (
    WEAK_DIGESTS,
    LoadedRoot,
    ProfileConfig,
    ServerConfig,
    X509Policy,
)
from signer.server.errors import RequestRefused
from signer.server.san import format_san, parse_san
from signer.server.spkac import is_spkac, parse_spkac
from signer.server.subject import (
    check_name_values,
    clean_san,
    clean_subject,
    emails_of,
    format_slash_dn,
    name_from_pairs,
    parse_slash_dn,
)

__all__ = [
    "IssuedCertificate",
    "RandomSerials",
    "SequentialSerials",
    "SerialAllocator",
    "X509Authority",
    "signature_hash",
]

#: ``allocate(root_index) -> serial``: a positive integer below 2**159,
#: unique per root. Called from the worker thread.
SerialAllocator = Callable[[int], int]

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "md5": hashes.MD5,
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_MIN_EC_BITS = 256


def signature_hash(name: str) -> hashes.HashAlgorithm | None:
    """The ``cryptography`` hash object for a digest name, None if unknown."""
    factory = _HASHES.get(name)
    return factory() if factory else None


class RandomSerials:
    """Random serial numbers: 158 bits from the OS CSPRNG, top bit set.

    Always 20 bytes in DER, positive and below 2**159; 158 bits of entropy
    (far above the 64 required), so collisions are not a practical concern
    (the CA database's unique constraint catches one anyway).
    """

    def __call__(self, root: int) -> int:
        return (1 << 158) | secrets.randbits(158)


class SequentialSerials:
    """Sequential serial numbers per root, in memory (thread-safe).

    A stand-in for tests and rehearsals: production must use an allocator
    backed by the CA database so numbers survive a restart.
    """

    def __init__(self, start: int = 1) -> None:
        if start < 1:
            raise ValueError("serial numbers start at 1 or above")
        self._start = start
        self._next: dict[int, int] = {}
        self._lock = threading.Lock()

    def __call__(self, root: int) -> int:
        with self._lock:
            serial = self._next.get(root, self._start)
            self._next[root] = serial + 1
            return serial


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate the CA signed; to be recorded before it is answered."""

    root: int
    serial: int
    subject: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    profile: int
    digest: str
    days: int
    capped: bool
    san: str
    pem: bytes
    der: bytes
    certificate: x509.Certificate


@dataclass(frozen=True)
class _Request:
    public_key: PublicKeyTypes
    subject: x509.Name | None
    kind: str


class X509Authority:
    """Issues X.509 certificates for the configured roots and profiles."""

    def __init__(
        self,
        roots: Mapping[int, LoadedRoot],
        profiles: Mapping[int, ProfileConfig],
        policy: X509Policy,
        now: Callable[[], datetime.datetime],
        serials: SerialAllocator | None = None,
    ) -> None:
        self.roots = dict(roots)
        self.profiles = dict(profiles)
        self.policy = policy
        self._now = now
        if serials is None:
            if policy.serial_numbers == "sequential":
                raise ValueError(
                    "sequential serial numbers need an allocator backed by the CA database"
                )
            serials = RandomSerials()
        self._serials = serials
        self._authority_key_ids = {
            index: _authority_key_identifier(root.certificate) for index, root in roots.items()
        }

    @classmethod
    def from_config(
        cls,
        config: ServerConfig,
        roots: Mapping[int, LoadedRoot],
        now: Callable[[], datetime.datetime],
        serials: SerialAllocator | None = None,
    ) -> X509Authority:
        """Build from a loaded configuration and :func:`~signer.server.config.check_keys`."""
        return cls(roots, config.profiles, config.x509, now, serials)

    # -- the checks ------------------------------------------------------------

    def _root(self, index: int) -> LoadedRoot:
        root = self.roots.get(index)
        if root is None:
            known = ", ".join(str(i) for i in sorted(self.roots)) or "none"
            raise RequestRefused(f"unknown root {index} (configured: {known})")
        return root

    def _profile(self, number: int) -> ProfileConfig:
        profile = self.profiles.get(number)
        if profile is None:
            raise RequestRefused(f"unknown profile {number}")
        if not profile.enabled:
            raise RequestRefused(f"profile {number} ({profile.name}) is disabled")
        return profile

    def _digest(
        self, number: int, root: LoadedRoot, profile: ProfileConfig
    ) -> tuple[str, hashes.HashAlgorithm | None]:
        if number == 0:
            name = root.config.default_digest
        else:
            known = DIGESTS.get(number)
            if known is None:
                raise RequestRefused(f"unknown digest id {number}")
            name = known
        if name in WEAK_DIGESTS and name not in self.policy.allow_weak_digests:
            raise RequestRefused(f"digest {name} is refused (weak)")
        if name not in profile.allowed_digests:
            raise RequestRefused(f"digest {name} is not allowed for profile {profile.name}")
        if isinstance(root.key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
            return name, None
        algorithm = signature_hash(name)
        if algorithm is None:
            raise RequestRefused(f"digest {name} is not supported for signing")
        return name, algorithm

    def _days(self, days: int, profile: ProfileConfig) -> tuple[int, bool]:
        if days <= 0:
            raise RequestRefused("validity of 0 days requested")
        if days > profile.max_days:
            return profile.max_days, True
        return days, False

    def _parse_request(self, data: bytes) -> _Request:
        if is_spkac(data):
            spkac = parse_spkac(data)
            subject = name_from_pairs(spkac.subject_pairs) if spkac.subject_pairs else None
            return _Request(spkac.public_key, subject, "spkac")
        stripped = data.strip()
        if not stripped:
            raise RequestRefused("empty certificate request")
        try:
            if stripped.startswith(b"-----BEGIN"):
                csr = x509.load_pem_x509_csr(stripped)
            else:
                csr = x509.load_der_x509_csr(stripped)
        except ValueError as error:
            raise RequestRefused(f"malformed certificate request: {error}") from None
        try:
            valid = csr.is_signature_valid
        except (ValueError, UnsupportedAlgorithm) as error:
            raise RequestRefused(
                f"certificate request signature cannot be checked: {error}"
            ) from None
        if not valid:
            raise RequestRefused("certificate request signature does not verify")
        try:
            public_key = csr.public_key()
            subject = csr.subject
        except (ValueError, UnsupportedAlgorithm) as error:
            raise RequestRefused(f"certificate request key cannot be loaded: {error}") from None
        return _Request(public_key, subject if len(subject) else None, "pkcs10")

    def _check_key(self, key: PublicKeyTypes) -> None:
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < self.policy.min_rsa_bits:
                raise RequestRefused(
                    f"RSA key of {key.key_size} bits, at least {self.policy.min_rsa_bits} required"
                )
            exponent = key.public_numbers().e
            if exponent < 3 or exponent % 2 == 0:
                raise RequestRefused(f"RSA public exponent {exponent} is not acceptable")
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.key_size < _MIN_EC_BITS:
                raise RequestRefused(
                    f"EC key on {key.curve.name} ({key.curve.key_size} bits), "
                    f"at least {_MIN_EC_BITS} required"
                )
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            return
        elif isinstance(key, dsa.DSAPublicKey):
            raise RequestRefused("DSA keys are not accepted")
        else:
            raise RequestRefused(f"unsupported key type {type(key).__name__}")

    def _subject(self, text: str, parsed: _Request) -> x509.Name:
        if text:
            return parse_slash_dn(text)
        if parsed.subject is None:
            raise RequestRefused(
                f"empty subject (neither the request line nor the {parsed.kind} has one)"
            )
        check_name_values(parsed.subject, f"{parsed.kind} subject")
        return parsed.subject

    def _san(
        self, text: str, subject: x509.Name, profile: ProfileConfig
    ) -> list[x509.GeneralName]:
        emails = emails_of(subject)
        names = parse_san(text, emails)
        if not names and profile.email_san_from_subject and emails:
            names = parse_san(",".join(f"email:{email}" for email in emails))
        return names

    # -- issuing -----------------------------------------------------------------

    def issue(self, request: SignX509Request) -> IssuedCertificate:
        """Check ``request`` and sign it; raise :class:`RequestRefused`."""
        root = self._root(request.root)
        profile = self._profile(request.profile)
        digest_name, algorithm = self._digest(request.digest, root, profile)
        days, capped = self._days(request.days, profile)
        # Both text fields are checked before the costly request parsing.
        subject_text = clean_subject(request.subject)
        san_text = clean_san(request.san)
        parsed = self._parse_request(request.csr)
        self._check_key(parsed.public_key)
        subject = self._subject(subject_text, parsed)
        san = self._san(san_text, subject, profile)

        not_before = self._now().astimezone(datetime.timezone.utc).replace(microsecond=0)
        not_after = not_before + datetime.timedelta(days=days)
        root_end = root.certificate.not_valid_after_utc
        if not_after > root_end:
            not_after = root_end
            capped = True
        if not_after <= not_before:
            raise RequestRefused(
                f"root {root.index} certificate has expired ({root_end:%Y-%m-%d})"
            )

        serial = self._serials(root.index)
        if not 0 < serial < 2**159:
            raise RequestRefused(f"serial allocator returned an invalid serial {serial}")

        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(root.certificate.subject)
            .public_key(parsed.public_key)  # type: ignore[arg-type]
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        for extension, critical in self._extensions(root, profile, parsed.public_key, san):
            builder = builder.add_extension(extension, critical=critical)
        try:
            # cryptography types the digest as SHA-2/SHA-3 only; weak digests allowed by
            # policy are passed on and refused at run time by a library that cannot sign them
            certificate = builder.sign(root.key, algorithm)  # type: ignore[arg-type]
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:
            raise RequestRefused(f"signing failed: {error}") from None
        return IssuedCertificate(
            root=root.index,
            serial=serial,
            subject=format_slash_dn(subject),
            not_before=not_before,
            not_after=not_after,
            profile=profile.id,
            digest=digest_name,
            days=days,
            capped=capped,
            san=format_san(san),
            pem=certificate.public_bytes(serialization.Encoding.PEM),
            der=certificate.public_bytes(serialization.Encoding.DER),
            certificate=certificate,
        )

    def _extensions(
        self,
        root: LoadedRoot,
        profile: ProfileConfig,
        public_key: PublicKeyTypes,
        san: list[x509.GeneralName],
    ) -> list[tuple[x509.ExtensionType, bool]]:
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (
                x509.BasicConstraints(
                    ca=profile.ca, path_length=profile.path_length if profile.ca else None
                ),
                True,
            ),
            (profile.key_usage_extension(), True),
        ]
        purposes = profile.extended_key_usage_oids()
        if purposes:
            extensions.append(
                (x509.ExtendedKeyUsage(list(purposes)), profile.extended_key_usage_critical)
            )
        if san:
            extensions.append((x509.SubjectAlternativeName(san), False))
        subject_key_id = x509.SubjectKeyIdentifier.from_public_key(
            public_key  # type: ignore[arg-type]
        )
        extensions.append((subject_key_id, False))
        extensions.append((self._authority_key_ids[root.index], False))
        if root.config.ocsp_url:
            extensions.append(
                (
                    x509.AuthorityInformationAccess(
                        [
                            x509.AccessDescription(
                                AuthorityInformationAccessOID.OCSP,
                                x509.UniformResourceIdentifier(root.config.ocsp_url),
                            )
                        ]
                    ),
                    False,
                )
            )
        if root.config.crl_url:
            extensions.append(
                (
                    x509.CRLDistributionPoints(
                        [
                            x509.DistributionPoint(
                                full_name=[x509.UniformResourceIdentifier(root.config.crl_url)],
                                relative_name=None,
                                reasons=None,
                                crl_issuer=None,
                            )
                        ]
                    ),
                    False,
                )
            )
        if self.policy.certificate_policies:
            qualifiers: list[str | x509.UserNotice] | None = (
                [self.policy.cps_url] if self.policy.cps_url else None
            )
            extensions.append(
                (
                    x509.CertificatePolicies(
                        [
                            x509.PolicyInformation(
                                ObjectIdentifier(self.policy.policy_oid), qualifiers
                            )
                        ]
                    ),
                    False,
                )
            )
        return extensions


def _authority_key_identifier(certificate: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            certificate.public_key()  # type: ignore[arg-type]
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

