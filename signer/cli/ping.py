"""``signer ping``: NUL round trips to a signer, with their times."""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

from signer.cli import connection
from signer.cli.errors import EXIT_OK
from signer.protocol import codec
from signer.cli import argtypes

COUNT = argtypes.integer(minimum=1)
INTERVAL = argtypes.number(minimum=0)


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``signer ping``."""
    parser = subcommands.add_parser(
        "ping",
        help="NUL round trip(s) to a signer, printing the round-trip time",
        description=(
            "Send NUL requests (keep-alive carrying the current UTC time, which "
            "the signer uses to set its clock) and print each round-trip time in "
            "milliseconds; with --count above 1, also the median, minimum and "
            "maximum. Exit 0 when every round trip succeeded, 4 on a timeout or "
            "other link failure."
        ),
    )
    connection.add_connection_options(parser)
    parser.add_argument(
        "--count",
        type=COUNT,
        default=1,
        metavar="N",
        help="number of round trips (default 1)",
    )
    parser.add_argument(
        "--interval",
        type=INTERVAL,
        default=0.0,
        metavar="SECONDS",
        help="pause between round trips (default 0)",
    )
    parser.set_defaults(run=run)


def nul_request(now: float) -> codec.NulRequest:
    """The NUL request carrying ``now`` (POSIX seconds) as UTC time."""
    moment = datetime.datetime.fromtimestamp(now, tz=datetime.timezone.utc)
    return codec.NulRequest(timestamp=codec.format_nul_timestamp(moment))


def summary(rtts: list[float]) -> str:
    """``median … ms (min …, max …) over N round trips``."""
    return (
        f"median {statistics.median(rtts) * 1000:.2f} ms "
        f"(min {min(rtts) * 1000:.2f}, max {max(rtts) * 1000:.2f}) "
        f"over {len(rtts)} round trips"
    )


def run(args: argparse.Namespace) -> int:
    """Ping the signer ``args.count`` times."""
    rtts: list[float] = []

    async def exchange(session: connection.Session) -> None:
        from twisted.internet import task

        for number in range(1, args.count + 1):
            if number > 1 and args.interval:
                await task.deferLater(session.clock, args.interval, lambda: None)
            started = time.perf_counter()
            await session.request(nul_request(session.clock.seconds()))
            rtt = time.perf_counter() - started
            rtts.append(rtt)
            print(f"NUL round trip {number}/{args.count}: {rtt * 1000:.2f} ms", flush=True)

    try:
        connection.run_link(args, exchange)
    finally:
        if len(rtts) > 1:
            print(summary(rtts), flush=True)
    return EXIT_OK
