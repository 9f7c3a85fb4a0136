"""``signer linksim``: a simulated serial line between two pseudo-terminals."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from signer.cli.errors import EXIT_OK, CommandError
from signer.cli import argtypes

NON_NEGATIVE_INT = argtypes.integer(minimum=0)
NON_NEGATIVE_FLOAT = argtypes.number(minimum=0)
POSITIVE_FLOAT = argtypes.number(above=0)
PROBABILITY = argtypes.number(0, 1)

DESCRIPTION = """\
Create two pseudo-terminals A and B and relay bytes between them like a serial
cable: paced at --baud (bits per character from --bytesize/--parity/--stopbits,
10 for 8N1, so 115200 baud carries 11,520 bytes/s per direction), with an
optional one-way --latency, and faults: bit flips (--flip-rate per byte),
dropped bytes (--drop-rate per byte), stalls (nothing delivered for
--stall-ms; the bytes wait and come later) at random (--stall-rate per second)
or on schedule (--stall-at), and unplugs (bytes crossing the line meanwhile are
lost) on schedule (--unplug-at) or on demand: SIGUSR1 pulls the cable out,
the next SIGUSR1 plugs it back in. Every random decision follows --seed.

Open the two devices (printed on start, or the symlinks --link-a/--link-b)
with the two programs, e.g. the signer server on A and the client on B. A
program may close and reopen its device at any time (a daemon restarted with
kill -9): the relay keeps working. Bytes delivered while no program has a
device open wait in its input buffer (up to 4 KiB, then 64 KiB in the relay;
beyond that they are lost and counted) until pyserial flushes them on open.

