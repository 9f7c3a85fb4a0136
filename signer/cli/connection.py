"""Connection options shared by every subcommand that talks to a signer.

:func:`add_connection_options` adds ``--serial-config FILE`` or ``--device
PATH`` (with ``--baud/--bytesize/--parity/--stopbits/--xonxoff/--rtscts``),
``--timeout`` (a deadline for each whole request), overrides of the link
layer's own timeouts and ``--max-frame-length``. :func:`run_link` opens the serial
line with the project's link layer (:mod:`signer.protocol.transport`), runs an
async *exchange* against a :class:`Session` under
:func:`twisted.internet.task.react`, closes the line and returns what the
exchange returned; :func:`request_once` is the one-request shortcut. Link
failures become :class:`~signer.cli.errors.CommandError` with
:data:`~signer.cli.errors.EXIT_LINK_FAILURE`.

Twisted and the transport are imported only when a command runs, so that
``--help`` and ``signer decode`` stay light.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from signer.cli.errors import EXIT_LINK_FAILURE, EXIT_LOCAL_ERROR, EXIT_USAGE, CommandError
from signer.protocol import codec
from signer.cli import argtypes

POSITIVE_FLOAT = argtypes.number(above=0)
POSITIVE_INT = argtypes.integer(minimum=1, base=0)
NON_NEGATIVE_INT = argtypes.integer(minimum=0, base=0)

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTime

    from signer.protocol.transport import ClientLinkProtocol

    from signer.protocol.link import LinkTimeouts
    from signer.protocol.serialconfig import SerialConfig

T = TypeVar("T")

DEFAULT_BAUD = 115200
PARITIES = ("N", "E", "O", "M", "S")


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Add the serial-line options every signer-talking subcommand shares."""
    line = parser.add_argument_group(
        "connection",
        "Where the signer is: a serial configuration file (the daemons' format, see "
        "etc/serial.conf.example) or a device with explicit line settings.",
    )
    where = line.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--serial-config", metavar="FILE", help="serial configuration file to read"
    )
    where.add_argument(
        "--device", metavar="PATH", help="serial device, e.g. /dev/ttyUSB0 or a pty"
    )
    line.add_argument(
        "--baud",
        type=POSITIVE_INT,
        metavar="N",
        help=f"baud rate with --device (default {DEFAULT_BAUD})",
    )
    line.add_argument(
        "--bytesize", type=int, choices=(5, 6, 7, 8), help="data bits with --device (default 8)"
    )
    line.add_argument(
        "--parity",
        type=str.upper,
        choices=PARITIES,
        help="parity with --device: N, E, O, M or S (default N)",
    )
    line.add_argument(
        "--stopbits",
        type=float,
        choices=(1, 1.5, 2),
        help="stop bits with --device (default 1)",
    )
    line.add_argument(
        "--xonxoff", action="store_true", default=None, help="software flow control (--device)"
    )
    line.add_argument(
        "--rtscts", action="store_true", default=None, help="hardware flow control (--device)"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log link events on stderr (-v: warnings and info such as NAKs and "
        "discarded garbage; -vv: also debug, e.g. each round trip)",
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--timeout",
        type=POSITIVE_FLOAT,
        metavar="SECONDS",
        help="give up on a request after SECONDS in total (default: only the link "
        "layer's own timeouts apply, up to about 150 s with the legacy values)",
    )
    limits.add_argument(
        "--start-ack-timeout",
        type=POSITIVE_FLOAT,
        metavar="SECONDS",
        help="wait this long for the ACK of our START (default 20, as the legacy client)",
    )
    limits.add_argument(
        "--frame-ack-timeout",
        type=POSITIVE_FLOAT,
        metavar="SECONDS",
        help="wait this long for the ACK/NAK of our frame (default 5)",
    )
    limits.add_argument(
        "--response-timeout",
        type=POSITIVE_FLOAT,
        metavar="SECONDS",
        help="wait this long for the signer's START once it has our request "
        "(default 120: signing can be slow)",
    )
    limits.add_argument(
        "--max-resends",
        type=NON_NEGATIVE_INT,
        metavar="N",
        help="resend a frame at most N times after NAK (default 5)",
    )
    limits.add_argument(
        "--max-frame-length",
        type=POSITIVE_INT,
        default=codec.DEFAULT_MAX_FRAME_LENGTH,
        metavar="BYTES",
        help="largest answer frame accepted (outer length, default "
        f"{codec.DEFAULT_MAX_FRAME_LENGTH})",
    )


#: Option (dest) -> LinkTimeouts field.
_TIMEOUT_OPTIONS = {
    "start_ack_timeout": "start_ack",
    "frame_ack_timeout": "frame_ack",
    "response_timeout": "response_start",
    "max_resends": "max_resends",
}

_DEVICE_ONLY = ("baud", "bytesize", "parity", "stopbits", "xonxoff", "rtscts")


def serial_config_from_args(args: argparse.Namespace) -> SerialConfig:
    """The :class:`SerialConfig` the options describe.

    Raises :class:`CommandError` for an unreadable or invalid file, or line
    settings given together with ``--serial-config``.
    """
    from signer.protocol.serialconfig import SerialConfig, SerialConfigError, load_serial_config

    if args.serial_config:
        extra = [f"--{name}" for name in _DEVICE_ONLY if getattr(args, name) is not None]
        if extra:
            raise CommandError(
                f"{', '.join(extra)} only apply with --device, not with --serial-config "
                "(put the settings in the file)",
                EXIT_USAGE,
            )
        try:
            return load_serial_config(args.serial_config)
        except SerialConfigError as exc:
            raise CommandError(f"bad serial configuration {args.serial_config}: {exc}") from None
        except OSError as exc:
            raise CommandError(
                f"cannot read serial configuration {args.serial_config}: {exc.strerror or exc}"
            ) from None
    settings: dict[str, Any] = {
        "device": args.device,
        "baudrate": args.baud if args.baud is not None else DEFAULT_BAUD,
    }
    for name in ("bytesize", "parity", "stopbits", "xonxoff", "rtscts"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    try:
        return SerialConfig(**settings)
    except (SerialConfigError, ValueError, TypeError) as exc:
        raise CommandError(f"bad line settings: {exc}", EXIT_USAGE) from None


@dataclass(frozen=True)
class LinkOptions:
    """Everything needed to open the line and bound each request."""

    config: SerialConfig
    timeouts: LinkTimeouts
    max_frame_length: int = codec.DEFAULT_MAX_FRAME_LENGTH
    deadline: float | None = None


def link_timeouts(args: argparse.Namespace) -> LinkTimeouts:
    """The link layer's timeouts: its defaults with the options' overrides."""
    from signer.protocol.link import LinkTimeouts

    overrides = {
        field: getattr(args, option)
        for option, field in _TIMEOUT_OPTIONS.items()
        if getattr(args, option, None) is not None
    }
    try:
        return LinkTimeouts(**overrides)
    except (TypeError, ValueError) as exc:
        raise CommandError(f"bad link timeouts: {exc}", EXIT_USAGE) from None


def link_options(args: argparse.Namespace) -> LinkOptions:
    """The :class:`LinkOptions` from parsed connection options."""
    return LinkOptions(
        config=serial_config_from_args(args),
        timeouts=link_timeouts(args),
        max_frame_length=args.max_frame_length,
        deadline=args.timeout,
    )


class Session:
    """One open line to a signer: send requests, one at a time."""

    def __init__(
        self, protocol: ClientLinkProtocol, clock: IReactorTime, deadline: float | None
    ) -> None:
        self._protocol = protocol
        self._deadline = deadline
        #: The reactor's clock (``IReactorTime``): for timestamps and timing.
        self.clock = clock

    def request(self, message: codec.Request) -> Deferred[codec.Response]:
        """Send ``message``; fires with the typed response.

        Fails with a ``LinkError`` from the link layer, or with
        ``twisted.internet.defer.TimeoutError`` after ``--timeout`` seconds.
        """
        result: Deferred[codec.Response] = self._protocol.request(message)
        if self._deadline is not None:
            result.addTimeout(self._deadline, self.clock)
        return result


def describe_link_failure(exc: BaseException, options: LinkOptions) -> str:
    """A one-line operator message for a failed exchange."""
    device = options.config.device
    from twisted.internet.defer import CancelledError, TimeoutError as DeferredTimeout

    if isinstance(exc, (DeferredTimeout, CancelledError)):
        if options.deadline is None:
            return f"the request on {device} was cancelled"
        return (
            f"no answer from the signer on {device} within {options.deadline:g} s "
            "(--timeout); is a signer running on the other end of the line?"
        )
    detail = str(exc) or "no detail"
    return f"link failure on {device}: {type(exc).__name__}: {detail}"


def start_logging(verbosity: int) -> None:
    """Send Twisted log events at or above the level ``verbosity`` selects to stderr.

    0: errors only (the command prints its own one-line message anyway),
    1: info, 2 or more: debug.
    """
    import sys

    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    level = {0: LogLevel.critical, 1: LogLevel.info}.get(verbosity, LogLevel.debug)
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(defaultLogLevel=level)]
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def run_link(args: argparse.Namespace, exchange: Callable[[Session], Awaitable[T]]) -> T:
    """Open the line described by ``args``, run ``exchange``, close the line.

    Runs the reactor (``task.react``); returns what ``exchange`` returned.
    Raises :class:`CommandError`: :data:`EXIT_LINK_FAILURE` for timeouts and
    link errors, :data:`EXIT_LOCAL_ERROR` when the device cannot be opened.
    Any other exception of ``exchange`` propagates unchanged.
    """
    options = link_options(args)
    from twisted.internet import defer, task

    start_logging(getattr(args, "verbose", 0))

    from signer.protocol.link import LinkError
    from signer.protocol.transport import ClientLinkProtocol, open_serial

    outcome: list[tuple[bool, Any]] = []

    async def main(reactor: Any) -> None:
        protocol = ClientLinkProtocol(
            reactor, timeouts=options.timeouts, max_frame_length=options.max_frame_length
        )
        try:
            open_serial(protocol, options.config, reactor)
        except Exception as exc:  # pyserial's SerialException, OSError, ValueError
            outcome.append(
                (False, CommandError(f"cannot open {options.config.device}: {exc}", EXIT_LOCAL_ERROR))
            )
            return
        try:
            value = await exchange(Session(protocol, reactor, options.deadline))
        except (LinkError, defer.TimeoutError, defer.CancelledError) as exc:
            outcome.append(
                (False, CommandError(describe_link_failure(exc, options), EXIT_LINK_FAILURE))
            )
        except BaseException as exc:
            outcome.append((False, exc))
        else:
            outcome.append((True, value))
        finally:
            # close() waits until everything written (the final ACK) has left;
            # loseConnection() right before the reactor stops could drop it and
            # leave the signer waiting for that ACK.
            await protocol.close()

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit:
        pass
    if not outcome:
        raise CommandError("interrupted before the exchange finished", 130)
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value  # type: ignore[no-any-return]


def request_once(args: argparse.Namespace, message: codec.Request) -> codec.Response:
    """Send one request over the line described by ``args``; return the response."""

    async def exchange(session: Session) -> codec.Response:
        return await session.request(message)

    return run_link(args, exchange)
