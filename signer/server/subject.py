"""Subject DNs of X.509 requests: escapes, forbidden characters, slash form.

The wire carries the subject in OpenSSL's slash form
(``/CN=Alice Tester/emailAddress=alice@example.org``), after the web app
encoded awkward bytes as ``\\xHH``. The legacy server decoded those escapes,
refused a list of characters, and handed the string to ``openssl ca -subj``.
We do the same steps, then build an ``x509.Name`` ourselves.

Decisions (documented here once):

- ``\\xHH`` escapes (``x`` lower case, two hex digits of either case) are
  decoded at byte level first, so ``\\xc3\\xa9`` becomes ``é`` once the
  result is read as UTF-8. Invalid UTF-8 is refused.
- Forbidden after decoding, in subject and SAN: NUL, CR, LF, TAB, ``#``,
  ``"``, ``'``, ``\\``; in the SAN also a space (the legacy rules).
- Because ``\\`` is forbidden, there is no escaping inside the slash form:
  ``/`` always separates components, so a value cannot contain ``/`` and a
  component without ``=`` is refused (``openssl ca -subj`` would silently
  drop it). ``+`` is an ordinary character (no multi-valued RDNs, as with
  ``openssl ca`` without ``-multivalue-rdn``).
- Components with an empty value are skipped, as ``openssl -subj`` does.
- Attribute names: OpenSSL's short and long names (:data:`ATTRIBUTES`),
  matched without regard to case. Unknown names are refused (OpenSSL only
  warned and skipped them).
- Value lengths follow OpenSSL's table (CN, O, OU at most 64 characters, L,
  ST, emailAddress at most 128, C exactly 2 letters); emailAddress must be
  ASCII (IA5String).
"""

from __future__ import annotations

import re
import unicodedata
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from signer.server.errors import RequestRefused

__all__ = [
    "ATTRIBUTES",
    "FORBIDDEN_SAN",
    "FORBIDDEN_SUBJECT",
    "check_forbidden",
    "check_name_values",
    "clean_san",
    "clean_subject",
    "decode_escapes",
    "emails_of",
    "format_slash_dn",
    "name_from_pairs",
    "parse_slash_dn",
]

FORBIDDEN_SUBJECT = b"\x00\r\n\t#\"'\\"
FORBIDDEN_SAN = FORBIDDEN_SUBJECT + b" "

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")

_NAMES: list[tuple[ObjectIdentifier, str, tuple[str, ...]]] = [
    (NameOID.COMMON_NAME, "CN", ("commonName",)),
    (NameOID.COUNTRY_NAME, "C", ("countryName",)),
    (NameOID.LOCALITY_NAME, "L", ("localityName",)),
    (NameOID.STATE_OR_PROVINCE_NAME, "ST", ("stateOrProvinceName", "S")),
    (NameOID.ORGANIZATION_NAME, "O", ("organizationName",)),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "OU", ("organizationalUnitName",)),
    (NameOID.EMAIL_ADDRESS, "emailAddress", ()),
    (NameOID.STREET_ADDRESS, "street", ("streetAddress",)),
    (NameOID.SERIAL_NUMBER, "serialNumber", ()),
    (NameOID.SURNAME, "SN", ("surname",)),
    (NameOID.GIVEN_NAME, "GN", ("givenName",)),
    (NameOID.TITLE, "title", ()),
    (NameOID.INITIALS, "initials", ()),
    (NameOID.GENERATION_QUALIFIER, "generationQualifier", ()),
    (NameOID.DN_QUALIFIER, "dnQualifier", ()),
    (NameOID.PSEUDONYM, "pseudonym", ()),
    (NameOID.DOMAIN_COMPONENT, "DC", ("domainComponent",)),
    (NameOID.USER_ID, "UID", ("userId",)),
    (NameOID.POSTAL_CODE, "postalCode", ()),
    (NameOID.BUSINESS_CATEGORY, "businessCategory", ()),
    (NameOID.JURISDICTION_COUNTRY_NAME, "jurisdictionC", ("jurisdictionCountryName",)),
    (NameOID.JURISDICTION_STATE_OR_PROVINCE_NAME, "jurisdictionST",
     ("jurisdictionStateOrProvinceName",)),
    (NameOID.JURISDICTION_LOCALITY_NAME, "jurisdictionL", ("jurisdictionLocalityName",)),
    (NameOID.UNSTRUCTURED_NAME, "unstructuredName", ()),
]

#: Accepted attribute names (lower case) -> OID.
ATTRIBUTES: Mapping[str, ObjectIdentifier] = MappingProxyType(
    {
        alias.lower(): oid
        for oid, short, aliases in _NAMES
        for alias in (short,) + aliases
    }
)
#: OID -> the short name used when formatting the slash form.
_SHORT: Mapping[ObjectIdentifier, str] = MappingProxyType({oid: s for oid, s, _ in _NAMES})

