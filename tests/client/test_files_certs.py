"""File layout, atomic writes, certificate facts and the OpenPGP packet reader."""

from __future__ import annotations

import base64
import datetime
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from signer.client.certs import (
    BadCertificate,
    dearmor,
    iter_packets,
    load_certificate,
    matches_request,
    openpgp_certification_expiry,
    request_public_key_der,
    serial_hex,
)
from signer.client.files import FileLayout, relative_path, write_atomic
from tests.support.testca import make_csr, make_root, rsa_key


def test_relative_path_follows_the_legacy_layout() -> None:
    """<prefix>/<id // 1000>/<prefix>-<id>.<ext> for every table."""
    assert relative_path("emailcerts", 7, "csr") == "client/0/client-7.csr"
    assert relative_path("domaincerts", 12345, "crt") == "server/12/server-12345.crt"
    assert relative_path("orgemailcerts", 1000, "crt") == "orgclient/1/orgclient-1000.crt"
    assert relative_path("orgdomaincerts", 999, "crt") == "orgserver/0/orgserver-999.crt"
    assert relative_path("gpg", 2001, "csr") == "gpg/2/gpg-2001.csr"
    with pytest.raises(ValueError):
        relative_path("users", 1, "crt")


def test_crt_name_uses_the_configured_prefix(tmp_path: Path) -> None:
    """crt_name is the prefix plus the relative path, the file lives under crt_dir."""
    layout = FileLayout(tmp_path / "csr", tmp_path / "crt", "../crt")
    assert layout.crt_name("emailcerts", 4321) == "../crt/client/4/client-4321.crt"
    assert layout.crt_path("emailcerts", 4321) == tmp_path / "crt/client/4/client-4321.crt"
    assert FileLayout(tmp_path, tmp_path, "").crt_name("gpg", 1) == "gpg/0/gpg-1.crt"


def test_write_atomic_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    """The target holds the new bytes, folders are created, no temp file remains."""
    target = tmp_path / "a" / "b" / "file.crt"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["file.crt"]


def test_write_atomic_reuses_a_temporary_left_by_a_crash(tmp_path: Path) -> None:
    """A half-written temporary from a killed process is overwritten, not piled up."""
    target = tmp_path / "file.crt"
    (tmp_path / ".file.crt.tmp").write_bytes(b"half-written garbage from a kill -9, longer")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["file.crt"]


def test_write_atomic_failure_keeps_the_old_file(tmp_path: Path) -> None:
    """When the rename cannot happen the old content stays and the temp file is removed."""
    target = tmp_path / "file.crt"
    target.write_bytes(b"old")
    blocker = tmp_path / "dir.crt"
    blocker.mkdir()
    with pytest.raises(OSError):
        write_atomic(blocker, b"new")  # cannot replace a directory
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["dir.crt", "file.crt"]


def _certificate(serial: int) -> x509.Certificate:
    root = make_root()
    now = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(root.certificate.subject)
        .issuer_name(root.certificate.subject)
        .public_key(rsa_key(2048, 4).public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now)
        .sign(root.key, hashes.SHA256())
    )


@pytest.mark.parametrize(("serial", "text"), [(1, "01"), (0xABC, "0ABC"), (0x1F2E3D, "1F2E3D")])
def test_serial_is_upper_case_even_length_hex(serial: int, text: str) -> None:
    """Like ``openssl x509 -serial``."""
    assert serial_hex(serial) == text
    assert load_certificate(_certificate(serial).public_bytes(serialization.Encoding.PEM)).serial == text


def test_der_becomes_pem_and_expire_is_utc_text() -> None:
    """DER input yields PEM output; notAfter as YYYY-MM-DD HH:MM:SS."""
    cert = _certificate(5)
    facts = load_certificate(cert.public_bytes(serialization.Encoding.DER))
    assert facts.pem == cert.public_bytes(serialization.Encoding.PEM)
    assert facts.expire == "2030-01-02 03:04:05"


