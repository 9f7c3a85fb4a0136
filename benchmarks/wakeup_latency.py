"""Wake-up: latency from message to signed certificate, and idle database queries per hour.

Usage (from the repository root)::

    .venv/bin/python benchmarks/wakeup_latency.py [--count 20] [--sources redis,amqp] [--skip-hour]

Sets up a throw-away test signer (``signer init-test-signer``) and runs the
real ``twistd signer-server`` on one end of a socat pty pair (unpaced: a pty
has no baud rate). This process is the client: the real
:class:`~signer.protocol.transport.ClientLinkProtocol` on the other end, the
real :class:`~signer.client.jobs.Jobs` over a sqlite WebDB, the
:class:`~signer.client.wakeup_trigger.WakeupTrigger`, and a wake-up source on
Redis (127.0.0.1:6379) and/or RabbitMQ (127.0.0.1:5672, guest).

1. **Latency**: ``--count`` times, insert an ``emailcerts`` row and write its
   CSR, publish ``{"kind":"emailcerts","id":N}`` over a publisher connection
   that is already open (as a PHP worker with a persistent link would; a
   fresh ``signer notify`` adds its connection set-up), and time until the woken job reports the row signed (the
   certificate written and the row updated). Prints median, p90 and max for
   message -> wake callback and message -> signed.
2. **Idle queries per hour**: the adbapi pool's ``runQuery``/``runOperation``/
   ``runInteraction`` are wrapped here (not in production code) to count
   statements. An hour of idle client is simulated on a
   :class:`~twisted.internet.task.Clock` driving the real
   :class:`~signer.client.service.PollingService` (the NUL keep-alives still
   cross the pty): once with plain polling (2.7 s), once with wake-up on
   (60 s fallback). Prints rounds and queries per hour for both.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from twisted.internet import defer, task  # noqa: E402

from signer.cli.notify import publish_amqp, publish_redis  # noqa: E402
from signer.client.config import ClientConfig, FilesConfig, LinkConfig, MailConfig, RootConfig  # noqa: E402
from signer.client.crlinstall import CrlInstaller  # noqa: E402
from signer.client.jobs import Jobs  # noqa: E402
from signer.client.service import PollingService  # noqa: E402
from signer.client.wakeup import AmqpWakeup, RedisWakeup, WakeupSource  # noqa: E402
from signer.client.wakeup_config import AmqpWakeupConfig, RedisWakeupConfig  # noqa: E402
from signer.client.wakeup_trigger import WakeupTrigger  # noqa: E402
from signer.client.webdb import WebDB  # noqa: E402
from signer.protocol.serialconfig import SerialConfig  # noqa: E402
from signer.protocol.transport import ClientLinkProtocol, open_serial  # noqa: E402
from tests.support.pty import pty_pair  # noqa: E402
from tests.support.testca import make_csr  # noqa: E402
from tests.support.webdb import sqlite_webdb  # noqa: E402

BIN = Path(sys.executable).parent
HOUR = 3600.0


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


class CountingPool:
    """Counts the statements that go through an adbapi pool (benchmark instrumentation)."""

    def __init__(self, webdb: WebDB) -> None:
        self.count = 0
        self._inside = False
        pool = webdb.pool
        for name in ("runQuery", "runOperation", "runInteraction"):
            original = getattr(pool, name)

            def counted(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                # runQuery/runOperation go through runInteraction: count the outer call only
                if self._inside:
                    return _original(*args, **kwargs)
                self.count += 1
                self._inside = True
                try:
                    return _original(*args, **kwargs)
                finally:
                    self._inside = False

            setattr(pool, name, counted)


def start_signer(base: Path, device: str) -> subprocess.Popen[bytes]:
    directory = base / "signer"
    subprocess.run([str(BIN / "signer"), "init-test-signer", str(directory)], check=True, capture_output=True)
    serial = directory / "serial.conf"
    serial.write_text(f'[serial]\ndevice = "{device}"\nbaudrate = 115200\n')
    log = base / "server.log"
    server = subprocess.Popen(
        [str(BIN / "twistd"), "-n", "--pidfile=", "--logfile", str(log), "signer-server",
         "--config", str(directory / "signer-server.toml"), "--serial-config", str(serial)],
        cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not log.exists() or "serving on" not in log.read_text():
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"signer-server did not start:\n{log.read_text() if log.exists() else ''}")
        time.sleep(0.05)
    return server


def client_config(base: Path, db_config: Any) -> ClientConfig:
    roots = tuple(
        RootConfig(rootcert=i + 1, crl=base / "www" / f"root{i}.crl",
                   ca_certificate=base / "signer" / "roots" / f"root{i}.crt")
        for i in range(2)
    )
    (base / "www").mkdir(exist_ok=True)
    return ClientConfig(
        source="<benchmark>",
        database=db_config,
        link=LinkConfig(serial_config=None),
        files=FilesConfig(csr_dir=base / "csr", crt_dir=base / "crt", state_dir=base / "state"),
        roots=roots,
        mail=MailConfig(enabled=False),
    )


def write_csr(base: Path, row_id: int, index: int) -> None:
    path = base / "csr" / "client" / str(row_id // 1000) / f"client-{row_id}.csr"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make_csr(f"Member {row_id}", index=index))


async def wait_for(reactor: Any, condition: Any, timeout: float = 30.0, step: float = 0.0005) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await task.deferLater(reactor, step, lambda: None)


async def latency(reactor: Any, base: Path, db: Any, jobs: Jobs, trigger: WakeupTrigger, source_name: str,
                  count: int, first_id: int) -> tuple[list[float], list[float]]:
    woken_at: list[float] = []

    def wake(kind: str, row_id: int | None) -> None:
        woken_at.append(time.perf_counter())
        trigger.wake(kind, row_id)

    source: WakeupSource
    if source_name == "redis":
        source = RedisWakeup(RedisWakeupConfig(channel="signer-benchmark"), wake, reactor)
        publish_redis("127.0.0.1", 6379, "signer-benchmark", b"crl")  # first contact (not timed)
        sock = socket.create_connection(("127.0.0.1", 6379))
        replies = sock.makefile("rb")

        def publish(message: bytes) -> None:
            # a publisher with an open connection, like a PHP worker with a persistent phpredis link
            sock.sendall(b"*3\r\n$7\r\nPUBLISH\r\n$16\r\nsigner-benchmark\r\n$%d\r\n%s\r\n" % (len(message), message))
            replies.readline()
    else:
        import pika

        config = AmqpWakeupConfig(queue=f"signer-benchmark-{os.getpid()}")
        source = AmqpWakeup(config, wake, reactor)
        publish_amqp(config, b"crl")  # declares the queue (not timed)
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        channel = connection.channel()

        def publish(message: bytes) -> None:
            channel.basic_publish("", config.queue, message)
    source.startService()
    await wait_for(reactor, lambda: source.connected)
    await wait_for(reactor, lambda: not trigger.busy())
    await task.deferLater(reactor, 0.2, lambda: None)
    await wait_for(reactor, lambda: not trigger.busy())
    to_wake: list[float] = []
    to_signed: list[float] = []
    for n in range(count):
        row_id = first_id + n
        db.add_cert("emailcerts", row_id, 10, f"/CN=Member {row_id}")
        write_csr(base, row_id, index=3 + n % 5)
        before = len(woken_at)
        sent = time.perf_counter()
        publish(f'{{"kind":"emailcerts","id":{row_id}}}'.encode())
        await wait_for(
            reactor,
            lambda: trigger.last_job is not None and ("emailcerts", row_id) in trigger.last_job.signed
            and not trigger.busy(),
        )
        done = time.perf_counter()
        to_wake.append((woken_at[before] - sent) * 1000)
        to_signed.append((done - sent) * 1000)
    await source.stopService()
    if source_name == "redis":
        sock.close()
    else:
        connection.close()
    if source_name == "amqp":
        subprocess.run(["rabbitmqctl", "delete_queue", f"signer-benchmark-{os.getpid()}"], capture_output=True)
    return to_wake, to_signed


async def idle_hour(reactor: Any, jobs: Jobs, counter: CountingPool, interval: float) -> tuple[int, int, float]:
    """Rounds and statements in one simulated idle hour of PollingService at ``interval``."""
    clock = task.Clock()
    clock.advance(time.time())
    jobs.clock = clock
    trigger = WakeupTrigger(jobs, clock)
    polling = PollingService(trigger, interval, clock)  # type: ignore[arg-type]
    jobs.rounds = 1  # the start-up CRL check is not idle work; later n-th rounds are counted
    counter.count = 0
    started = time.perf_counter()
    polling.startService()
    elapsed = 0.0
    while True:
        await wait_for(reactor, lambda: not trigger.busy(), step=0.0002)
        if elapsed + interval > HOUR:
            break
        clock.advance(interval)
        elapsed += interval
    rounds = polling.rounds_started
    queries = counter.count
    await polling.stopService()
    return rounds, queries, time.perf_counter() - started


async def run(reactor: Any, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="wakeup-bench-") as tmp, pty_pair() as pair:
        base = Path(tmp)
        server = start_signer(base, pair.a)
        try:
            db = sqlite_webdb(base / "webdb.sqlite")
            db.add_user(10, "member@example.org", "Member")
            config = client_config(base, db.config)
            link = ClientLinkProtocol(reactor)
            open_serial(link, SerialConfig(pair.b), reactor)
            webdb = WebDB.from_config(config.database)
            counter = CountingPool(webdb)
            jobs = Jobs(config, webdb, link, reactor, CrlInstaller(reactor))
            trigger = WakeupTrigger(jobs, reactor)
            first = await trigger.run_round()  # journal, first CRL check (fetches both CRLs)
            print(f"first round: sent {first.sent}, CRLs refreshed {first.crl_refreshed}, "
                  f"{counter.count} statements")
            counter.count = 0
            idle = await trigger.run_round()
            per_round = counter.count
            print(f"idle round: {per_round} statements, keep-alive {idle.keepalive}")

            next_id = 1
            for source in args.sources:
                wake, signed = await latency(reactor, base, db, jobs, trigger, source, args.count, next_id)
                next_id += args.count
                print(f"\n{source}: message -> signed certificate over the unpaced pty, {args.count} runs (ms)")
                print(f"  message -> wake callback: median {statistics.median(wake):7.2f}  "
                      f"p90 {percentile(wake, 0.9):7.2f}  max {max(wake):7.2f}")
                print(f"  message -> row signed:    median {statistics.median(signed):7.2f}  "
                      f"p90 {percentile(signed, 0.9):7.2f}  max {max(signed):7.2f}")

            if not args.skip_hour:
                print("\nidle database statements per hour (simulated hour on a Clock, NULs over the pty):")
                results = {}
                for label, interval in (("polling only, 2.7 s", 2.7), ("wake-up on, 60 s fallback", 60.0)):
                    rounds, queries, took = await idle_hour(reactor, jobs, counter, interval)
                    results[label] = queries
                    print(f"  {label:28s} {rounds:5d} rounds/h  {queries:6d} statements/h  "
                          f"({queries / max(rounds, 1):.2f} per round; simulated in {took:.1f} s)")
                a, b = results.values()
                print(f"  reduction: {a / max(b, 1):.1f}x fewer idle statements")
            await link.close()
            webdb.close()
        finally:
            server.terminate()
            server.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20, help="signed rows per source (default 20)")
    parser.add_argument("--sources", default="redis,amqp", help="comma-separated: redis, amqp")
    parser.add_argument("--skip-hour", action="store_true", help="skip the simulated idle hour")
    args = parser.parse_args()
    args.sources = [s for s in args.sources.split(",") if s]
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
