"""The X.509 CA: what it issues, and everything it refuses."""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    ExtensionOID,
    NameOID,
    ObjectIdentifier,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer.protocol.codec import SignX509Request
from signer.server.config import (
    EXTENDED_KEY_USAGES,
    LoadedRoot,
    ProfileConfig,
    RootConfig,
    X509Policy,
    default_profiles,
)
from signer.server.errors import RequestRefused
from signer.server.x509ca import (
    IssuedCertificate,
    RandomSerials,
    SequentialSerials,
    X509Authority,
)
from tests.support.testca import make_csr, make_root
from tests.support.x509_requests import (
    NOW,
    broken_signature_csr,
    csr_der,
    csr_with_extensions,
    ec_csr,
    loaded_roots,
    sign_request,
    spkac_text,
    tampered_subject_csr,
)

VECTORS = ["02_sign_x509_client_csr", "03_sign_x509_spkac", "04_sign_x509_server_san"]


def _authority(
    policy: X509Policy | None = None,
    profiles: dict[int, ProfileConfig] | None = None,
    roots: dict[int, LoadedRoot] | None = None,
    now: Callable[[], datetime.datetime] = lambda: NOW,
    serials: Callable[[int], int] | None = None,
) -> X509Authority:
    return X509Authority(
        roots if roots is not None else loaded_roots(),
        profiles if profiles is not None else default_profiles(),
        policy or X509Policy(),
        now,
        serials,
    )


@pytest.fixture
def authority() -> X509Authority:
    return _authority()


def _ext(certificate: x509.Certificate, oid: ObjectIdentifier) -> x509.Extension[x509.ExtensionType]:
    return certificate.extensions.get_extension_for_oid(oid)


def _has(certificate: x509.Certificate, oid: ObjectIdentifier) -> bool:
    try:
        certificate.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return False
    return True


def _vector_request(vectors_dir: Path, name: str) -> tuple[SignX509Request, x509.Certificate]:
    vector = json.loads((vectors_dir / f"{name}.json").read_text())
    header = vector["request"]["header"]
    fields = [field["text"].encode() for field in vector["request"]["fields"]]
    request = SignX509Request(
        csr=fields[0], san=fields[1], subject=fields[2], root=header["root"],
        profile=header["profile"], digest=header["md_id"], days=header["days"],
        keytype=header["keytype"],
    )
    answer = vector["response"]["fields"][0]
    if "text" in answer:
        legacy = x509.load_pem_x509_certificate(answer["text"].encode())
    else:
        legacy = x509.load_der_x509_certificate(bytes.fromhex(answer["hex"]))
    return request, legacy


# -- the legacy requests --------------------------------------------------------


@pytest.mark.parametrize("name", VECTORS)
def test_legacy_requests_get_the_legacy_extensions(
    vectors_dir: Path, authority: X509Authority, name: str
) -> None:
    """For the recorded requests we issue the legacy subject, key, SAN and extensions.

    The only intended difference: the obsolete nsSGC/msSGC purposes the legacy
    server profile added are off by default.
    """
    request, legacy = _vector_request(vectors_dir, name)
    issued = authority.issue(request)
    ours = issued.certificate
    assert ours.subject == legacy.subject
    assert ours.public_key() == legacy.public_key()
    assert ours.not_valid_after_utc - ours.not_valid_before_utc == (
        legacy.not_valid_after_utc - legacy.not_valid_before_utc
    )
    for oid in (
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
    ):
        assert _ext(ours, oid) == _ext(legacy, oid), oid
    legacy_eku = list(_ext(legacy, ExtensionOID.EXTENDED_KEY_USAGE).value)  # type: ignore[call-overload]
    obsolete = {EXTENDED_KEY_USAGES["nsSGC"], EXTENDED_KEY_USAGES["msSGC"]}
    assert list(_ext(ours, ExtensionOID.EXTENDED_KEY_USAGE).value) == [  # type: ignore[call-overload]
        oid for oid in legacy_eku if oid not in obsolete
    ]
    assert {e.oid for e in ours.extensions} == {e.oid for e in legacy.extensions}


