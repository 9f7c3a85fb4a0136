"""Sustained X.509 signing throughput over a simulated serial line.

Usage (from the repository root)::

    .venv/bin/python benchmarks/throughput.py [--requests 30] [--baud 115200 --baud 921600]
        [--nul-count 1000] [--keep]

Makes a throw-away signer with ``signer init-test-signer``, then for each
line speed (each ``--baud``, then unpaced through ``signer linksim --baud 0``
and through a plain socat pty pair) runs ``twistd signer-server`` on side A,
opens side B here with our :class:`ClientLinkProtocol` over the real
``SerialPort``, and sends ``--requests`` X.509 requests one after the other:
2048-bit RSA CSRs (each with its own key; generated once and cached in
``$TMPDIR/signer-bench-csrs``), server profile (5) on root 1, sha256, two
DNS SANs. Prints per speed:

- requests per second and the median / p90 seconds per request;
- bytes on the wire per request in each direction, control bytes included
  (the client's link counters);
- line utilisation = (request bytes + answer bytes) / (baud / 10) / measured
  seconds per request (the v1 protocol carries one conversation at a time);
- unpaced: the per-request software overhead (median time per request minus
  the median RSA signature time, measured separately with the signer's own
  root key) and the server-side handling time from its log, with and without
  the RSA signature; before the runs, the server's two blocking steps timed
  in this process (issuing, recording in the CA database).

Finally the NUL round trip, unpaced (linksim --baud 0 and socat), median and
p99 over ``--nul-count``. Targets (issue 6): >= 85 % utilisation at 115200
baud, software overhead < 10 ms median excluding the RSA signature, NUL round
trip < 5 ms median.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent

from twisted.internet import defer, task  # noqa: E402

from signer.protocol import codec  # noqa: E402
from signer.protocol.serialconfig import SerialConfig  # noqa: E402
from signer.protocol.transport import ClientLinkProtocol, LinkTimeouts, open_serial  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "signer-bench-csrs"
WARMUP_NUL = 5
WARMUP_SIGN = 2
SERVED = re.compile(r"sign-x509 request served: \d+ bytes answered in ([0-9.]+) ms")


# -- material -------------------------------------------------------------------


def csr(index: int) -> bytes:
    """A PEM CSR for ``host<index>.example.org`` with its own 2048-bit key (cached)."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"host{index}.csr"
    if path.exists():
        return path.read_bytes()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"host{index}.example.org")])
    pem = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    path.write_bytes(pem)
    return pem


def sign_request(index: int) -> codec.SignX509Request:
    host = f"host{index}.example.org"
    return codec.SignX509Request(
        csr=csr(index),
        subject=f"/CN={host}".encode(),
        san=f"DNS:{host},DNS:www.{host}".encode(),
        root=1,
        profile=5,
        digest=8,
        days=730,
    )


def rsa_sign_ms(key_path: Path, rounds: int = 200) -> float:
    """Median milliseconds of one RSA PKCS#1 v1.5 SHA-256 signature with the root key."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key: Any = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    tbs = os.urandom(1100)  # about the size of a to-be-signed certificate
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def server_parts_ms(signer_dir: Path, reactor: Any, offset: int, rounds: int = 50) -> tuple[float, float]:
    """Median ms of the server's two blocking steps, in this process: issuing
    (checks, building, RSA signature) and recording in the CA database (an
    SQLite commit with synchronous=FULL). Uses a copy of the signer's data."""
    import hashlib

    from signer.server.config import load_and_check
    from signer.server.service import ServerParts

    copy = signer_dir.parent / "parts-copy"
    shutil.copytree(signer_dir, copy)
    config, roots = load_and_check(copy / "signer-server.toml")
    parts = ServerParts(config, roots, reactor)
    now = datetime.datetime.now(datetime.timezone.utc)
    issue, record = [], []
    for index in range(rounds):
        request = sign_request(offset + index % 20)
        started = time.perf_counter()
        issued = parts.authority.issue(request)
        middle = time.perf_counter()
        parts.database.record_issued(
            issued.root, issued.certificate, issued.profile, issued_at=now,
            request_sha256=hashlib.sha256(request.csr).hexdigest(),
        )
        issue.append((middle - started) * 1000)
        record.append((time.perf_counter() - middle) * 1000)
    return statistics.median(issue), statistics.median(record)


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- processes ------------------------------------------------------------------


