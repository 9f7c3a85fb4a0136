"""Subject handling: escapes, forbidden characters, slash-form DN parsing."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from signer.server.errors import RequestRefused
from signer.server.subject import (
    check_name_values,
    clean_san,
    clean_subject,
    decode_escapes,
    emails_of,
    format_slash_dn,
    name_from_pairs,
    parse_slash_dn,
)


def test_decode_escapes_turns_hex_escapes_into_bytes() -> None:
    """``\\xHH`` (either hex case) becomes the byte; other text is untouched."""
    assert decode_escapes(rb"/CN=Ren\xc3\xA9 x") == "/CN=René x".encode()
    assert decode_escapes(rb"a\x2fb") == b"a/b"
    assert decode_escapes(rb"no escape \xZZ") == rb"no escape \xZZ"


@pytest.mark.parametrize(
    "raw, label",
    [
        (b"/CN=a\x00b", "NUL"),
        (b"/CN=a\rb", "CR"),
        (b"/CN=a\nb", "LF"),
        (b"/CN=a\tb", "TAB"),
        (b"/CN=a#b", "'#'"),
        (b'/CN=a"b', "'\"'"),
        (b"/CN=a'b", '"\'"'),
        (b"/CN=a\\b", "'\\\\'"),
        (rb"/CN=a\x0ab", "LF"),  # an escape decoding to a forbidden byte
        (rb"/CN=a\x5cb", "'\\\\'"),
    ],
)
def test_forbidden_characters_in_subject_are_refused(raw: bytes, label: str) -> None:
    """Each legacy-forbidden character is refused, also when it came from an escape."""
    with pytest.raises(RequestRefused) as caught:
        clean_subject(raw)
    assert "forbidden character" in caught.value.reason
    assert label in caught.value.reason


def test_space_is_allowed_in_subject_but_not_in_san() -> None:
    """A space is fine in a subject and refused in a SAN (legacy rule)."""
    assert clean_subject(b"/CN=Alice Tester") == "/CN=Alice Tester"
    with pytest.raises(RequestRefused, match="space"):
        clean_san(b"DNS:a.example.org, DNS:b.example.org")
    with pytest.raises(RequestRefused, match="space"):
        clean_san(rb"DNS:a\x20b.example.org")


def test_invalid_utf8_subject_is_refused() -> None:
    """Bytes that are not UTF-8 after decoding are refused with a reason."""
    with pytest.raises(RequestRefused, match="UTF-8"):
        clean_subject(rb"/CN=\xff\xfe")


def test_parse_legacy_client_subject() -> None:
    """The subject of vector 02 gives CN then emailAddress, in that order."""
    name = parse_slash_dn("/CN=Alice Tester/emailAddress=alice@example.org")
    assert [(a.oid, a.value) for a in name] == [
        (NameOID.COMMON_NAME, "Alice Tester"),
        (NameOID.EMAIL_ADDRESS, "alice@example.org"),
    ]
    assert emails_of(name) == ["alice@example.org"]


def test_parse_all_usual_short_names_and_aliases() -> None:
    """Short and long names of the usual attributes map to their OIDs, case-insensitively."""
    name = parse_slash_dn(
        "/C=de/ST=Bavaria/L=Munich/O=Example e.V./OU=IT/CN=Max/emailAddress=m@example.org"
        "/organizationalUnitName=Ops/serialNumber=42/SN=Muster/GN=Max/DC=example/uid=max"
        "/commonname=Second"
    )
    oids = [a.oid for a in name]
    assert oids == [
        NameOID.COUNTRY_NAME,
        NameOID.STATE_OR_PROVINCE_NAME,
        NameOID.LOCALITY_NAME,
        NameOID.ORGANIZATION_NAME,
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.COMMON_NAME,
        NameOID.EMAIL_ADDRESS,
        NameOID.ORGANIZATIONAL_UNIT_NAME,
        NameOID.SERIAL_NUMBER,
        NameOID.SURNAME,
        NameOID.GIVEN_NAME,
        NameOID.DOMAIN_COMPONENT,
        NameOID.USER_ID,
        NameOID.COMMON_NAME,
    ]
    assert name.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "DE"


def test_plus_is_literal_and_empty_values_are_skipped() -> None:
    """'+' is no multi-RDN separator; ``/O=`` is skipped like openssl -subj does."""
    name = parse_slash_dn("/CN=a+b/O=/OU=x")
    assert [(a.oid, a.value) for a in name] == [
        (NameOID.COMMON_NAME, "a+b"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "x"),
    ]
    assert len(list(name.rdns)) == 2


@pytest.mark.parametrize(
    "text, reason",
    [
        ("CN=no leading slash", "start with '/'"),
        ("/CN=Acme/S/CN=x", "has no '='"),
        ("/FOO=bar", "unknown subject attribute 'FOO'"),
        ("/=value", "no attribute name"),
        ("/", "empty subject"),
        ("/CN=", "empty subject"),
        ("/C=DEU", "two letters"),
        ("/CN=" + "x" * 65, "at most 64"),
        ("/emailAddress=rené@example.org", "ASCII"),
        ("/CN=a\x7fb", "control character"),
    ],
)
def test_bad_subjects_are_refused_with_a_reason(text: str, reason: str) -> None:
    """Malformed slash-form subjects give RequestRefused naming the problem."""
    with pytest.raises(RequestRefused) as caught:
        parse_slash_dn(text)
    assert reason in caught.value.reason


def test_utf8_values_survive() -> None:
    """Non-ASCII values (after escape decoding) end up as UTF-8 text in the name."""
    name = parse_slash_dn(clean_subject(rb"/CN=Ren\xc3\xa9 M\xc3\xbcller"))
    assert name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "René Müller"


def test_format_slash_dn_round_trips() -> None:
    """format_slash_dn gives the index.txt form that parses back to the same name."""
    text = "/C=DE/O=Example/CN=Alice Tester/emailAddress=alice@example.org"
    name = parse_slash_dn(text)
    assert format_slash_dn(name) == text
    assert parse_slash_dn(format_slash_dn(name)) == name


def test_name_from_pairs_and_check_name_values() -> None:
    """Pairs build a name; values of a foreign name are checked for forbidden characters."""
    name = name_from_pairs([("CN", "Bob"), ("emailAddress", "bob@example.org")])
    assert format_slash_dn(name) == "/CN=Bob/emailAddress=bob@example.org"
    check_name_values(name)
    bad = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a#b")])
    with pytest.raises(RequestRefused, match="forbidden character '#' in csr subject"):
        check_name_values(bad, "csr subject")
