"""``signer ping/sign-x509/sign-openpgp/revoke`` end to end over a real pty pair.

The CLI runs as a child process (``python -m signer.cli``) on one end of a
socat pty pair; a signer runs in ANOTHER child process on the other end:
either the project's scripted responder (``tests.support.responder``, our real
``ServerLinkProtocol``) or ``tests.cli.fake_signer``, an independent blocking
implementation of the wire contract that logs every request it decoded so the
tests can check the exact header and fields that went over the line.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from signer.cli.errors import (
    EXIT_APPLY_FAILED,
    EXIT_EMPTY_ANSWER,
    EXIT_LINK_FAILURE,
    EXIT_OK,
)
from signer.protocol import codec
from tests.support import testca
from tests.support.pty import PtyPair, pty_pair, socat_available

pytestmark = pytest.mark.skipif(not socat_available(), reason="socat is not installed")

REPO = Path(__file__).resolve().parents[2]
STARTUP = 20.0


@pytest.fixture
def pair() -> Iterator[PtyPair]:
    """A fresh socat pty pair (fresh so no stale bytes cross tests)."""
    with pty_pair() as created:
        yield created


@contextmanager
def child(command: list[str], ready: str) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` in REPO, wait for a stdout line starting with ``ready``,
    and terminate it (only it) at exit."""
    process = subprocess.Popen(
        command, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode(errors="replace")
        if not line.startswith(ready):
            process.kill()
            _, err = process.communicate(timeout=STARTUP)
            raise AssertionError(f"{command} did not start: {line!r} {err.decode(errors='replace')}")
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def responder(device: str, payload_file: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """The project's scripted responder (real ServerLinkProtocol) on ``device``."""
    command = [sys.executable, "-m", "tests.support.responder", "--device", device]
    if payload_file is not None:
        command += ["--payload-file", str(payload_file)]
    with child(command, "READY") as process:
        yield process


@contextmanager
def fake_signer(device: str, log: Path, answer: bytes) -> Iterator[subprocess.Popen[bytes]]:
    """The independent fake signer on ``device``, answering ``answer``, logging to ``log``."""
    answer_file = log.with_suffix(".answer")
    answer_file.write_bytes(answer)
    command = [
        sys.executable, "-m", "tests.cli.fake_signer",
        "--device", device, "--answer", str(answer_file), "--log", str(log),
    ]
    with child(command, "fake signer ready") as process:
        yield process


def signer(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI as a child process."""
    return subprocess.run(
        [sys.executable, "-m", "signer.cli", *args],
        cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False,
    )


def logged(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def field_bytes(entry: dict[str, Any]) -> list[bytes]:
    return [bytes.fromhex(value) for value in entry["fields"]]


# -- ping ------------------------------------------------------------------


def test_ping_against_a_responder_in_another_process(pair: PtyPair) -> None:
    """`signer ping --count 5` against the real responder: exit 0, five RTT lines and a median."""
    with responder(pair.b):
        done = signer("ping", "--device", pair.a, "--count", "5", "--timeout", "10")
    out = done.stdout.decode()
    assert done.returncode == EXIT_OK, done.stderr.decode()
    rtts = re.findall(r"NUL round trip (\d)/5: ([0-9.]+) ms", out)
    assert [number for number, _ in rtts] == ["1", "2", "3", "4", "5"]
    assert all(0 < float(ms) < 5000 for _, ms in rtts)
    assert re.search(r"median [0-9.]+ ms \(min [0-9.]+, max [0-9.]+\) over 5 round trips", out)


def test_ping_sends_the_current_utc_time(pair: PtyPair, tmp_path: Path) -> None:
    """The NUL request carries now (UTC) as MMDDhhmmYYYY.SS with empty fields 2 and 3."""
    log = tmp_path / "requests.jsonl"
    with fake_signer(pair.b, log, b""):
        before = datetime.datetime.now(datetime.timezone.utc)
        done = signer("ping", "--device", pair.a, "--timeout", "10")
        after = datetime.datetime.now(datetime.timezone.utc)
    assert done.returncode == EXIT_OK, done.stderr.decode()
    assert re.fullmatch(r"NUL round trip 1/1: [0-9.]+ ms\n", done.stdout.decode())
    [entry] = logged(log)
    assert entry["kind"] == "nul" and entry["header"] == "010000000000000000"
    stamp, second, third = field_bytes(entry)
    sent = codec.parse_nul_timestamp(stamp)
    assert before.replace(microsecond=0) - datetime.timedelta(seconds=1) <= sent <= after
    assert second == third == b""


def test_ping_with_a_serial_config_file(pair: PtyPair, tmp_path: Path) -> None:
    """--serial-config FILE names the device and line settings instead of --device."""
    config = tmp_path / "serial.conf"
    config.write_text(f'[serial]\ndevice = "{pair.a}"\nbaudrate = 115200\n')
    with responder(pair.b):
        done = signer("ping", "--serial-config", str(config), "--timeout", "10")
    assert done.returncode == EXIT_OK, done.stderr.decode()
    assert "NUL round trip 1/1" in done.stdout.decode()


def test_ping_without_a_responder_times_out(pair: PtyPair) -> None:
    """With nobody on the line, --timeout gives exit 4 and a clear message, quickly."""
    started = time.monotonic()
    done = signer("ping", "--device", pair.a, "--timeout", "0.5")
    elapsed = time.monotonic() - started
    err = done.stderr.decode()
    assert done.returncode == EXIT_LINK_FAILURE
    assert f"no answer from the signer on {pair.a} within 0.5 s" in err
    assert "Traceback" not in err and done.stdout == b""
    assert elapsed < 10


def test_ping_link_timeout_is_reported(pair: PtyPair) -> None:
    """A link-layer timeout (--start-ack-timeout) is reported with its reason, exit 4."""
    done = signer("ping", "--device", pair.a, "--start-ack-timeout", "0.3")
    err = done.stderr.decode()
    assert done.returncode == EXIT_LINK_FAILURE
    assert "LinkTimeout" in err and "START" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1  # without -v: only the one-line error


def test_verbose_logs_link_events(pair: PtyPair) -> None:
    """-v sends the link layer's log events (here its warning about the timeout) to stderr."""
    done = signer("ping", "--device", pair.a, "--start-ack-timeout", "0.3", "-v")
    lines = done.stderr.decode().splitlines()
    assert done.returncode == EXIT_LINK_FAILURE
    assert any("#warn]" in line and "START" in line for line in lines[:-1])
    assert lines[-1].startswith("signer ping: error: link failure")


def test_unopenable_device_is_a_local_error(tmp_path: Path) -> None:
    """A device that does not exist: exit 1 and a message naming it."""
    done = signer("ping", "--device", str(tmp_path / "no-such-tty"), "--timeout", "1")
    assert done.returncode == 1
    assert b"cannot open" in done.stderr and b"no-such-tty" in done.stderr


# -- sign-x509 -------------------------------------------------------------


def certificate_pem() -> bytes:
    return testca.make_root("Signer CLI Test Root").certificate_pem()


def test_sign_x509_sends_the_request_and_writes_the_certificate(
    pair: PtyPair, tmp_path: Path
) -> None:
    """sign-x509 puts root/profile/digest/days/keytype in the header, CSR/SAN/subject in
    fields 1-3, and writes field 1 of the answer to --out."""
    csr = tmp_path / "req.csr"
    csr.write_bytes(testca.make_csr("www.example.org"))
    out = tmp_path / "cert.pem"
    log = tmp_path / "requests.jsonl"
    answer = certificate_pem()
    with fake_signer(pair.b, log, answer):
        done = signer(
            "sign-x509", "--device", pair.a, "--timeout", "10",
            "--csr", str(csr), "--subject", "/CN=www.example.org",
            "--san", "DNS:www.example.org,DNS:example.org",
            "--root", "1", "--profile", "server", "--digest", "sha256", "--days", "730",
            "--out", str(out),
        )
    assert done.returncode == EXIT_OK, done.stderr.decode()
    assert out.read_bytes() == answer
    assert f"wrote {len(answer)} bytes" in done.stderr.decode()
    [entry] = logged(log)
    assert entry["kind"] == "sign-x509"
    header = bytes.fromhex(entry["header"])
    assert header == codec.RequestHeader(
        action=1, system=1, root=1, profile=5, digest=8, days=730, keytype=0
    ).encode()
    assert field_bytes(entry) == [
        csr.read_bytes(), b"DNS:www.example.org,DNS:example.org", b"/CN=www.example.org"
    ]


def test_sign_x509_spkac_sets_keytype_and_prints_to_stdout(pair: PtyPair, tmp_path: Path) -> None:
    """An SPKAC file sets keytype 1; without --out the answer's bytes go to stdout."""
    spkac = tmp_path / "req.spkac"
    spkac.write_bytes(b"SPKAC=MIICRTCCAS0wggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQ==\n")
    log = tmp_path / "requests.jsonl"
    answer = b"\x30\x82\x01\x00binary DER-ish answer\x00\xff"
    with fake_signer(pair.b, log, answer):
        done = signer(
            "sign-x509", "--device", pair.a, "--timeout", "10", "--csr", str(spkac),
            "--subject", "", "--root", "0", "--profile", "0", "--days", "365",
        )
    assert done.returncode == EXIT_OK, done.stderr.decode()
    assert done.stdout == answer
    [entry] = logged(log)
    header = codec.RequestHeader.decode(bytes.fromhex(entry["header"]))
    assert (header.keytype, header.digest, header.profile) == (1, 0, 0)
    assert field_bytes(entry)[2] == b""


def test_sign_x509_empty_answer_exits_3(pair: PtyPair, tmp_path: Path) -> None:
    """An empty answer (refused) gives exit 3, a clear message, and no output file."""
    csr = tmp_path / "req.csr"
    csr.write_bytes(testca.make_csr("www.example.org"))
    out = tmp_path / "cert.pem"
    with responder(pair.b):  # the real responder refuses everything but NUL by default
        done = signer(
            "sign-x509", "--device", pair.a, "--timeout", "10", "--csr", str(csr),
            "--subject", "/CN=x", "--root", "0", "--profile", "client", "--days", "1",
            "--out", str(out),
        )
    assert done.returncode == EXIT_EMPTY_ANSWER
    assert "empty field 1" in done.stderr.decode() and "refused" in done.stderr.decode()
    assert not out.exists()


def test_sign_x509_against_the_real_responder(pair: PtyPair, tmp_path: Path) -> None:
    """The canned answer of the project's responder is written to --out."""
    csr = tmp_path / "req.csr"
    csr.write_bytes(testca.make_csr("www.example.org"))
    answer = tmp_path / "answer.pem"
    answer.write_bytes(certificate_pem())
    out = tmp_path / "cert.pem"
    with responder(pair.b, answer):
        done = signer(
            "sign-x509", "--device", pair.a, "--timeout", "10", "--csr", str(csr),
            "--subject", "/CN=x", "--root", "0", "--profile", "client", "--days", "1",
            "--out", str(out),
        )
    assert done.returncode == EXIT_OK, done.stderr.decode()
    assert out.read_bytes() == answer.read_bytes()


# -- sign-openpgp ----------------------------------------------------------


def test_sign_openpgp_writes_the_signed_key(pair: PtyPair, tmp_path: Path) -> None:
    """sign-openpgp sends the key in field 1 with header days 366 and writes the answer."""
    key = tmp_path / "key.asc"
    key.write_bytes(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQENBF...\n-----END PGP PUBLIC KEY BLOCK-----\n")
    out = tmp_path / "signed.asc"
    log = tmp_path / "requests.jsonl"
    answer = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nsigned\n-----END PGP PUBLIC KEY BLOCK-----\n"
    with fake_signer(pair.b, log, answer):
        done = signer("sign-openpgp", "--device", pair.a, "--timeout", "10",
                      "--key", str(key), "--out", str(out))
    assert done.returncode == EXIT_OK, done.stderr.decode()
    assert out.read_bytes() == answer
    [entry] = logged(log)
    assert bytes.fromhex(entry["header"]) == bytes.fromhex("010102000002016e00")
    assert field_bytes(entry) == [key.read_bytes(), b"", b""]


def test_sign_openpgp_empty_answer_exits_3(pair: PtyPair, tmp_path: Path) -> None:
    """An empty OpenPGP answer: exit 3, nothing on stdout."""
    key = tmp_path / "key.gpg"
    key.write_bytes(b"\x99\x01\x0dkey")
    with fake_signer(pair.b, tmp_path / "log.jsonl", b""):
        done = signer("sign-openpgp", "--device", pair.a, "--timeout", "10", "--key", str(key))
    assert done.returncode == EXIT_EMPTY_ANSWER and done.stdout == b""


# -- revoke ----------------------------------------------------------------


def make_crl(root: testca.TestRoot, number: int, revoked: tuple[int, ...] = ()) -> bytes:
    """A DER CRL of ``root`` with CRL number ``number``."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(root.certificate.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=7))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    crl = builder.sign(root.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER)


def test_revoke_without_crl_sends_empty_sha1_and_writes_raw_answer(
    pair: PtyPair, tmp_path: Path
) -> None:
    """A missing --crl file is hashed as the empty string; the certificate goes in field 1,
    root in the header; the raw answer goes to --out."""
    cert = tmp_path / "cert.pem"
    cert.write_bytes(certificate_pem())
    out = tmp_path / "answer.bin"
    log = tmp_path / "requests.jsonl"
    answer = b"%XDZ004%not really a patch"
    with fake_signer(pair.b, log, answer):
        done = signer("revoke", "--device", pair.a, "--timeout", "10", "--root", "1",
                      "--crl", str(tmp_path / "missing.crl"), "--cert", str(cert),
                      "--out", str(out))
    assert done.returncode == EXIT_OK, done.stderr.decode()
    assert out.read_bytes() == answer
    [entry] = logged(log)
    assert bytes.fromhex(entry["header"]) == bytes.fromhex("010201010000016d00")
    assert field_bytes(entry) == [cert.read_bytes(), b"", codec.EMPTY_SHA1.encode()]


def test_revoke_apply_xdelta_patch_from_the_legacy_vector(
    pair: PtyPair, tmp_path: Path, vectors_dir: Path
) -> None:
    """--apply runs the real `xdelta patch` on the legacy server's answer and replaces the
    CRL file with exactly the CRL the legacy client produced; the SHA-1 sent is the old CRL's."""
    vector = json.loads((vectors_dir / "06_crl_refresh_root1_delta.json").read_text())
    old = bytes.fromhex(vector["crl"]["old_crl_der_hex"])
    new = bytes.fromhex(vector["crl"]["new_crl_der_hex"])
    patch = codec.parse_frame(bytes.fromhex(vector["response"]["frame_hex"]))[1]
    assert patch.startswith(b"%XDZ004%")
    crl = tmp_path / "revoke.crl"
    crl.write_bytes(old)
    log = tmp_path / "requests.jsonl"
    with fake_signer(pair.b, log, patch):
        done = signer("revoke", "--device", pair.a, "--timeout", "10", "--root", "1",
                      "--crl", str(crl), "--apply")
    assert done.returncode == EXIT_OK, done.stderr.decode()
    assert crl.read_bytes() == new
    assert "xdelta patch" in done.stderr.decode()
    [entry] = logged(log)
    assert field_bytes(entry) == [b"", b"", hashlib.sha1(old).hexdigest().encode()]


def test_revoke_apply_pem_crl_verified_against_the_ca(pair: PtyPair, tmp_path: Path) -> None:
    """A PEM answer becomes the new DER CRL file (to --out) once its signature verifies."""
    root = testca.make_root("Signer CLI CRL Root")
    new_der = make_crl(root, 2, revoked=(1234,))
    pem = x509.load_der_x509_crl(new_der).public_bytes(serialization.Encoding.PEM)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(root.certificate_pem())
    crl = tmp_path / "revoke.crl"
    crl.write_bytes(make_crl(root, 1))
    out = tmp_path / "new.crl"
    with fake_signer(pair.b, tmp_path / "log.jsonl", pem):
        done = signer("revoke", "--device", pair.a, "--timeout", "10", "--root", "0",
                      "--crl", str(crl), "--apply", "--ca-cert", str(ca), "--out", str(out))
    assert done.returncode == EXIT_OK, done.stderr.decode()
    assert out.read_bytes() == new_der


def test_revoke_apply_refuses_a_crl_from_another_ca(pair: PtyPair, tmp_path: Path) -> None:
    """A DER CRL whose signature does not verify: exit 5, the old CRL stays in place."""
    ours = testca.make_root("Signer CLI CRL Root")
    other = testca.make_root("Signer CLI Other Root")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(ours.certificate_pem())
    old = make_crl(ours, 1)
    crl = tmp_path / "revoke.crl"
    crl.write_bytes(old)
    with fake_signer(pair.b, tmp_path / "log.jsonl", make_crl(other, 9)):
        done = signer("revoke", "--device", pair.a, "--timeout", "10", "--root", "0",
                      "--crl", str(crl), "--apply", "--ca-cert", str(ca))
    assert done.returncode == EXIT_APPLY_FAILED
    assert "does not verify" in done.stderr.decode()
    assert crl.read_bytes() == old


def test_revoke_apply_der_answer(pair: PtyPair, tmp_path: Path) -> None:
    """A DER CRL answer (not a patch) is taken as the new CRL, replacing --crl."""
    root = testca.make_root("Signer CLI CRL Root")
    crl = tmp_path / "revoke.crl"
    crl.write_bytes(make_crl(root, 1))
    new_der = make_crl(root, 2)
    with fake_signer(pair.b, tmp_path / "log.jsonl", new_der):
        done = signer("revoke", "--device", pair.a, "--timeout", "10", "--root", "0",
                      "--crl", str(crl), "--apply")
    assert done.returncode == EXIT_OK, done.stderr.decode()
    assert crl.read_bytes() == new_der and "from DER" in done.stderr.decode()


def test_revoke_apply_garbage_keeps_the_old_crl(pair: PtyPair, tmp_path: Path) -> None:
    """An answer that is no PEM, no valid patch and no DER CRL: exit 5, old CRL untouched."""
    root = testca.make_root("Signer CLI CRL Root")
    old = make_crl(root, 1)
    crl = tmp_path / "revoke.crl"
    crl.write_bytes(old)
    with fake_signer(pair.b, tmp_path / "log.jsonl", b"this is no CRL at all"):
        done = signer("revoke", "--device", pair.a, "--timeout", "10", "--root", "0",
                      "--crl", str(crl), "--apply")
    assert done.returncode == EXIT_APPLY_FAILED
    assert "neither a PEM CRL" in done.stderr.decode()
    assert crl.read_bytes() == old


def test_revoke_empty_answer_exits_3(pair: PtyPair, tmp_path: Path) -> None:
    """The legacy 'unknown hash' case: an empty answer gives exit 3 and leaves the CRL alone."""
    crl = tmp_path / "revoke.crl"
    crl.write_bytes(b"old")
    with responder(pair.b):
        done = signer("revoke", "--device", pair.a, "--timeout", "10", "--root", "1",
                      "--crl", str(crl), "--apply")
    assert done.returncode == EXIT_EMPTY_ANSWER
    assert crl.read_bytes() == b"old"


# -- applying CRL answers in-process (no line) -------------------------------


def test_apply_without_xdelta_falls_back_to_der_and_explains(tmp_path: Path) -> None:
    """With no xdelta program a DER answer is still taken; garbage names the missing program."""
    from signer.cli import requests
    from signer.cli.errors import CommandError

    root = testca.make_root("Signer CLI CRL Root")
    new_der = make_crl(root, 3)
    missing = str(tmp_path / "no-xdelta")
    update = requests.apply_crl_answer(new_der, b"", missing)
    assert update == requests.CrlUpdate(new_der, "DER")
    with pytest.raises(CommandError) as caught:
        requests.apply_crl_answer(b"%XDZ004%garbage", b"", missing)
    assert caught.value.exit_code == EXIT_APPLY_FAILED
    assert "no-xdelta not found" in str(caught.value)


def test_apply_damaged_pem_is_refused() -> None:
    """A PEM marker with a broken body is an apply failure, not a traceback."""
    from signer.cli import requests
    from signer.cli.errors import CommandError

    with pytest.raises(CommandError) as caught:
        requests.apply_crl_answer(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", b"")
    assert caught.value.exit_code == EXIT_APPLY_FAILED