@dataclass
class Line:
    """A line (linksim or socat) and the server on its side A."""

    label: str
    baud: int  # 0: unpaced
    device_b: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    server_log: Optional[Path] = None
    linksim_out: Optional[Path] = None

    def server_times(self) -> list[float]:
        assert self.server_log is not None
        return [float(ms) for ms in SERVED.findall(self.server_log.read_text())]

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def wait_for(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited: {path.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {text!r} in {path} after {timeout} s")
        time.sleep(0.02)


def start_line(work: Path, signer_dir: Path, label: str, baud: int, via: str) -> Line:
    """Start the line (``via`` "linksim" or "socat") and the server on side A."""
    folder = work / label
    folder.mkdir()
    a, b = folder / "ttyA", folder / "ttyB"
    processes: list[subprocess.Popen[bytes]] = []
    linksim_out = None
    if via == "linksim":
        linksim_out = folder / "linksim.out"
        with linksim_out.open("wb") as out:
            linksim = subprocess.Popen(
                [str(BIN / "signer"), "linksim", "--link-a", str(a), "--link-b", str(b),
                 "--baud", str(baud)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        processes.append(linksim)
        wait_for(linksim_out, "READY", linksim)
    else:
        socat = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        processes.append(socat)
        deadline = time.monotonic() + 10
        while not (a.exists() and b.exists()):
            if time.monotonic() > deadline:
                raise RuntimeError("socat did not create the pty pair")
            time.sleep(0.01)
    serial = folder / "serial.conf"
    serial.write_text(f'[serial]\ndevice = "{a}"\nbaudrate = {baud or 115200}\n')
    log = folder / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "--logfile", "-", "signer-server",
             "--config", str(signer_dir / "signer-server.toml"), "--serial-config", str(serial)],
            cwd=folder, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    processes.append(server)
    line = Line(label, baud, str(b), processes, log, linksim_out)
    try:
        wait_for(log, "serving on", server)
    except Exception:
        line.stop()
        raise
    return line


# -- measurements ---------------------------------------------------------------


@dataclass
class SignFigures:
    label: str
    baud: int
    seconds: list[float]
    bytes_out: list[int]
    bytes_in: list[int]
    server_ms: list[float]
    resends: int


async def open_client(reactor: Any, device: str) -> ClientLinkProtocol:
    client = ClientLinkProtocol(reactor, LinkTimeouts(response_start=60))
    open_serial(client, SerialConfig(device), reactor)
    return client


def nul() -> codec.NulRequest:
    return codec.NulRequest(codec.format_nul_timestamp(datetime.datetime.now(datetime.timezone.utc)))


async def measure_signing(reactor: Any, line: Line, requests: int, offset: int) -> SignFigures:
    client = await open_client(reactor, line.device_b)
    for _ in range(WARMUP_NUL):
        await client.request(nul()).addTimeout(30, reactor)
    for index in range(WARMUP_SIGN):
        await client.request(sign_request(offset + index)).addTimeout(120, reactor)
    seconds, out, in_ = [], [], []
    for index in range(WARMUP_SIGN, WARMUP_SIGN + requests):
        message = sign_request(offset + index)
        before_out, before_in = client.stats.bytes_out, client.stats.bytes_in
        started = time.perf_counter()
        response = await client.request(message).addTimeout(120, reactor)
        seconds.append(time.perf_counter() - started)
        if not isinstance(response, codec.SignX509Response) or not response.certificate.startswith(
            b"-----BEGIN CERTIFICATE-----"
        ):
            raise RuntimeError(f"{line.label}: request {index} not signed: {response!r}"[:300])
        out.append(client.stats.bytes_out - before_out)
        in_.append(client.stats.bytes_in - before_in)
    resends = client.stats.resends
    await client.close()
    server_ms = line.server_times()[WARMUP_SIGN:]
    return SignFigures(line.label, line.baud, seconds, out, in_, server_ms, resends)


async def measure_nul(reactor: Any, line: Line, count: int) -> list[float]:
    client = await open_client(reactor, line.device_b)
    request = nul()
    samples = []
    for index in range(WARMUP_NUL + count):
        started = time.perf_counter()
        await client.request(request).addTimeout(30, reactor)
        if index >= WARMUP_NUL:
            samples.append((time.perf_counter() - started) * 1000)
    await client.close()
    return samples


# -- report ---------------------------------------------------------------------


def print_signing(figures: SignFigures, rsa_ms: float) -> None:
    per_request = statistics.median(figures.seconds)
    mean = statistics.fmean(figures.seconds)
    out = statistics.median(figures.bytes_out)
    in_ = statistics.median(figures.bytes_in)
    print(f"\n== X.509 signing, {figures.label} ({len(figures.seconds)} requests) ==")
    print(
        f"  {1 / mean:.2f} requests/s; per request median {per_request * 1000:.1f} ms, "
        f"p90 {percentile(figures.seconds, 0.9) * 1000:.1f} ms, mean {mean * 1000:.1f} ms"
    )
    print(
        f"  bytes on the wire per request: client->server {out:.0f}, "
        f"server->client {in_:.0f} (control bytes included; {figures.resends} resends)"
    )
    server = statistics.median(figures.server_ms) if figures.server_ms else float("nan")
    if figures.baud:
        capacity = figures.baud / 10
        bound = (out + in_) / capacity
        print(
            f"  physical bound {bound * 1000:.1f} ms per request at {capacity:.0f} bytes/s; "
            f"line utilisation {bound / per_request * 100:.1f} % (median), "
            f"{bound / mean * 100:.1f} % (mean)"
        )
        print(
            f"  beyond the wire: {(per_request - bound) * 1000:.1f} ms per request "
            f"(server handling {server:.1f} ms of it)"
        )
    else:
        print(
            f"  software overhead excluding the RSA signature: "
            f"{(per_request - rsa_ms / 1000) * 1000:.2f} ms median per request "
            f"(RSA-2048 signature {rsa_ms:.2f} ms)"
        )
        print(
            f"  server-side handling (dispatcher log, thread hop and CA database included): "
            f"{server:.1f} ms median, {server - rsa_ms:.1f} ms without the RSA signature"
        )


def print_nul(label: str, samples: list[float]) -> None:
    print(f"\n== NUL round trip, {label} ({len(samples)} samples) ==")
    print(
        f"  median {statistics.median(samples):.3f} ms, p99 {percentile(samples, 0.99):.3f} ms, "
        f"mean {statistics.fmean(samples):.3f} ms, min {min(samples):.3f} ms, "
        f"max {max(samples):.3f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30, help="timed X.509 requests per speed (30)")
    parser.add_argument(
        "--baud", type=int, action="append", metavar="BPS",
        help="paced line speed to measure (repeatable; default 115200 and 921600)",
    )
    parser.add_argument("--nul-count", type=int, default=1000, help="NUL round trips (1000)")
    parser.add_argument(
        "--skip-socat", action="store_true", help="measure unpaced through linksim only"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args()
    bauds = args.baud or [115200, 921600]

    work = Path(tempfile.mkdtemp(prefix="signer-bench-"))
    signer_dir = work / "signer"
    subprocess.run(
        [str(BIN / "signer"), "init-test-signer", str(signer_dir), "--no-openpgp"],
        check=True, capture_output=True,
    )
    total = (WARMUP_SIGN + args.requests) * (len(bauds) + 2)
    started = time.monotonic()
    for index in range(total):
        csr(index)
    print(f"{total} CSRs ready in {CACHE} ({time.monotonic() - started:.1f} s)")
    rsa_ms = rsa_sign_ms(signer_dir / "roots" / "root1.key")
    print(f"RSA-2048 PKCS#1 v1.5 SHA-256 signature with the root key: {rsa_ms:.3f} ms median")

    plans = [(f"linksim {baud} baud", baud, "linksim") for baud in bauds]
    plans.append(("unpaced, linksim --baud 0", 0, "linksim"))
    if not args.skip_socat:
        plans.append(("unpaced, socat pty pair", 0, "socat"))

    results: list[Any] = []

    async def run(reactor: Any) -> None:
        issue_ms, record_ms = server_parts_ms(signer_dir, reactor, 0)
        print(
            f"server steps in-process: issue {issue_ms:.3f} ms median (checks, building, "
            f"RSA signature), CA database record {record_ms:.3f} ms median (SQLite commit)"
        )
        offset = 0
        for number, (label, baud, via) in enumerate(plans):
            line = start_line(work, signer_dir, f"run{number}", baud, via)
            line.label = label
            try:
                figures = await measure_signing(reactor, line, args.requests, offset)
                print_signing(figures, rsa_ms)
                results.append(figures)
                if baud == 0:
                    samples = await measure_nul(reactor, line, args.nul_count)
                    print_nul(label, samples)
            finally:
                line.stop()
                if line.linksim_out is not None:
                    tail = line.linksim_out.read_text().strip().splitlines()[-4:]
                    print("  " + "\n  ".join(tail))
            offset += WARMUP_SIGN + args.requests

    try:
        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    except SystemExit as exit_:
        if exit_.code:
            print(f"benchmark failed (exit {exit_.code}); logs in {work}", file=sys.stderr)
            return int(exit_.code) if isinstance(exit_.code, int) else 1
    finally:
        if args.keep:
            print(f"\nwork folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
