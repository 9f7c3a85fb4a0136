"""subjectAltName lists in OpenSSL config syntax.

``DNS:www.example.org,email:a@example.org,IP:192.0.2.1,URI:https://example.org/,
otherName:1.3.6.1.5.5.7.8.5;UTF8:example.org`` -- comma separated
``type:value`` entries. Type names are matched without regard to case;
``UTF8String`` is accepted as a synonym of ``UTF8`` in ``otherName``. Empty
entries (``a,,b`` or a trailing comma) are skipped. ``email:copy`` copies the
subject's emailAddress values, as in OpenSSL. Every other type (``RID``,
``dirName``...) is refused, as is any value that does not fit its type.

The text given here has already been through
:func:`signer.server.subject.clean_san` (escapes decoded, forbidden
characters refused).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Sequence

from asn1crypto import core
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from signer.server.errors import RequestRefused

__all__ = ["MAX_ENTRIES", "XMPP_ADDR", "format_san", "parse_san"]

#: id-on-xmppAddr (RFC 6120): the otherName of the jabber profile.
XMPP_ADDR = ObjectIdentifier("1.3.6.1.5.5.7.8.5")
#: A SAN list longer than this is refused (bounds the work per request).
MAX_ENTRIES = 1000

_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:.+")
_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9.!$%&*+/=?^_`{|}~-]+$")


def _dns_name(value: str, what: str = "DNS") -> str:
    if not value.isascii():
        raise RequestRefused(f"{what} name {value!r} is not ASCII (use the xn-- form)")
    if len(value) > 253:
        raise RequestRefused(f"{what} name is {len(value)} characters long, at most 253")
    labels = value.split(".")
    for position, label in enumerate(labels):
        if position == 0 and label == "*" and len(labels) > 2:
            continue
        if not _LABEL.match(label):
            raise RequestRefused(f"{what} name {value!r} has an invalid label {label!r}")
    return value


def _email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise RequestRefused(f"email {value!r} is not local@domain")
    if not _EMAIL_LOCAL.match(local):
        raise RequestRefused(f"email {value!r} has an invalid local part")
    _dns_name(domain, "email domain")
    return value


def _uri(value: str) -> str:
    if not value.isascii() or not _SCHEME.match(value):
        raise RequestRefused(f"URI {value!r} is not an absolute ASCII URI")
    return value


def _other_name(value: str) -> x509.OtherName:
    oid_text, semicolon, typed = value.partition(";")
    if not semicolon:
        raise RequestRefused(f"otherName {value!r} is not <oid>;UTF8:<value>")
    try:
        oid = ObjectIdentifier(oid_text)
    except ValueError:
        raise RequestRefused(f"otherName type {oid_text!r} is not a dotted OID") from None
    kind, colon, text = typed.partition(":")
    if not colon or kind.upper() not in ("UTF8", "UTF8STRING"):
        raise RequestRefused(f"otherName value {typed!r} is not UTF8:<value>")
    if not text:
        raise RequestRefused("otherName with an empty value")
    return x509.OtherName(oid, core.UTF8String(text).dump())


def parse_san(text: str, subject_emails: Sequence[str] = ()) -> list[x509.GeneralName]:
    """Parse a SAN list into general names; raise :class:`RequestRefused`."""
    names: list[x509.GeneralName] = []
    entries = [entry for entry in text.split(",") if entry]
    if len(entries) > MAX_ENTRIES:
        raise RequestRefused(f"{len(entries)} subjectAltName entries, at most {MAX_ENTRIES}")
    for entry in entries:
        kind, colon, value = entry.partition(":")
        if not colon:
            raise RequestRefused(f"subjectAltName entry {entry[:60]!r} has no type")
        kind = kind.lower()
        if not value:
            raise RequestRefused(f"subjectAltName entry {entry[:60]!r} has an empty value")
        if kind == "dns":
            names.append(x509.DNSName(_dns_name(value)))
        elif kind == "email":
            if value == "copy":
                names.extend(x509.RFC822Name(_email(email)) for email in subject_emails)
            else:
                names.append(x509.RFC822Name(_email(value)))
        elif kind == "ip":
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(value)))
            except ValueError:
                raise RequestRefused(f"IP {value!r} is not an IP address") from None
        elif kind == "uri":
            names.append(x509.UniformResourceIdentifier(_uri(value)))
        elif kind == "othername":
            names.append(_other_name(value))
        else:
            raise RequestRefused(f"unsupported subjectAltName type {entry.partition(':')[0]!r}")
    return names


def format_san(names: Sequence[x509.GeneralName]) -> str:
    """The OpenSSL text form of ``names`` (for logs and the CA database)."""
    parts: list[str] = []
    for name in names:
        if isinstance(name, x509.DNSName):
            parts.append(f"DNS:{name.value}")
        elif isinstance(name, x509.RFC822Name):
            parts.append(f"email:{name.value}")
        elif isinstance(name, x509.IPAddress):
            parts.append(f"IP:{name.value}")
        elif isinstance(name, x509.UniformResourceIdentifier):
            parts.append(f"URI:{name.value}")
        elif isinstance(name, x509.OtherName):
            try:
                text = core.UTF8String.load(name.value).native
            except (ValueError, TypeError):
                text = name.value.hex()
            parts.append(f"otherName:{name.type_id.dotted_string};UTF8:{text}")
        else:
            parts.append(str(name))
    return ",".join(parts)
