"""Netscape SPKAC parsing and signature verification."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from signer.server.errors import RequestRefused
from signer.server.spkac import is_spkac, parse_spkac, verify_spkac
from tests.support.testca import rsa_key
from tests.support.x509_requests import spkac_der, spkac_text


def _spki(key) -> bytes:  # type: ignore[no-untyped-def]
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_legacy_vector_spkac_is_verified(vectors_dir: Path) -> None:
    """The browser-style MD5-signed SPKAC of vector 03 verifies; its DN lines come back."""
    vector = json.loads((vectors_dir / "03_sign_x509_spkac.json").read_text())
    data = vector["request"]["fields"][0]["text"].encode()
    assert is_spkac(data)
    request = parse_spkac(data)
    assert request.signature_hash == "md5"
    assert request.challenge == "perlref"
    assert request.subject_pairs == (("CN", "Bob Builder"), ("emailAddress", "bob@example.org"))
    assert request.public_key.key_size == 2048  # type: ignore[union-attr]


@pytest.mark.parametrize("digest", ["md5", "sha1", "sha256"])
def test_our_spkacs_verify_with_every_digest(digest: str) -> None:
    """SPKACs signed with MD5, SHA-1 and SHA-256 all verify and yield the signer's key."""
    key = rsa_key(2048, 3)
    public_key, challenge, hash_name = verify_spkac(spkac_der(key, digest=digest))
    assert hash_name == digest
    assert challenge == "test-challenge"
    assert _spki(public_key) == _spki(key.public_key())


def test_our_spkac_is_accepted_by_openssl(tmp_path: Path) -> None:
    """``openssl spkac -verify`` agrees that the helper builds valid SPKACs."""
    path = tmp_path / "request.spkac"
    path.write_bytes(spkac_text(separator="="))
    result = subprocess.run(
        ["openssl", "spkac", "-in", str(path), "-verify", "-noout"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Signature OK" in result.stdout + result.stderr


def test_broken_signature_is_refused() -> None:
    """An SPKAC whose signature was altered is refused."""
    with pytest.raises(RequestRefused, match="SPKAC signature does not verify"):
        parse_spkac(spkac_text(break_signature=True))


def test_signature_by_another_key_is_refused() -> None:
    """An SPKAC carrying key A but signed by key B is refused."""
    good = spkac_der(rsa_key(2048, 3))
    other = spkac_der(rsa_key(2048, 4))
    # Same structure layout (both 2048-bit): splice B's signature onto A's body.
    swapped = good[:-256] + other[-256:]
    with pytest.raises(RequestRefused, match="does not verify"):
        verify_spkac(swapped)


def test_marker_recognition() -> None:
    """``SPKAC=`` with or without spaces marks an SPKAC; a PEM CSR does not."""
    assert is_spkac(b"CN=x\nSPKAC=MIIB\n")
    assert is_spkac(b"SPKAC = MIIB")
    assert not is_spkac(b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n")
    assert not is_spkac(b"CN=SPKAC=in a value")


def test_numbered_prefixes_are_dropped_like_openssl() -> None:
    """``0.OU=`` and ``1.OU=`` give two OU pairs; comments and blank lines are skipped."""
    request = parse_spkac(spkac_text(["# comment", "", "0.OU=a", "1.OU=b", "CN = c"]))
    assert request.subject_pairs == (("OU", "a"), ("OU", "b"), ("CN", "c"))


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"CN=x\nSPKAC=@@@not base64@@@\n", "not valid base64"),
        (b"SPKAC=" + base64.b64encode(b"\x30\x03\x02\x01\x01") + b"\n", "malformed SPKAC"),
        (b"SPKAC=" + base64.b64encode(b"garbage garbage") + b"\n", "malformed SPKAC"),
        (b"CN=x\nno equals sign\nSPKAC=AAAA\n", "not name=value"),
        (b"SPKAC=AAAA\nSPKAC=AAAA\n", "more than one SPKAC"),
        (b"CN=\xff\nSPKAC=AAAA\n", "not UTF-8"),
    ],
)
def test_malformed_spkac_requests_are_refused(data: bytes, reason: str) -> None:
    """Garbage in any part of an SPKAC request is refused with a reason, never a crash."""
    with pytest.raises(RequestRefused) as caught:
        parse_spkac(data)
    assert reason in caught.value.reason


def test_truncated_spkac_is_refused() -> None:
    """Every truncation of a valid SPKAC is refused (no exception escapes)."""
    der = spkac_der()
    for length in range(0, len(der), 37):
        with pytest.raises(RequestRefused):
            verify_spkac(der[:length])
