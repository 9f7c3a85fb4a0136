"""Reading what the signer sends back: X.509 certificates and OpenPGP keys.

- :func:`load_certificate` takes PEM or DER and yields a :class:`CertificateFacts`
  (PEM text, serial as upper-case even-length hex like ``openssl x509 -serial``,
  notAfter as ``YYYY-MM-DD HH:MM:SS`` UTC).
- :func:`matches_request` says whether a certificate carries the public key
  of a request (PKCS#10 or SPKAC), used when a certificate file is found for a
  row that still says pending (crash recovery).
- :func:`openpgp_certification_expiry` walks the OpenPGP packets of a key
  (a small parser, RFC 4880) and returns when the CA's certification expires.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import re
from dataclasses import dataclass

from asn1crypto import algos, core, keys
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

DB_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
ZERO_TIME = "0000-00-00 00:00:00"


class BadCertificate(ValueError):
    """Bytes that are not a usable certificate, request or key."""


@dataclass(frozen=True)
class CertificateFacts:
    """What the client stores about an issued certificate."""

    pem: bytes
    serial: str
    expire: str
    certificate: x509.Certificate


def serial_hex(serial: int) -> str:
    """Upper-case hex with an even number of digits (``openssl x509 -serial``)."""
    text = format(serial, "X")
    return text if len(text) % 2 == 0 else "0" + text


def db_time(moment: datetime.datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime(DB_TIME_FORMAT)


def load_certificate(data: bytes) -> CertificateFacts:
    """Parse a PEM or DER certificate.

    :raises BadCertificate: when ``data`` is neither.
    """
    if not data.strip():
        raise BadCertificate("empty certificate")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            certificate = x509.load_pem_x509_certificate(data)
        else:
            certificate = x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise BadCertificate(f"not a certificate: {exc}") from None
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    return CertificateFacts(
        pem=pem,
        serial=serial_hex(certificate.serial_number),
        expire=db_time(certificate.not_valid_after_utc),
        certificate=certificate,
    )


class _PublicKeyAndChallenge(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    _fields = [("spki", keys.PublicKeyInfo), ("challenge", core.IA5String)]


class _SignedPublicKeyAndChallenge(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    _fields = [
        ("public_key_and_challenge", _PublicKeyAndChallenge),
        ("signature_algorithm", algos.SignedDigestAlgorithm),
        ("signature", core.OctetBitString),
    ]


_SPKAC = re.compile(rb"^[ \t]*SPKAC[ \t]*=[ \t]*([A-Za-z0-9+/=]+)", re.MULTILINE)


def request_public_key_der(request: bytes) -> bytes:
    """The SubjectPublicKeyInfo (DER) of a PKCS#10 CSR (PEM/DER) or an SPKAC.

    :raises BadCertificate: when the request cannot be parsed.
    """
    match = _SPKAC.search(request)
    if match:
        try:
            raw = base64.b64decode(match.group(1), validate=True)
            spkac = _SignedPublicKeyAndChallenge.load(raw)
            return bytes(spkac["public_key_and_challenge"]["spki"].dump(force=True))
        except Exception as exc:  # asn1crypto raises many kinds on garbage
            raise BadCertificate(f"not a valid SPKAC: {exc}") from None
    try:
        if b"-----BEGIN" in request:
            csr = x509.load_pem_x509_csr(request)
        else:
            csr = x509.load_der_x509_csr(request)
    except ValueError as exc:
        raise BadCertificate(f"not a valid certificate request: {exc}") from None
    return csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def matches_request(facts: CertificateFacts, request: bytes) -> bool:
    """Whether the certificate was issued for the key of ``request``."""
    try:
        wanted = request_public_key_der(request)
    except BadCertificate:
        return False
    have = facts.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return have == wanted


def issued_by(facts: CertificateFacts, ca_certificate: x509.Certificate) -> bool:
    """Whether ``ca_certificate`` signed the certificate (names and signature).

    The protocol's XOR byte misses two flips of the same bit; a damaged
    certificate that still parses fails this check.
    """
    try:
        facts.certificate.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# -- OpenPGP ---------------------------------------------------------------

_ARMOR_BEGIN = re.compile(rb"-----BEGIN PGP [A-Z ]+-----")
_ARMOR_END = re.compile(rb"-----END PGP [A-Z ]+-----")

TAG_SIGNATURE = 2
TAG_PUBLIC_KEY = 6
TAG_USER_ID = 13
TAG_PUBLIC_SUBKEY = 14
SUBPACKET_CREATION = 2
SUBPACKET_EXPIRATION = 3
SUBPACKET_ISSUER = 16
SUBPACKET_ISSUER_FINGERPRINT = 33
CERTIFICATION_TYPES = {0x10, 0x11, 0x12, 0x13}


@dataclass(frozen=True)
class OpenPGPSignature:
    """One certification signature on a user ID."""

    issuer: str  # upper-case hex key id (16 digits), or "" when absent
    issuer_fingerprint: str  # upper-case hex, or ""
    created: int
    expires: int | None  # epoch seconds, None = never

    def made_by(self, key: str) -> bool:
        """``key``: key id (8 or 16 hex digits) or fingerprint."""
        key = key.replace(" ", "").upper()
        if not key:
            return False
        if self.issuer_fingerprint and len(key) >= 32:
            return self.issuer_fingerprint == key
        ids = [self.issuer, self.issuer_fingerprint[-16:]]
        return any(candidate and candidate.endswith(key[-16:]) for candidate in ids)


def dearmor(data: bytes) -> bytes:
    """Binary packets of an armored (or already binary) OpenPGP block.

    :raises BadCertificate: on broken armor.
    """
    begin = _ARMOR_BEGIN.search(data)
    if begin is None:
        return data
    end = _ARMOR_END.search(data, begin.end())
    if end is None:
        raise BadCertificate("OpenPGP armor without an END line")
    lines = data[begin.end() : end.start()].splitlines()
    # skip the armor headers up to the first empty line
    try:
        blank = next(i for i, line in enumerate(lines[1:], 1) if not line.strip())
    except StopIteration:
        blank = 0
    body = [line.strip() for line in lines[blank + 1 :] if line.strip()]
    body = [line for line in body if not line.startswith(b"=")]
    try:
        return base64.b64decode(b"".join(body), validate=True)
    except binascii.Error as exc:
        raise BadCertificate(f"OpenPGP armor is not base64: {exc}") from None


def iter_packets(data: bytes) -> list[tuple[int, bytes]]:
    """``(tag, body)`` of every packet (old and new format headers).

    :raises BadCertificate: on a truncated or malformed packet.
    """
    packets = []
    offset = 0
    while offset < len(data):
        first = data[offset]
        offset += 1
        if not first & 0x80:
            raise BadCertificate(f"byte {offset - 1} is not an OpenPGP packet header")
        if first & 0x40:  # new format
            tag = first & 0x3F
            body = bytearray()
            while True:
                if offset >= len(data):
                    raise BadCertificate("truncated packet length")
                octet = data[offset]
                if octet < 192:
                    length, offset, partial = octet, offset + 1, False
                elif octet < 224:
                    if offset + 1 >= len(data):
                        raise BadCertificate("truncated packet length")
                    length = ((octet - 192) << 8) + data[offset + 1] + 192
                    offset, partial = offset + 2, False
                elif octet == 255:
                    length = int.from_bytes(data[offset + 1 : offset + 5], "big")
                    offset, partial = offset + 5, False
                else:
                    length, offset, partial = 1 << (octet & 0x1F), offset + 1, True
                if offset + length > len(data):
                    raise BadCertificate("truncated packet body")
                body += data[offset : offset + length]
                offset += length
                if not partial:
                    break
            packets.append((tag, bytes(body)))
        else:
            tag = (first >> 2) & 0x0F
            kind = first & 0x03
            if kind == 3:
                length = len(data) - offset
            else:
                size = (1, 2, 4)[kind]
                length = int.from_bytes(data[offset : offset + size], "big")
                offset += size
            if offset + length > len(data):
                raise BadCertificate("truncated packet body")
            packets.append((tag, data[offset : offset + length]))
            offset += length
    return packets


def _subpackets(data: bytes) -> list[tuple[int, bytes]]:
    result = []
    offset = 0
    while offset < len(data):
        octet = data[offset]
        if octet < 192:
            length, offset = octet, offset + 1
        elif octet < 255:
            length = ((octet - 192) << 8) + data[offset + 1] + 192
            offset += 2
        else:
            length = int.from_bytes(data[offset + 1 : offset + 5], "big")
            offset += 5
        if length == 0 or offset + length > len(data):
            raise BadCertificate("malformed signature subpacket")
        result.append((data[offset] & 0x7F, data[offset + 1 : offset + length]))
        offset += length
    return result


def parse_signature(body: bytes) -> tuple[int, OpenPGPSignature] | None:
    """``(signature type, facts)`` of a v4 signature packet; None for other versions."""
    if len(body) < 6 or body[0] != 4:
        return None
    sigtype = body[1]
    hashed_length = int.from_bytes(body[4:6], "big")
    hashed = body[6 : 6 + hashed_length]
    rest = body[6 + hashed_length :]
    unhashed_length = int.from_bytes(rest[:2], "big")
    unhashed = rest[2 : 2 + unhashed_length]
    created = 0
    expiration: int | None = None
    issuer = ""
    fingerprint = ""
    for kind, value in _subpackets(hashed):
        if kind == SUBPACKET_CREATION and len(value) == 4:
            created = int.from_bytes(value, "big")
        elif kind == SUBPACKET_EXPIRATION and len(value) == 4:
            expiration = int.from_bytes(value, "big")
        elif kind == SUBPACKET_ISSUER and len(value) == 8:
            issuer = value.hex().upper()
        elif kind == SUBPACKET_ISSUER_FINGERPRINT and len(value) >= 21:
            fingerprint = value[1:].hex().upper()
    for kind, value in _subpackets(unhashed):
        if kind == SUBPACKET_ISSUER and len(value) == 8 and not issuer:
            issuer = value.hex().upper()
    if not issuer and fingerprint:
        issuer = fingerprint[-16:]
    expires = created + expiration if expiration else None
    return sigtype, OpenPGPSignature(issuer, fingerprint, created, expires)


def _v4_key_id(body: bytes) -> str:
    digest = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()
    return digest[-16:]


def openpgp_certifications(data: bytes) -> tuple[str, list[OpenPGPSignature]]:
    """The primary key id and every user-ID certification of one key.

    :raises BadCertificate: when ``data`` holds no OpenPGP public key.
    """
    packets = iter_packets(dearmor(data))
    if not packets or packets[0][0] != TAG_PUBLIC_KEY:
        raise BadCertificate("no OpenPGP public key in the answer")
    primary = _v4_key_id(packets[0][1]) if packets[0][1][:1] == b"\x04" else ""
    signatures = []
    in_user_id = False
    for tag, body in packets[1:]:
        if tag == TAG_PUBLIC_KEY:
            raise BadCertificate("more than one OpenPGP key in the answer")
        if tag in (TAG_USER_ID, 17):
            in_user_id = True
        elif tag == TAG_PUBLIC_SUBKEY:
            in_user_id = False
        elif tag == TAG_SIGNATURE and in_user_id:
            parsed = parse_signature(body)
            if parsed is not None and parsed[0] in CERTIFICATION_TYPES:
                signatures.append(parsed[1])
    return primary, signatures


def openpgp_certification_expiry(data: bytes, ca_key: str = "") -> str:
    """When the CA's certification on the key expires (``YYYY-MM-DD HH:MM:SS`` UTC).

    ``ca_key`` names the CA key (id or fingerprint); empty means any
    certification not made by the key itself. The latest expiry wins;
    :data:`ZERO_TIME` when the CA's certification never expires.

    :raises BadCertificate: when the key carries no certification by the CA.
    """
    primary, signatures = openpgp_certifications(data)
    if ca_key:
        ours = [sig for sig in signatures if sig.made_by(ca_key)]
    else:
        ours = [sig for sig in signatures if sig.issuer and sig.issuer != primary]
    if not ours:
        raise BadCertificate("the key carries no certification by the CA key")
    if any(sig.expires is None for sig in ours):
        return ZERO_TIME
    latest = max(sig.expires for sig in ours if sig.expires is not None)
    return db_time(datetime.datetime.fromtimestamp(latest, datetime.timezone.utc))
