"""A tiny scripted signer responder over a real serial device.

Run it in another process against one end of a pty pair (see
:mod:`tests.support.pty`)::

    python -m tests.support.responder --device /tmp/ttyB [--baud 115200]
        [--payload TEXT | --payload-file FILE] [--exit-after N]

It answers NUL requests with the NUL response and every other request with
``--payload`` (default: empty, i.e. "refused"), using the real
:class:`~signer.protocol.transport.ServerLinkProtocol` over the real
``SerialPort``. Once the port is open it prints ``READY <device>`` on stdout
(one line, flushed) so a parent can wait for it; it logs to stderr and stops
on SIGTERM/SIGINT, or after ``--exit-after`` answered requests.

:class:`ScriptedHandler` is the same handler for in-process tests.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from signer.protocol import codec
from signer.protocol.transport import IRequestHandler


@implementer(IRequestHandler)
class ScriptedHandler:
    """NUL gets the NUL response, anything else ``make_response(request, payload)``.

    :ivar requests: every request handled, in order.
    """

    def __init__(self, payload: bytes = b"") -> None:
        self.payload = payload
        self.requests: list[codec.Request] = []

    def handle(self, request: codec.Request) -> Deferred[codec.Response]:
        self.requests.append(request)
        return succeed(codec.make_response(request, self.payload))


def _arguments(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.responder",
        description="Scripted signer responder for tests (NUL and canned answers).",
    )
    parser.add_argument("--device", required=True, help="serial device (e.g. a pty link)")
    parser.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    payload = parser.add_mutually_exclusive_group()
    payload.add_argument("--payload", default="", help="field 1 of every non-NUL answer")
    payload.add_argument("--payload-file", help="read field 1 of every non-NUL answer from FILE")
    parser.add_argument(
        "--exit-after", type=int, default=0, help="stop after N answered requests (0: never)"
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Serve until stopped; return the process exit code."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from signer.protocol.serialconfig import SerialConfig
    from signer.protocol.transport import ServerLinkProtocol, open_serial

    args = _arguments(argv)
    if args.payload_file:
        with open(args.payload_file, "rb") as handle:
            payload = handle.read()
    else:
        payload = args.payload.encode("utf-8")
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )
    handler = ScriptedHandler(payload)
    protocol = ServerLinkProtocol(handler, reactor)  # type: ignore[arg-type]
    if args.exit_after:
        protocol.when_served(args.exit_after).addCallback(
            lambda _: reactor.callLater(0.05, reactor.stop)  # type: ignore[attr-defined]
        )
    open_serial(protocol, SerialConfig(device=args.device, baudrate=args.baud), reactor)
    print(f"READY {args.device}", flush=True)
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