def test_issued_certificate_record(authority: X509Authority) -> None:
    """The record carries root, serial, slash subject, validity, profile, PEM and DER."""
    issued = authority.issue(
        sign_request(make_csr(), subject=b"/CN=www.example.org", san=b"DNS:www.example.org",
                     root=1, days=100)
    )
    assert isinstance(issued, IssuedCertificate)
    assert issued.root == 1
    assert issued.profile == 5
    assert issued.digest == "sha256"
    assert issued.subject == "/CN=www.example.org"
    assert issued.san == "DNS:www.example.org"
    assert issued.not_before == NOW
    assert issued.not_after == NOW + datetime.timedelta(days=100)
    assert (issued.days, issued.capped) == (100, False)
    assert issued.serial == issued.certificate.serial_number
    assert x509.load_pem_x509_certificate(issued.pem) == issued.certificate
    assert x509.load_der_x509_certificate(issued.der) == issued.certificate
    assert issued.certificate.not_valid_before_utc == NOW
    assert issued.certificate.not_valid_after_utc == NOW + datetime.timedelta(days=100)


def test_signature_verifies_with_the_root_key(authority: X509Authority) -> None:
    """The issuer signature verifies with the root's public key; AKI = the root's SKI."""
    roots = loaded_roots()
    for index in (0, 1):
        issued = authority.issue(sign_request(make_csr(), root=index))
        root_certificate = roots[index].certificate
        issued.certificate.verify_directly_issued_by(root_certificate)
        assert issued.certificate.issuer == root_certificate.subject
        root_ski = _ext(root_certificate, ExtensionOID.SUBJECT_KEY_IDENTIFIER).value
        aki = _ext(issued.certificate, ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value
        assert aki.key_identifier == root_ski.digest  # type: ignore[attr-defined]
        with pytest.raises(Exception):
            issued.certificate.verify_directly_issued_by(roots[1 - index].certificate)


@pytest.mark.parametrize(
    "profile, subject, san, purpose",
    [
        (5, b"/CN=www.example.org", b"DNS:www.example.org,DNS:example.org", "sslserver"),
        (0, b"/CN=Alice Tester/emailAddress=alice@example.org", b"", "smimesign"),
        (0, b"/CN=Alice Tester/emailAddress=alice@example.org", b"", "sslclient"),
    ],
)
def test_openssl_verify_accepts_issued_certificates(
    tmp_path: Path, profile: int, subject: bytes, san: bytes, purpose: str
) -> None:
    """``openssl verify -CAfile root -purpose ...`` accepts what we issue (real clock)."""
    authority = _authority(now=lambda: datetime.datetime.now(datetime.timezone.utc))
    issued = authority.issue(sign_request(make_csr(), subject=subject, san=san, profile=profile))
    (tmp_path / "root.pem").write_bytes(make_root("Signer Test Root 0").certificate_pem())
    (tmp_path / "leaf.pem").write_bytes(issued.pem)
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile",
         str(tmp_path / "root.pem"), str(tmp_path / "leaf.pem")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_openssl_verify_accepts_a_subca_chain(tmp_path: Path) -> None:
    """A subca (profile 11) certificate can itself sign a leaf that openssl verifies."""
    clock = lambda: datetime.datetime.now(datetime.timezone.utc)  # noqa: E731
    authority = _authority(now=clock)
    sub_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sub_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sub CA")]))
        .sign(sub_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    sub = authority.issue(sign_request(sub_csr, subject=b"/O=Example/CN=Sub CA", profile=11, days=365))
    sub_root = LoadedRoot(
        9, sub.certificate, sub_key,
        RootConfig(9, Path("sub.crt"), Path("sub.key"), "http://crl.example.org/sub.crl", ""),
    )
    leaf = _authority(roots={9: sub_root}, now=clock).issue(
        sign_request(make_csr(), root=9, san=b"DNS:www.example.org", days=30)
    )
    (tmp_path / "root.pem").write_bytes(make_root("Signer Test Root 0").certificate_pem())
    (tmp_path / "sub.pem").write_bytes(sub.pem)
    (tmp_path / "leaf.pem").write_bytes(leaf.pem)
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(tmp_path / "root.pem"),
         "-untrusted", str(tmp_path / "sub.pem"), str(tmp_path / "leaf.pem")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- profiles ---------------------------------------------------------------------

CLIENT_EKU = [ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CLIENT_AUTH]
SERVER_EKU = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
EXPECTED_EKU = {
    0: CLIENT_EKU, 1: CLIENT_EKU, 3: CLIENT_EKU, 4: CLIENT_EKU,
    2: CLIENT_EKU + [ExtendedKeyUsageOID.CODE_SIGNING],
    5: SERVER_EKU, 6: SERVER_EKU, 7: SERVER_EKU,
    8: [ExtendedKeyUsageOID.OCSP_SIGNING],
    9: [ExtendedKeyUsageOID.TIME_STAMPING],
    10: [ExtendedKeyUsageOID.CLIENT_AUTH],
}


@pytest.mark.parametrize("profile", range(11))
def test_end_entity_profiles(authority: X509Authority, profile: int) -> None:
    """Every end-entity profile: CA:FALSE and keyUsage critical, its EKU, AIA and CRL DP."""
    issued = authority.issue(
        sign_request(make_csr(), subject=b"/CN=x.example.org/emailAddress=x@example.org",
                     profile=profile)
    ).certificate
    constraints = _ext(issued, ExtensionOID.BASIC_CONSTRAINTS)
    assert constraints.critical and constraints.value == x509.BasicConstraints(False, None)
    usage = _ext(issued, ExtensionOID.KEY_USAGE)
    assert usage.critical
    assert usage.value.digital_signature and usage.value.key_encipherment  # type: ignore[attr-defined]
    assert usage.value.key_agreement and not usage.value.key_cert_sign  # type: ignore[attr-defined]
    eku = _ext(issued, ExtensionOID.EXTENDED_KEY_USAGE)
    assert list(eku.value) == EXPECTED_EKU[profile]  # type: ignore[call-overload]
    assert eku.critical == (profile == 9)
    aia = _ext(issued, ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
    assert [(d.access_method, d.access_location.value) for d in aia] == [  # type: ignore[attr-defined]
        (AuthorityInformationAccessOID.OCSP, "http://ocsp.cacert.org/")
    ]
    points = _ext(issued, ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    assert [p.full_name[0].value for p in points] == ["http://crl.cacert.org/revoke.crl"]  # type: ignore[attr-defined]
    assert not _has(issued, ExtensionOID.CERTIFICATE_POLICIES)
    # client profiles copy the subject's email into the SAN; the others do not
    if profile in (0, 1, 2, 3, 4):
        san = _ext(issued, ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        assert list(san) == [x509.RFC822Name("x@example.org")]  # type: ignore[call-overload]
    else:
        assert not _has(issued, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)


def test_subca_profile(authority: X509Authority) -> None:
    """Profile 11: CA:TRUE pathlen 0 (critical), keyCertSign + cRLSign only, no EKU, SKI/AKI."""
    issued = authority.issue(sign_request(make_csr(), subject=b"/CN=Sub", profile=11)).certificate
    constraints = _ext(issued, ExtensionOID.BASIC_CONSTRAINTS)
    assert constraints.critical and constraints.value == x509.BasicConstraints(True, 0)
    usage = _ext(issued, ExtensionOID.KEY_USAGE).value
    assert usage.key_cert_sign and usage.crl_sign  # type: ignore[attr-defined]
    assert not usage.digital_signature and not usage.key_encipherment  # type: ignore[attr-defined]
    assert not _has(issued, ExtensionOID.EXTENDED_KEY_USAGE)
    assert _has(issued, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    assert _has(issued, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)


def test_csr_extensions_are_never_copied(authority: X509Authority) -> None:
    """A CSR asking for CA:TRUE and a SAN gets neither: extensions come from the profile."""
    issued = authority.issue(
        sign_request(csr_with_extensions(), subject=b"/CN=evil.example.org", profile=5)
    ).certificate
    assert _ext(issued, ExtensionOID.BASIC_CONSTRAINTS).value.ca is False  # type: ignore[attr-defined]
    assert not _has(issued, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)


def test_certificate_policies_when_configured() -> None:
    """With certificate_policies on, the policy OID with the CPS URL qualifier is added."""
    authority = _authority(X509Policy(certificate_policies=True))
    issued = authority.issue(sign_request(make_csr())).certificate
    policies = _ext(issued, ExtensionOID.CERTIFICATE_POLICIES).value
    assert [(p.policy_identifier.dotted_string, p.policy_qualifiers) for p in policies] == [  # type: ignore[attr-defined]
        ("1.3.6.1.4.1.18506.4.4", ["http://www.cacert.org/cps.php"])
    ]


def test_legacy_purposes_available_by_configuration() -> None:
    """A profile configured with nsSGC/msSGC puts them in the EKU, in order."""
    profiles = default_profiles()
    profiles[5] = dataclasses.replace(
        profiles[5], extended_key_usage=("clientAuth", "serverAuth", "nsSGC", "msSGC")
    )
    issued = _authority(profiles=profiles).issue(sign_request(make_csr())).certificate
    assert list(_ext(issued, ExtensionOID.EXTENDED_KEY_USAGE).value) == SERVER_EKU + [  # type: ignore[call-overload]
        ObjectIdentifier("2.16.840.1.113730.4.1"),
        ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),
    ]


def test_root_without_urls_omits_aia_and_crldp() -> None:
    """Empty crl_url / ocsp_url leave the extensions out."""
    roots = loaded_roots({0: ""}, ocsp="")
    issued = _authority(roots=roots).issue(sign_request(make_csr())).certificate
    assert not _has(issued, ExtensionOID.CRL_DISTRIBUTION_POINTS)
    assert not _has(issued, ExtensionOID.AUTHORITY_INFORMATION_ACCESS)


# -- subject and SAN ------------------------------------------------------------------


def test_request_line_subject_wins_over_csr(authority: X509Authority) -> None:
    """field3 replaces the CSR's subject (openssl ca -subj)."""
    issued = authority.issue(
        sign_request(make_csr("csr.example.org"), subject=b"/CN=line.example.org/O=Example")
    )
    assert issued.subject == "/CN=line.example.org/O=Example"


def test_empty_subject_line_uses_the_csr_subject(authority: X509Authority) -> None:
    """With field3 empty the CSR's own subject is used."""
    issued = authority.issue(sign_request(make_csr("csr.example.org"), subject=b""))
    assert issued.subject == "/CN=csr.example.org"


def test_csr_subject_with_forbidden_character_is_refused(authority: X509Authority) -> None:
    """The forbidden-character rule also applies to a subject taken from the CSR."""
    with pytest.raises(RequestRefused, match="forbidden character '#' in pkcs10 subject"):
        authority.issue(sign_request(make_csr("a#b.example.org"), subject=b""))


def test_spkac_subject_from_its_lines(authority: X509Authority) -> None:
    """SPKAC with empty field3: subject from its DN lines, email SAN on client profiles."""
    issued = authority.issue(
        sign_request(spkac_text(), subject=b"", profile=0, keytype=1, days=180)
    )
    assert issued.subject == "/CN=Bob Builder/emailAddress=bob@example.org"
    assert issued.san == "email:bob@example.org"


def test_spkac_recognised_by_marker_not_keytype(authority: X509Authority) -> None:
    """An SPKAC sent with keytype 0 is still treated as SPKAC; field3 wins."""
    issued = authority.issue(
        sign_request(spkac_text(digest="sha256"), subject=b"/CN=Line Wins", profile=0, keytype=0)
    )
    assert issued.subject == "/CN=Line Wins"


def test_spkac_without_any_subject_is_refused(authority: X509Authority) -> None:
    """An SPKAC without DN lines and an empty field3 has no subject: refused."""
    with pytest.raises(RequestRefused, match="empty subject"):
        authority.issue(sign_request(spkac_text(lines=()), subject=b"", profile=0))


def test_explicit_san_replaces_the_email_copy(authority: X509Authority) -> None:
    """A client request with a SAN field uses it instead of the subject's email."""
    issued = authority.issue(
        sign_request(make_csr(), subject=b"/CN=A/emailAddress=a@example.org",
                     san=b"email:other@example.org", profile=0)
    )
    assert issued.san == "email:other@example.org"


def test_escaped_subject_and_san(authority: X509Authority) -> None:
    """``\\xHH`` escapes are decoded in subject and SAN before use."""
    issued = authority.issue(
        sign_request(make_csr(), subject=rb"/CN=Ren\xc3\xa9", san=rb"DNS\x3awww.example.org")
    )
    assert issued.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "René"
    assert issued.san == "DNS:www.example.org"


# -- validity, digests, serials -----------------------------------------------------------


def test_days_above_the_cap_are_capped(authority: X509Authority) -> None:
    """Asking for more than the profile's max_days gives max_days, flagged as capped."""
    issued = authority.issue(sign_request(make_csr(), days=5000))
    assert (issued.days, issued.capped) == (730, True)
    assert issued.not_after - issued.not_before == datetime.timedelta(days=730)


def test_validity_never_exceeds_the_root() -> None:
    """A certificate never outlives its root: notAfter is capped at the root's notAfter."""
    roots = loaded_roots()
    root_end = roots[0].certificate.not_valid_after_utc
    late = root_end - datetime.timedelta(days=10)
    issued = _authority(roots=roots, now=lambda: late).issue(sign_request(make_csr(), days=365))
    assert issued.not_after == root_end
    assert issued.capped


def test_expired_root_refuses() -> None:
    """After the root's notAfter nothing can be issued from it."""
    roots = loaded_roots()
    after = roots[0].certificate.not_valid_after_utc + datetime.timedelta(days=1)
    with pytest.raises(RequestRefused, match="expired"):
        _authority(roots=roots, now=lambda: after).issue(sign_request(make_csr()))


def test_digest_zero_means_the_root_default() -> None:
    """digest 0 signs with the root's configured default digest."""
    roots = loaded_roots()
    roots[0] = dataclasses.replace(
        roots[0], config=dataclasses.replace(roots[0].config, default_digest="sha384")
    )
    issued = _authority(roots=roots).issue(sign_request(make_csr(), digest=0))
    assert issued.digest == "sha384"
    assert isinstance(issued.certificate.signature_hash_algorithm, hashes.SHA384)


@pytest.mark.parametrize("digest, name", [(9, hashes.SHA384), (10, hashes.SHA512)])
def test_strong_digests(authority: X509Authority, digest: int, name: type) -> None:
    """sha384 and sha512 are used as asked."""
    issued = authority.issue(sign_request(make_csr(), digest=digest))
    assert isinstance(issued.certificate.signature_hash_algorithm, name)


def test_random_serials_are_big_positive_and_distinct(authority: X509Authority) -> None:
    """Random serials hold well over 64 random bits, stay below 2**159 and differ."""
    serials = {authority.issue(sign_request(make_csr())).serial for _ in range(20)}
    assert len(serials) == 20
    assert all(2**158 <= serial < 2**159 for serial in serials)
    assert len({serial & (2**64 - 1) for serial in serials}) == 20
    assert all(2**158 <= RandomSerials()(0) < 2**159 for _ in range(1000))


def test_sequential_serials_per_root() -> None:
    """An injected sequential allocator numbers each root on its own."""
    authority = _authority(X509Policy(serial_numbers="sequential"), serials=SequentialSerials(100))
    numbers = [authority.issue(sign_request(make_csr(), root=r)).serial for r in (0, 0, 1, 0, 1)]
    assert numbers == [100, 101, 100, 102, 101]


def test_sequential_policy_needs_an_allocator() -> None:
    """Sequential numbering without a (database) allocator is a programming error."""
    with pytest.raises(ValueError, match="allocator"):
        _authority(X509Policy(serial_numbers="sequential"))


def test_invalid_serial_from_allocator_is_refused() -> None:
    """A serial of 0 or >= 2**159 from an allocator is refused, not signed."""
    for bad in (0, 2**159):
        with pytest.raises(RequestRefused, match="invalid serial"):
            _authority(serials=lambda root, bad=bad: bad).issue(sign_request(make_csr()))


def test_der_csr_and_ec_keys_are_accepted(authority: X509Authority) -> None:
    """A DER CSR works as well as PEM; P-256 and P-384 keys are fine."""
    assert authority.issue(sign_request(csr_der(make_csr()))).subject == "/CN=www.example.org"
    for curve in ("secp256r1", "secp384r1"):
        issued = authority.issue(sign_request(ec_csr(curve)))
        issued.certificate.verify_directly_issued_by(loaded_roots()[0].certificate)


# -- the issue's bad-input list ---------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"csr": b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n"},
         "malformed certificate request"),
        ({"csr": b"\x30\x82\x01\x00garbage"}, "malformed certificate request"),
        ({"csr": b""}, "empty certificate request"),
        ({"csr": broken_signature_csr()}, "signature does not verify"),
        ({"csr": tampered_subject_csr()}, "signature does not verify"),
        ({"csr": spkac_text(break_signature=True), "subject": b""}, "SPKAC signature does not verify"),
        ({"csr": make_csr(bits=1024)}, "RSA key of 1024 bits, at least 2048 required"),
        ({"csr": spkac_text(), "profile": 0, "subject": b"/CN=x\n"},
         "forbidden character LF in subject"),
        ({"csr": spkac_text(lines=("CN=a#b",)), "profile": 0, "subject": b""},
         "forbidden character '#' in spkac subject"),
        ({"subject": b"/CN=a#b"}, "forbidden character '#' in subject"),
        ({"subject": b"/CN=a'b"}, "forbidden character"),
        ({"san": b"DNS:a.example.org,DNS:b\"c.example.org"}, "forbidden character '\"' in subjectAltName"),
        ({"san": b"DNS:a.example.org, DNS:b.example.org"}, "forbidden character space in subjectAltName"),
        ({"san": b"RID:1.2.3"}, "unsupported subjectAltName type 'RID'"),
        ({"subject": b"/XX=y"}, "unknown subject attribute 'XX'"),
        ({"root": 2}, "unknown root 2"),
        ({"root": 255}, "unknown root 255"),
        ({"profile": 12}, "unknown profile 12"),
        ({"digest": 4}, "unknown digest id 4"),
        ({"digest": 1}, "digest md5 is refused (weak)"),
        ({"digest": 2}, "digest sha1 is refused (weak)"),
        ({"digest": 3}, "digest ripemd160 is refused (weak)"),
        ({"days": 0}, "validity of 0 days"),
    ],
)
def test_bad_requests_are_refused(authority: X509Authority, changes: dict, reason: str) -> None:  # type: ignore[type-arg]
    """Each bad input of issue 3 (X.509 part) is a RequestRefused naming the reason."""
    fields = {"csr": make_csr(), "subject": b"/CN=www.example.org", "san": b""}
    fields.update(changes)
    with pytest.raises(RequestRefused) as caught:
        authority.issue(sign_request(**fields))
    assert reason in caught.value.reason


def test_min_rsa_bits_is_configurable() -> None:
    """With min_rsa_bits = 3072 a 2048-bit key is refused; 1024 can be allowed explicitly."""
    with pytest.raises(RequestRefused, match="at least 3072"):
        _authority(X509Policy(min_rsa_bits=3072)).issue(sign_request(make_csr()))
    issued = _authority(X509Policy(min_rsa_bits=1024)).issue(sign_request(make_csr(bits=1024)))
    assert issued.certificate.public_key().key_size == 1024  # type: ignore[union-attr]


def test_small_ec_curve_is_refused(authority: X509Authority) -> None:
    """An EC key below 256 bits (P-192) is refused."""
    try:
        csr = ec_csr("secp192r1")
    except Exception:  # pragma: no cover - OpenSSL builds without P-192
        pytest.skip("P-192 not available in this OpenSSL")
    with pytest.raises(RequestRefused, match="at least 256"):
        authority.issue(sign_request(csr))


def test_disabled_profile_and_digest_not_allowed_by_profile() -> None:
    """A disabled profile refuses; a digest the profile does not list refuses."""
    profiles = default_profiles()
    profiles[11] = dataclasses.replace(profiles[11], enabled=False)
    profiles[5] = dataclasses.replace(profiles[5], allowed_digests=("sha512",))
    authority = _authority(profiles=profiles)
    with pytest.raises(RequestRefused, match="profile 11 \\(subca\\) is disabled"):
        authority.issue(sign_request(make_csr(), profile=11))
    with pytest.raises(RequestRefused, match="digest sha256 is not allowed for profile server"):
        authority.issue(sign_request(make_csr(), profile=5, digest=8))
    assert authority.issue(sign_request(make_csr(), profile=5, digest=10)).digest == "sha512"


def test_allowed_weak_digest_the_library_cannot_use_is_refused_cleanly() -> None:
    """Even when sha1 is allowed by policy, a library that cannot sign with it gives a refusal."""
    profiles = default_profiles()
    profiles[5] = dataclasses.replace(profiles[5], allowed_digests=("sha256", "sha1"))
    authority = _authority(X509Policy(allow_weak_digests=frozenset({"sha1"})), profiles=profiles)
    try:
        issued = authority.issue(sign_request(make_csr(), digest=2))
    except RequestRefused as refusal:
        assert "sha1" in refusal.reason
    else:  # a library that still signs with SHA-1
        assert isinstance(issued.certificate.signature_hash_algorithm, hashes.SHA1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    csr=st.one_of(st.binary(max_size=300), st.just(make_csr())),
    subject=st.binary(max_size=60),
    san=st.binary(max_size=60),
    root=st.integers(0, 255),
    profile=st.integers(0, 255),
    digest=st.integers(0, 255),
    days=st.integers(0, 0xFFFF),
)
def test_arbitrary_input_is_issued_or_refused(
    authority: X509Authority, csr: bytes, subject: bytes, san: bytes, root: int, profile: int,
    digest: int, days: int,
) -> None:
    """Whatever arrives, the CA either issues or raises RequestRefused (nothing else)."""
    request = SignX509Request(csr=csr, subject=subject, san=san, root=root, profile=profile,
                              digest=digest, days=days)
    try:
        issued = authority.issue(request)
    except RequestRefused as refusal:
        assert refusal.reason
    else:
        issued.certificate.verify_directly_issued_by(loaded_roots()[root].certificate)
