"""CRL figures for a CA database with a million revoked certificates.

Usage (from the repository root)::

    .venv/bin/python benchmarks/crl_million.py [--count 1000000] [--bits 4096]
        [--db PATH] [--keep] [--compare-cryptography]

Steps, each timed:

1. populate a fresh CA database (SQLite, data directory in a temporary folder
   unless ``--db``) with ``--count`` revoked certificates (random 127-bit
   serials, one transaction) — in a child process, so that the figures below
   start from a clean process;
2. start: load the root's revoked entries from the database into the
   in-memory list (what the server does on its first request);
3. produce the first CRL (number, sign, SHA-1, store in the history);
   (a full CRL of this size does not fit in one answer: the service refuses
   to send it, which is checked too);
4. answer one more revocation through :meth:`RevocationService.handle`, with
   the client holding the previous CRL: database update, incremental insert,
   new CRL, xdelta patch through the real ``xdelta`` child process;
5. answer a refresh (no certificate) the same way.

It prints the wall time and the process's peak RSS (``ru_maxrss``) after each
step, the current RSS, the CRL size and the size and kind of each answer, and
checks the answer the legacy way (``xdelta patch`` of it against the old CRL
gives exactly the new CRL) and with ``openssl crl -verify``.

For comparison (issue 3): ``openssl ca -gencrl`` on a million entries needs
3.3 s and 377 MB and answers one more revocation with an xdelta of about 810
bytes; cryptography's builder with all entries passed to its constructor needs
about 4 s and 355 MB (``--compare-cryptography`` measures that here).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.logger import formatEvent, globalLogPublisher  # noqa: E402

from signer.protocol import codec  # noqa: E402
from signer.server.cadb import STATUS_REVOKED, CADatabase, CertificateRecord  # noqa: E402
from signer.server.errors import RequestRefused  # noqa: E402
from signer.server.revocation import RevocationService, answer_kind  # noqa: E402

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_ca(directory: Path, bits: int) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A throw-away root (cached in ``directory`` so the populate child and we share it)."""
    key_path, cert_path = directory / "ca.key", directory / "ca.pem"
    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Benchmark Root")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return certificate, key


def populate(db_path: Path, count: int) -> None:
    """``count`` revoked rows, random serials, revocation times over two years."""
    rng = random.Random(20261204)
    started = time.perf_counter()
    serials: set[int] = set()
    while len(serials) < count:
        serials.add(rng.getrandbits(127) | 1)
    base = int(NOW.timestamp())

    def rows():  # type: ignore[no-untyped-def]
        for serial in sorted(serials):
            revoked = datetime.datetime.fromtimestamp(base - rng.randint(0, 2 * 365 * 86400), UTC)
            yield CertificateRecord(
                root=0,
                serial=serial,
                subject="CN=benchmark",
                not_after=NOW + datetime.timedelta(days=rng.randint(1, 700)),
                status=STATUS_REVOKED,
                revoked_at=revoked,
            )

    with CADatabase(db_path) as db:
        inserted = db.insert_records(rows())
    print(
        f"populate: {inserted:,} revoked rows in {time.perf_counter() - started:.1f} s "
        f"(child process, peak RSS {peak_mb():.0f} MB; database {db_path.stat().st_size / 2**20:.0f} MB)"
    )


def openssl_verify(der: bytes, ca_pem: Path, directory: Path) -> str:
    crl_path = directory / "check.crl"
    crl_path.write_bytes(der)
    result = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(crl_path), "-CAfile", str(ca_pem), "-noout"],
        capture_output=True,
        text=True,
    )
    crl_path.unlink()
    return (result.stderr or result.stdout).strip()


def xdelta_patch(patch: bytes, old: bytes, directory: Path) -> bytes | None:
    (directory / "p").write_bytes(patch)
    (directory / "o").write_bytes(old)
    result = subprocess.run(["xdelta", "patch", "p", "o", "n"], cwd=directory, capture_output=True)
    out = (directory / "n").read_bytes() if result.returncode == 0 else None
    for name in ("p", "o", "n"):
        (directory / name).unlink(missing_ok=True)
    return out


