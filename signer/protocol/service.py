"""The serial line as a Twisted service, shared by both roles.

:class:`SerialLineService` opens the device with :func:`~signer.protocol.transport.open_serial`
when it starts and closes it through the link protocol's ``close()`` when it
stops. ``close()`` waits until everything written has left (the final ACK of a
round trip, an answer in the middle of being sent), so ``stopService`` returns
a Deferred that twistd waits for before the reactor stops. A line whose bytes
cannot leave (the peer stopped reading and the buffer is full) is dropped
after ``close_timeout`` seconds, so shutdown never hangs on it.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from signer.protocol.serialconfig import SerialConfig
from signer.protocol.transport import open_serial

__all__ = ["DEFAULT_CLOSE_TIMEOUT", "OPENED_CLIENT", "OPENED_SERVER", "SerialLineService"]

#: Seconds ``stopService`` waits for the line to flush before dropping it.
DEFAULT_CLOSE_TIMEOUT = 10.0
#: Startup line of the client (operators and tests wait for "Serial line open").
OPENED_CLIENT = "Serial line open: {line}"
#: Startup line of the server (operators and tests wait for "serving on").
OPENED_SERVER = "serving on {device} at {baud} baud {bits}{parity}{stop}"


class SerialLineService(Service):
    """Opens the serial line on start; closes it (after a flush) on stop.

    :param protocol: the link protocol (``ClientLinkProtocol`` or
        ``ServerLinkProtocol``); its ``close()`` returns a Deferred that fires
        once the port is closed.
    :param serial: the line settings.
    :param reactor: the reactor the port is opened on (also the clock of the
        close timeout unless ``clock`` is given).
    :param opened: format of the startup log line; fields ``device``,
        ``baud``, ``bits``, ``parity``, ``stop`` and ``line``
        (:meth:`SerialConfig.describe`).
    :param close_timeout: seconds to wait for the flush on stop.
    :param clock: the clock of the close timeout (tests).
    :ivar port: the open port, or None.
    """

    log = Logger()

    def __init__(
        self,
        protocol: Any,
        serial: SerialConfig,
        reactor: Any,
        *,
        opened: str = OPENED_CLIENT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        clock: IReactorTime | None = None,
    ) -> None:
        self.protocol = protocol
        self.serial = serial
        self.reactor = reactor
        self.opened = opened
        self.close_timeout = close_timeout
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.port: Any = None

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        """Open the device; an error (no such device, no permission) stops startup."""
        self.port = open_serial(self.protocol, self.serial, self.reactor)
        super().startService()
        serial = self.serial
        self.log.info(
            self.opened,
            device=serial.device,
            baud=serial.baudrate,
            bits=serial.bytesize,
            parity=serial.parity,
            stop=f"{serial.stopbits:g}",
            line=serial.describe(),
        )

    def stopService(self) -> "Deferred[None] | None":  # noqa: N802
        """Close the line once flushed; the Deferred fires when it is closed."""
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        closed: Deferred[None] = self.protocol.close()
        timer = self.clock.callLater(self.close_timeout, self._drop, port)

        def done(result: None) -> None:
            if timer.active():
                timer.cancel()
            self.log.info("Serial line closed: {device}", device=self.serial.device)

        def failed(failure: Failure) -> None:
            if timer.active():
                timer.cancel()
            self.log.failure("closing the serial line failed", failure)

        closed.addCallbacks(done, failed)
        return closed

    def _drop(self, port: Any) -> None:
        """The flush did not end in time: close the device without it."""
        self.log.warn(
            "Serial line {device}: unsent bytes not written after {timeout} s; closing without them",
            device=self.serial.device,
            timeout=self.close_timeout,
        )
        port.stopReading()
        port.stopWriting()
        port.connectionLost(Failure(ConnectionLost("unsent bytes dropped at shutdown")))