@pytest.mark.parametrize("data", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n"])
def test_bad_certificates_raise(data: bytes) -> None:
    """Anything that is not a certificate raises BadCertificate."""
    with pytest.raises(BadCertificate):
        load_certificate(data)


def test_matches_request_compares_public_keys() -> None:
    """A certificate matches the CSR of its key and no other."""
    facts = load_certificate(_certificate(9).public_bytes(serialization.Encoding.PEM))
    assert matches_request(facts, make_csr("x", index=4))
    assert not matches_request(facts, make_csr("x", index=5))
    assert not matches_request(facts, b"garbage")


def test_spkac_public_key_is_read() -> None:
    """An SPKAC request (openssl spkac) yields the same key as the certificate."""
    import subprocess

    key = rsa_key(2048, 4)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    spkac = subprocess.run(["openssl", "spkac", "-key", "/dev/stdin", "-challenge", "x"],
                           input=pem, capture_output=True, check=True).stdout
    assert spkac.startswith(b"SPKAC=")
    wanted = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    assert request_public_key_der(spkac) == wanted
    # as the web application stores it: more attribute lines around the SPKAC line
    assert request_public_key_der(b"CN=Ann\n" + spkac.strip() + b"\nemailAddress=a@example.org\n") == wanted
    with pytest.raises(BadCertificate):
        request_public_key_der(b"SPKAC=AAAA")


# -- OpenPGP packets -----------------------------------------------------------


def _subpacket(kind: int, value: bytes) -> bytes:
    return bytes([len(value) + 1, kind]) + value


def _signature(issuer: bytes, created: int, expiration: int | None, sigtype: int = 0x10) -> bytes:
    hashed = _subpacket(2, created.to_bytes(4, "big"))
    if expiration is not None:
        hashed += _subpacket(3, expiration.to_bytes(4, "big"))
    unhashed = _subpacket(16, issuer)
    body = bytes([4, sigtype, 1, 8]) + len(hashed).to_bytes(2, "big") + hashed
    body += len(unhashed).to_bytes(2, "big") + unhashed + b"\x00\x00" + b"\x00\x01\x01"
    return bytes([0xC0 | 2, len(body)]) + body


def _key(self_id_source: bytes = b"\x04" + b"\x00" * 4 + b"\x01" + b"\x00\x08\xff") -> bytes:
    packet = bytes([0x99]) + len(self_id_source).to_bytes(2, "big") + self_id_source  # old format tag 6
    uid = b"Alice <a@example.org>"
    return packet + bytes([0xB4, len(uid)]) + uid  # old format tag 13


def test_packet_parser_reads_old_and_new_headers() -> None:
    """Old-format key/user ID packets and new-format signature packets are split right."""
    data = _key() + _signature(b"\x11" * 8, 1000, 500)
    assert [tag for tag, _ in iter_packets(data)] == [6, 13, 2]


def test_certification_expiry_of_the_ca_signature() -> None:
    """creation + expiration of the CA's certification, as UTC text; other issuers ignored."""
    created = int(datetime.datetime(2027, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
    data = _key() + _signature(b"\x22" * 8, created, 86400 * 10) + _signature(b"\x11" * 8, created, 86400 * 366)
    assert openpgp_certification_expiry(data, "1111111111111111") == "2028-01-02 00:00:00"
    assert openpgp_certification_expiry(data, "22222222") == "2027-01-11 00:00:00"
    with pytest.raises(BadCertificate):
        openpgp_certification_expiry(data, "3333333333333333")


def test_armor_is_decoded() -> None:
    """ASCII armor with headers and checksum gives the binary packets."""
    data = _key() + _signature(b"\x11" * 8, 1, None)
    armored = (b"-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: test\n\n"
               + base64.encodebytes(data) + b"=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n")
    assert dearmor(armored) == data
    assert openpgp_certification_expiry(armored, "1111111111111111") == "0000-00-00 00:00:00"


@pytest.mark.parametrize("data", [b"", b"\x00\x01", b"\x99\x00\x10abc", b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n"])
def test_garbage_keys_raise_bad_certificate(data: bytes) -> None:
    """Truncated or non-OpenPGP data is a BadCertificate, never another exception."""
    with pytest.raises(BadCertificate):
        openpgp_certification_expiry(data)


def test_outbox_hold_release_and_scan(tmp_path: Path) -> None:
    """Held mails become ready on release; strangers in the folder are ignored; load round-trips."""
    from signer.client.mailer import Mail
    from signer.client.outbox import Outbox

    outbox = Outbox(tmp_path / "outbox")
    mails = [Mail("a@example.org", "s", "b", b"Subject: x\n\nbody\n"), Mail("b@example.org", "s", "b", b"m2\n")]
    held = outbox.hold("emailcerts", 7, "issued", mails)
    (tmp_path / "outbox" / "notes.txt").write_text("not a mail")
    assert [(h.table, h.row_id, h.event) for h in outbox.held()] == [("emailcerts", 7, "issued")] * 2
    assert outbox.ready() == []
    # holding again for the same key replaces, never duplicates
    held = outbox.hold("emailcerts", 7, "issued", mails[:1])
    assert len(outbox.held()) == 1
    ready = outbox.release(held)
    assert outbox.held() == [] and outbox.ready() == ready
    loaded = Outbox.load(ready[0])
    assert loaded is not None and loaded.recipient == "a@example.org" and loaded.message == mails[0].message
    Outbox.discard(ready[0])
    assert outbox.ready() == [] and Outbox.load(ready[0]) is None