#: Upper bounds on value length (OpenSSL's ASN1_STRING_TABLE).
_MAX_LENGTH: Mapping[ObjectIdentifier, int] = MappingProxyType(
    {
        NameOID.COMMON_NAME: 64,
        NameOID.ORGANIZATION_NAME: 64,
        NameOID.ORGANIZATIONAL_UNIT_NAME: 64,
        NameOID.LOCALITY_NAME: 128,
        NameOID.STATE_OR_PROVINCE_NAME: 128,
        NameOID.EMAIL_ADDRESS: 128,
        NameOID.SERIAL_NUMBER: 64,
        NameOID.TITLE: 64,
        NameOID.SURNAME: 64,
        NameOID.GIVEN_NAME: 64,
        NameOID.POSTAL_CODE: 40,
    }
)
_DEFAULT_MAX_LENGTH = 256


def decode_escapes(data: bytes) -> bytes:
    """Replace every ``\\xHH`` by the byte it names."""
    return _ESCAPE.sub(lambda match: bytes([int(match.group(1), 16)]), data)


def _describe(byte: int) -> str:
    names = {0: "NUL", 9: "TAB", 10: "LF", 13: "CR", 32: "space"}
    return names.get(byte, repr(chr(byte)))


def check_forbidden(data: bytes, what: str, forbidden: bytes = FORBIDDEN_SUBJECT) -> None:
    """Refuse ``data`` when it holds one of the ``forbidden`` bytes."""
    for position, byte in enumerate(data):
        if byte in forbidden:
            raise RequestRefused(
                f"forbidden character {_describe(byte)} in {what} at offset {position}"
            )


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestRefused(
            f"{what} is not valid UTF-8 ({error.reason} at {error.start})"
        ) from None


def clean_subject(raw: bytes) -> str:
    """Decode escapes, refuse forbidden characters, return the text."""
    decoded = decode_escapes(raw)
    check_forbidden(decoded, "subject", FORBIDDEN_SUBJECT)
    return _utf8(decoded, "subject")


def clean_san(raw: bytes) -> str:
    """Decode escapes, refuse forbidden characters (space included), return the text."""
    decoded = decode_escapes(raw)
    check_forbidden(decoded, "subjectAltName", FORBIDDEN_SAN)
    return _utf8(decoded, "subjectAltName")


def _attribute(name: str, value: str) -> x509.NameAttribute[str]:
    oid = ATTRIBUTES.get(name.strip().lower())
    if oid is None:
        raise RequestRefused(f"unknown subject attribute {name!r}")
    label = _SHORT[oid]
    if oid in (NameOID.COUNTRY_NAME, NameOID.JURISDICTION_COUNTRY_NAME):
        if len(value) != 2 or not (value.isascii() and value.isalpha()):
            raise RequestRefused(f"subject {label} must be two letters, got {value!r}")
        value = value.upper()
    if oid == NameOID.EMAIL_ADDRESS and not value.isascii():
        raise RequestRefused(f"subject emailAddress must be ASCII, got {value!r}")
    if oid == NameOID.DOMAIN_COMPONENT and not value.isascii():
        raise RequestRefused(f"subject DC must be ASCII, got {value!r}")
    maximum = _MAX_LENGTH.get(oid, _DEFAULT_MAX_LENGTH)
    if len(value) > maximum:
        raise RequestRefused(
            f"subject {label} is {len(value)} characters long, at most {maximum} allowed"
        )
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise RequestRefused(f"subject {label} contains a control character")
    try:
        return x509.NameAttribute(oid, value)
    except ValueError as error:
        raise RequestRefused(f"subject {label}: {error}") from None


def name_from_pairs(pairs: Iterable[tuple[str, str]]) -> x509.Name:
    """An ``x509.Name`` from (attribute name, value) pairs, in order.

    Pairs with an empty value are skipped; an empty result is refused.
    """
    attributes = [_attribute(name, value) for name, value in pairs if value != ""]
    if not attributes:
        raise RequestRefused("empty subject")
    return x509.Name(attributes)


def parse_slash_dn(text: str) -> x509.Name:
    """Parse ``/type=value/type=value`` (see module docstring for the rules)."""
    if not text.startswith("/"):
        raise RequestRefused(f"subject must start with '/': {text[:60]!r}")
    pairs: list[tuple[str, str]] = []
    for component in text[1:].split("/"):
        if component == "":
            continue
        name, equals, value = component.partition("=")
        if not equals:
            raise RequestRefused(
                f"subject component {component[:40]!r} has no '=' (a '/' cannot appear in a value)"
            )
        if not name.strip():
            raise RequestRefused(f"subject component {component[:40]!r} has no attribute name")
        pairs.append((name, value))
    return name_from_pairs(pairs)


def check_name_values(name: x509.Name, what: str = "subject") -> None:
    """Apply the forbidden-character rule to every value of ``name``.

    For subjects taken from a CSR or SPKAC rather than the request line.
    """
    for attribute in name:
        value = attribute.value
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        check_forbidden(data, what, FORBIDDEN_SUBJECT)


def format_slash_dn(name: x509.Name) -> str:
    """The OpenSSL slash form of ``name`` (as in ``index.txt``)."""
    parts: list[str] = []
    for attribute in name:
        label = _SHORT.get(attribute.oid, attribute.oid.dotted_string)
        value = attribute.value
        text = value if isinstance(value, str) else bytes(value).hex()
        parts.append(f"/{label}={text}")
    return "".join(parts)


def emails_of(name: x509.Name) -> Sequence[str]:
    """The emailAddress values of ``name``, in order."""
    return [str(a.value) for a in name.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