On start it prints "A <device>", "B <device>" and then "READY" (stdout,
flushed). It runs until SIGINT/SIGTERM or --duration, then prints the counters
(bytes each way, delivered, flipped, dropped, lost while unplugged, lost for
lack of a reader, stalls, unplugs); --report-every prints them periodically,
--json as one JSON object per report."""

EPILOG = """\
examples:
  signer linksim --link-a /tmp/ttyA --link-b /tmp/ttyB
  signer linksim --link-a /tmp/ttyA --link-b /tmp/ttyB --baud 9600 --latency 20
  signer linksim --link-a /tmp/ttyA --link-b /tmp/ttyB --seed 7 \\
      --flip-rate 1e-4 --stall-rate 0.1 --stall-ms 300 --unplug-at 60:5
  kill -USR1 $(pgrep -f 'signer linksim')   # pull the cable; again to plug it in"""


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``signer linksim``."""
    parser = subcommands.add_parser(
        "linksim",
        help="simulated serial line (two ptys) with pacing and fault injection",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("devices")
    where.add_argument(
        "--link-a", metavar="PATH",
        help="make PATH a symlink to side A's device (replaced if it is a symlink; removed at exit)",
    )
    where.add_argument(
        "--link-b", metavar="PATH",
        help="make PATH a symlink to side B's device (replaced if it is a symlink; removed at exit)",
    )
    line = parser.add_argument_group("line")
    line.add_argument(
        "--baud", type=NON_NEGATIVE_INT, default=115200, metavar="BPS",
        help="line speed in bits per second; 0 = unpaced (default 115200)",
    )
    line.add_argument(
        "--bytesize", type=int, choices=(5, 6, 7, 8), default=8,
        help="data bits per character (default 8)",
    )
    line.add_argument(
        "--parity", choices=("N", "E", "O", "M", "S"), default="N",
        help="parity: adds one bit per character unless N (default N)",
    )
    line.add_argument(
        "--stopbits", type=float, choices=(1, 1.5, 2), default=1, help="stop bits (default 1)"
    )
    line.add_argument(
        "--latency", type=NON_NEGATIVE_FLOAT, default=0.0, metavar="MS",
        help="one-way delay in milliseconds after a byte was transmitted (default 0)",
    )
    line.add_argument(
        "--tick-ms", type=POSITIVE_FLOAT, default=2.0, metavar="MS",
        help="shortest interval between two releases of paced bytes; bytes due "
        "meanwhile are released together (default 2)",
    )
    line.add_argument(
        "--early-us", type=NON_NEGATIVE_FLOAT, default=500.0, metavar="US",
        help="release bytes up to this many microseconds before they have fully "
        "crossed, instead of up to a timer tick (about 1 ms) after; keeps lone "
        "control bytes near their true time (default 500; 0 = never early)",
    )
    faults = parser.add_argument_group("faults (the same for both directions)")
    faults.add_argument(
        "--seed", type=int, default=0, help="seed of every random decision (default 0)"
    )
    faults.add_argument(
        "--flip-rate", type=PROBABILITY, default=0.0, metavar="P",
        help="probability per byte that one of its bits is flipped (e.g. 1e-4)",
    )
    faults.add_argument(
        "--drop-rate", type=PROBABILITY, default=0.0, metavar="P",
        help="probability per byte that it is lost",
    )
    faults.add_argument(
        "--stall-rate", type=NON_NEGATIVE_FLOAT, default=0.0, metavar="PER_SECOND",
        help="random stalls per second of line time, per direction (default 0)",
    )
    faults.add_argument(
        "--stall-ms", type=POSITIVE_FLOAT, default=50.0, metavar="MS",
        help="length of a random stall in milliseconds (default 50)",
    )
    faults.add_argument(
        "--stall-at", type=_schedule, action="append", default=[], metavar="T:DURATION",
        help="a stall of both directions T seconds after start for DURATION seconds "
        "(repeatable)",
    )
    faults.add_argument(
        "--unplug-at", type=_schedule, action="append", default=[], metavar="T:DURATION",
        help="pull the cable T seconds after start for DURATION seconds (repeatable); "
        "SIGUSR1 toggles an unplug at any time",
    )
    run_group = parser.add_argument_group("running and reporting")
    run_group.add_argument(
        "--duration", type=POSITIVE_FLOAT, metavar="SECONDS",
        help="stop by itself after SECONDS (default: run until SIGINT/SIGTERM)",
    )
    run_group.add_argument(
        "--report-every", type=POSITIVE_FLOAT, metavar="SECONDS",
        help="also print the counters every SECONDS",
    )
    run_group.add_argument(
        "--json", action="store_true", help="print counters as one JSON object per line"
    )
    run_group.add_argument(
        "-v", "--verbose", action="store_true", help="Twisted log events on stderr (a device that could not be read, errors)"
    )
    parser.set_defaults(run=run)


def _schedule(text: str) -> Any:
    from signer.linksim import parse_schedule

    try:
        return parse_schedule(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run(args: argparse.Namespace) -> int:
    """Run the simulated line until stopped; print the counters."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from signer.linksim import (
        FaultSettings,
        Line,
        LineRelay,
        LineSettings,
        PtyPair,
        open_pty,
        open_pty_end,
    )

    if args.verbose:
        globalLogBeginner.beginLoggingTo(
            [textFileLogObserver(sys.stderr)], redirectStandardIO=False
        )
    settings = LineSettings(
        baud=args.baud,
        bytesize=args.bytesize,
        parity=args.parity,
        stopbits=args.stopbits,
        latency=args.latency / 1000,
    )
    faults = FaultSettings(
        flip_rate=args.flip_rate,
        drop_rate=args.drop_rate,
        stall_rate=args.stall_rate,
        stall_duration=args.stall_ms / 1000,
        stalls=tuple(args.stall_at),
        unplugs=tuple(args.unplug_at),
        seed=args.seed,
    )
    pairs: list[PtyPair] = []
    try:
        for link in (args.link_a, args.link_b):
            pairs.append(open_pty(link))
    except OSError as error:
        for pair in pairs:
            pair.close()
        raise CommandError(f"cannot create the pseudo-terminals: {error}") from None
    pair_a, pair_b = pairs
    clock: Any = reactor
    started = clock.seconds()
    started_wall = time.monotonic()
    line = Line(settings, faults, origin=started)

    class _Forward:
        """Writes to an end created after the relay (breaks the cycle)."""

        def __init__(self) -> None:
            self.end: Any = None

        def write(self, data: bytes) -> None:
            self.end.write(data)

    to_a, to_b = _Forward(), _Forward()
    relay = LineRelay(
        line, clock, to_a, to_b, min_tick=args.tick_ms / 1000, early=args.early_us / 1e6
    )

    def overflow(direction: Any) -> Any:
        def count(lost: int) -> None:
            direction.counters.overflow_lost += lost

        return count

    to_a.end = open_pty_end(
        pair_a, "A", reactor, clock, lambda data: relay.received("a", data), overflow(line.b_to_a)
    )
    to_b.end = open_pty_end(
        pair_b, "B", reactor, clock, lambda data: relay.received("b", data), overflow(line.a_to_b)
    )

    def report() -> None:
        relay.pump()  # bring the counters up to now
        elapsed = time.monotonic() - started_wall
        if args.json:
            record = {"elapsed": round(elapsed, 3), **line.counters()}
            print(json.dumps(record), flush=True)
        else:
            print(line.report(elapsed), flush=True)

    def toggle() -> None:
        unplugged = relay.toggle_unplug()
        state = "unplugged" if unplugged else "plugged in"
        print(f"linksim: cable {state} (SIGUSR1)", flush=True)

    previous_usr1 = signal.signal(
        signal.SIGUSR1, lambda signum, frame: reactor.callFromThread(toggle)  # type: ignore[attr-defined]
    )
    # scheduled events are in the model already; announce them as they happen
    for schedule in faults.unplugs:
        reactor.callLater(
            schedule.start, print, f"linksim: cable unplugged for {schedule.duration:g} s (schedule)",
            flush=True,
        )
    if args.report_every:
        from twisted.internet.task import LoopingCall

        periodic = LoopingCall(report)
        periodic.clock = clock
        periodic.start(args.report_every, now=False)
    if args.duration:
        reactor.callLater(args.duration, reactor.stop)

    print(f"A {pair_a.path}" + (f" (link {pair_a.link})" if pair_a.link else ""), flush=True)
    print(f"B {pair_b.path}" + (f" (link {pair_b.link})" if pair_b.link else ""), flush=True)
    print(f"linksim: {settings.describe()}, seed {faults.seed}", flush=True)
    print("READY", flush=True)
    try:
        reactor.run()
    finally:
        signal.signal(signal.SIGUSR1, previous_usr1)
        report()
        relay.stop()
        for end in (to_a.end, to_b.end):
            end.close()
        for pair in pairs:
            pair.close()
    return EXIT_OK

