"""NUL round-trip time of our client against our server over an unpaced pty.

Usage (from the repository root)::

    .venv/bin/python benchmarks/nul_roundtrip.py [--count 100] [--in-process]

A socat pty pair links our :class:`ClientLinkProtocol` (real ``SerialPort``,
this process) to our :class:`ServerLinkProtocol` (real ``SerialPort``), by
default running as ``python -m tests.support.responder`` in a child process,
or with ``--in-process`` on this process's reactor. Sends ``--count`` NUL
requests one after the other (after a few warm-up rounds) and prints the
median, p99, mean, min and max round trip in milliseconds. A pty has no baud
rate, so this measures our software's latency, not the line's.

For comparison, the legacy peers need about 1030 ms per NUL (the legacy
server sleeps 1 s before every answer; see vectors/07_nul.json).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from twisted.internet import defer, task  # noqa: E402

from signer.protocol import codec  # noqa: E402
from signer.protocol.serialconfig import SerialConfig  # noqa: E402
from signer.protocol.transport import (  # noqa: E402
    ClientLinkProtocol,
    ServerLinkProtocol,
    open_serial,
)
from tests.support.pty import pty_pair  # noqa: E402
from tests.support.responder import ScriptedHandler  # noqa: E402

WARMUP = 5


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``samples``."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def measure(reactor: object, device: str, count: int) -> list[float]:
    client = ClientLinkProtocol(reactor)  # type: ignore[arg-type]
    open_serial(client, SerialConfig(device), reactor)
    request = codec.NulRequest(
        codec.format_nul_timestamp(datetime.datetime.now(datetime.timezone.utc))
    )
    samples = []
    for index in range(WARMUP + count):
        started = time.perf_counter()
        response = await client.request(request).addTimeout(30, reactor)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        assert response == codec.NulResponse(), response
        if index >= WARMUP:
            samples.append(elapsed * 1000)
    await client.close()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100, help="round trips to time (default 100)")
    parser.add_argument(
        "--in-process", action="store_true", help="run our server in this process too"
    )
    args = parser.parse_args()
    samples: list[float] = []
    with pty_pair() as pair:
        child = None
        if args.in_process:
            from twisted.internet import reactor

            server = ServerLinkProtocol(ScriptedHandler(), reactor)  # type: ignore[arg-type]
            open_serial(server, SerialConfig(pair.b), reactor)
            where = "server in-process"
        else:
            child = subprocess.Popen(
                [sys.executable, "-m", "tests.support.responder", "--device", pair.b],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            assert child.stdout is not None
            if not child.stdout.readline().startswith(b"READY"):
                print("responder did not start", file=sys.stderr)
                return 1
            where = "server in a child process"

        async def run(reactor: object) -> None:
            samples.extend(await measure(reactor, pair.a, args.count))

        try:
            task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
        except SystemExit as exit_:
            if exit_.code:
                raise
        finally:
            if child is not None:
                child.terminate()
                child.wait(10)
    print(f"NUL round trip over an unpaced socat pty ({where}), {len(samples)} samples:")
    print(f"  median {statistics.median(samples):.3f} ms")
    print(f"  p99    {percentile(samples, 0.99):.3f} ms")
    print(
        f"  mean {statistics.fmean(samples):.3f} ms, min {min(samples):.3f} ms, "
        f"max {max(samples):.3f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