def compare_cryptography(db: CADatabase, certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
    started = time.perf_counter()
    revoked = [
        x509.RevokedCertificateBuilder()
        .serial_number(entry.serial)
        .revocation_date(datetime.datetime.fromtimestamp(entry.revoked_at, UTC))
        .build()
        for entry in db.revoked_entries(0)
    ]
    crl = x509.CertificateRevocationListBuilder(
        issuer_name=certificate.subject,
        last_update=NOW,
        next_update=NOW + datetime.timedelta(days=7),
        revoked_certificates=revoked,
    ).sign(key, hashes.SHA256())
    der = crl.public_bytes(serialization.Encoding.DER)
    print(
        f"baseline cryptography builder (constructor, all entries): {time.perf_counter() - started:.2f} s, "
        f"{len(der) / 2**20:.1f} MB, peak RSS {peak_mb():.0f} MB"
    )


async def measure(reactor, args: argparse.Namespace, directory: Path) -> None:  # type: ignore[no-untyped-def]
    db_path = Path(args.db) if args.db else directory / "ca.sqlite"
    certificate, key = make_ca(directory, args.bits)
    print(f"start: RSS {current_mb():.0f} MB, peak {peak_mb():.0f} MB")
    db = CADatabase(db_path)
    clock = [NOW]

    def now() -> datetime.datetime:
        clock[0] += datetime.timedelta(seconds=30)
        return clock[0]

    service = RevocationService(db, {0: (certificate, key)}, reactor, now=now, history=4)
    events: list[str] = []

    def observe(event: dict) -> None:  # type: ignore[type-arg]
        if event.get("log_namespace", "").startswith("signer.server.revocation"):
            events.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)

    def service_said() -> str:
        said = "; ".join(text.split(": ", 1)[-1] for text in events if "in " in text)
        events.clear()
        return said

    started = time.perf_counter()
    await defer.Deferred.fromCoroutine(_in_thread(reactor, service.load))
    print(
        f"load {db.count_certificates(0, STATUS_REVOKED):,} revoked entries from the database: "
        f"{time.perf_counter() - started:.2f} s; RSS {current_mb():.0f} MB, peak {peak_mb():.0f} MB"
    )

    started = time.perf_counter()
    await defer.Deferred.fromCoroutine(
        _in_thread(reactor, lambda: service.revoke_and_produce(0, None, "0" * 40))
    )
    elapsed = time.perf_counter() - started
    latest = db.latest_crl(0)
    assert latest is not None
    print(
        f"produce the CRL (number, sign, SHA-1, store): {elapsed:.2f} s; {len(latest.der):,} bytes "
        f"({len(latest.der) / 2**20:.1f} MB); RSS {current_mb():.0f} MB, peak {peak_mb():.0f} MB"
    )
    print(f"  openssl crl -verify: {openssl_verify(latest.der, directory / 'ca.pem', directory)}")
    empty = hashlib.sha1(b"").hexdigest().encode()
    try:
        await service.handle(codec.RevokeRequest(crl_sha1=empty))
    except RequestRefused as refused:
        print(f"  a client without a CRL gets nothing over the link: {refused.reason}")
    held = latest.der

    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    service_said()  # forget the set-up's events
    for round_number in range(args.rounds):
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "one more")]))
            .issuer_name(certificate.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW)
            .not_valid_after(NOW + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        db.record_issued(0, leaf, 0, NOW)
        pem = leaf.public_bytes(serialization.Encoding.PEM)
        request = codec.RevokeRequest(crl_sha1=hashlib.sha1(held).hexdigest().encode(), certificate=pem)
        started = time.perf_counter()
        answer = await service.handle(request)
        elapsed = time.perf_counter() - started
        latest = db.latest_crl(0)
        assert latest is not None
        applied = xdelta_patch(answer, held, directory) if answer_kind(answer) == "xdelta" else None
        print(
            f"one more revocation (#{round_number + 1}): answered in {elapsed * 1000:.0f} ms with "
            f"{answer_kind(answer)} of {len(answer):,} bytes; `xdelta patch` gives the new CRL: "
            f"{applied == latest.der}; RSS {current_mb():.0f} MB, peak {peak_mb():.0f} MB"
        )
        print(f"  service log: {service_said()}")
        held = latest.der

    started = time.perf_counter()
    answer = await service.handle(codec.RevokeRequest(crl_sha1=hashlib.sha1(held).hexdigest().encode()))
    elapsed = time.perf_counter() - started
    latest = db.latest_crl(0)
    assert latest is not None
    applied = xdelta_patch(answer, held, directory) if answer_kind(answer) == "xdelta" else None
    print(
        f"CRL refresh (no certificate): answered in {elapsed * 1000:.0f} ms with "
        f"{answer_kind(answer)} of {len(answer):,} bytes; `xdelta patch` gives the new CRL: "
        f"{applied == latest.der}"
    )
    print(f"  openssl crl -verify: {openssl_verify(latest.der, directory / 'ca.pem', directory)}")
    if args.compare_cryptography:
        compare_cryptography(db, certificate, key)
    db.close()


async def _in_thread(reactor, f):  # type: ignore[no-untyped-def]
    from twisted.internet.threads import deferToThreadPool

    return await deferToThreadPool(reactor, reactor.getThreadPool(), f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--bits", type=int, default=4096, help="CA key size (CAcert's roots: 4096)")
    parser.add_argument("--rounds", type=int, default=3, help="extra revocations to time")
    parser.add_argument("--db", help="use (and keep) this database; populated when missing")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--compare-cryptography", action="store_true")
    parser.add_argument("--populate-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.populate_only:
        populate(Path(args.populate_only), args.count)
        return
    directory = Path(tempfile.mkdtemp(prefix="crl-million-"))
    db_path = Path(args.db) if args.db else directory / "ca.sqlite"
    make_ca(directory, args.bits)
    if not db_path.exists():
        subprocess.run(
            [sys.executable, __file__, "--populate-only", str(db_path), "--count", str(args.count)],
            check=True,
        )
    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(measure(reactor, args, directory)))
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
