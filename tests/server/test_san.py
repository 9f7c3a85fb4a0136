"""subjectAltName list parsing (OpenSSL syntax)."""

from __future__ import annotations

import ipaddress

import pytest
from asn1crypto import core
from cryptography import x509

from signer.server.errors import RequestRefused
from signer.server.san import XMPP_ADDR, format_san, parse_san
from signer.server.subject import clean_san


def test_vector_04_san_list(vectors_dir) -> None:  # type: ignore[no-untyped-def]
    """The legacy SAN of vector 04 (DNS + XmppAddr otherName) parses in order."""
    import json

    vector = json.loads((vectors_dir / "04_sign_x509_server_san.json").read_text())
    text = vector["request"]["fields"][1]["text"]
    names = parse_san(clean_san(text.encode()))
    assert names == [
        x509.DNSName("www.example.org"),
        x509.OtherName(XMPP_ADDR, core.UTF8String("www.example.org").dump()),
        x509.DNSName("example.org"),
        x509.OtherName(XMPP_ADDR, core.UTF8String("example.org").dump()),
    ]
    assert format_san(names) == text


def test_every_supported_type() -> None:
    """DNS, email, IP (v4 and v6), URI and otherName;UTF8 give the matching general names."""
    names = parse_san(
        "DNS:*.example.org,email:a@example.org,IP:192.0.2.1,IP:2001:db8::1,"
        "URI:https://example.org/x,otherName:1.3.6.1.5.5.7.8.5;UTF8String:j@example.org"
    )
    assert names == [
        x509.DNSName("*.example.org"),
        x509.RFC822Name("a@example.org"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
        x509.UniformResourceIdentifier("https://example.org/x"),
        x509.OtherName(XMPP_ADDR, b"\x0c\x0dj@example.org"),
    ]


def test_type_names_ignore_case_and_empty_entries_are_skipped() -> None:
    """``dns:``/``EMAIL:`` work; ``a,,b`` and a trailing comma add nothing."""
    assert parse_san("dns:a.example.org,,EMAIL:x@example.org,") == [
        x509.DNSName("a.example.org"),
        x509.RFC822Name("x@example.org"),
    ]
    assert parse_san("") == []


def test_email_copy_takes_the_subject_emails() -> None:
    """``email:copy`` copies the subject's addresses, as OpenSSL does."""
    assert parse_san("email:copy", ["a@example.org", "b@example.org"]) == [
        x509.RFC822Name("a@example.org"),
        x509.RFC822Name("b@example.org"),
    ]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("RID:1.2.3.4", "unsupported subjectAltName type 'RID'"),
        ("dirName:sect", "unsupported subjectAltName type 'dirName'"),
        ("foo:bar", "unsupported subjectAltName type 'foo'"),
        ("www.example.org", "has no type"),
        ("DNS:", "empty value"),
        ("DNS:-bad-.example.org", "invalid label"),
        ("DNS:a..example.org", "invalid label"),
        ("DNS:bücher.example", "not ASCII"),
        ("email:no-at-sign", "not local@domain"),
        ("email:a b@example.org", "invalid local part"),
        ("IP:300.1.1.1", "not an IP address"),
        ("URI:relative/path", "absolute ASCII URI"),
        ("otherName:1.3.6.1.5.5.7.8.5", "<oid>;UTF8:<value>"),
        ("otherName:xmpp;UTF8:a@example.org", "not a dotted OID"),
        ("otherName:1.3.6.1.5.5.7.8.5;IA5:a@example.org", "not UTF8:<value>"),
        ("otherName:1.3.6.1.5.5.7.8.5;UTF8:", "empty value"),
        (",".join(["DNS:a.example.org"] * 1001), "at most 1000"),
    ],
)
def test_bad_san_entries_are_refused(text: str, reason: str) -> None:
    """Unknown types and values that do not fit their type are refused with a reason."""
    with pytest.raises(RequestRefused) as caught:
        parse_san(text)
    assert reason in caught.value.reason
