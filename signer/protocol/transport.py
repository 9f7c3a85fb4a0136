"""Twisted adapters of the link machines: protocols over a serial port.

- :class:`ClientLinkProtocol` (web host): ``request(message)`` returns a
  ``Deferred`` firing with the typed response; requests are queued and go
  over the line one at a time.
- :class:`ServerLinkProtocol` (signing host): hands each decoded request to an
  :class:`IRequestHandler` and sends back what its ``Deferred`` yields; an
  undecodable request or a failing handler gets a well-formed empty answer.
- :func:`open_serial` attaches either protocol to the serial device named by
  a :class:`~signer.protocol.serialconfig.SerialConfig`.

The protocols only carry out the actions of the sans-IO machines in
:mod:`signer.protocol.link`: write bytes, run the machine's two timers (the
wait timer and the frame deadline) on the injected clock, fire Deferreds, and
log.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.serialport import SerialPort
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import Interface

from signer.protocol import codec
from signer.protocol.link import (
    Action,
    CancelDeadline,
    CancelTimer,
    Deliver,
    Failed,
    InitiatorLink,
    LinkBusy,
    LinkError,
    LinkLost,
    LinkReset,
    LinkStats,
    LinkTimeout,
    LinkTimeouts,
    NoResponse,
    Notice,
    ResponderLink,
    Sent,
    SetDeadline,
    SetTimer,
    TooManyResends,
    Write,
)
from signer.protocol.serialconfig import SerialConfig

__all__ = [
    "ClientLinkProtocol",
    "IRequestHandler",
    "LinkBusy",
    "LinkError",
    "LinkLost",
    "LinkReset",
    "LinkStats",
    "LinkTimeout",
    "LinkTimeouts",
    "NoResponse",
    "ResponseUndecodable",
    "ServerLinkProtocol",
    "TooManyResends",
    "open_serial",
]


class ResponseUndecodable(LinkError):
    """The response frame arrived intact but is not a response we understand."""


class IRequestHandler(Interface):
    """Answers the requests a :class:`ServerLinkProtocol` receives."""

    def handle(request: codec.Request) -> Deferred[codec.Response]:
        """Compute the response to ``request``.

        A failure (errback or exception) makes the server answer with an empty
        response of the right type.
        """


class _LinkAdapter(Protocol):
    """Carries out a link machine's actions on a transport and a clock."""

    log = Logger()
    _link: InitiatorLink | ResponderLink

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._timer: Optional[IDelayedCall] = None
        self._deadline: Optional[IDelayedCall] = None
        self._connected = False
        self._closed_waiters: list[Deferred[None]] = []
        self.last_success: Optional[float] = None

    @property
    def stats(self) -> LinkStats:
        """The link's counters (garbage, NAKs, resends, timeouts, frames...)."""
        return self._link.stats

    @property
    def link_state(self) -> str:
        """Name of the link machine's current state."""
        return self._link.state

    def connectionMade(self) -> None:
        self._connected = True
        self._after_connect()

    def close(self) -> Deferred[None]:
        """Close the port once everything written is flushed (e.g. the final
        ACK of a round trip); the Deferred fires when the port is closed.

        Stopping the reactor right after a response instead may lose that ACK
        and leave the peer waiting for it.
        """
        d: Deferred[None] = Deferred()
        if not self._connected or self.transport is None:
            d.callback(None)
            return d
        self._closed_waiters.append(d)
        self.transport.loseConnection()
        return d

    def _closed(self) -> None:
        waiters, self._closed_waiters = self._closed_waiters, []
        for d in waiters:
            d.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self._run(self._link.data_received(data))

    def _fired(self) -> None:
        self._timer = None
        self._run(self._link.timer_expired())

    def _deadline_fired(self, generation: int) -> None:
        self._deadline = None
        self._run(self._link.deadline_expired(generation))

    def _stop_timer(self) -> None:
        """Stop both timers (the wait timer and the frame deadline)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._stop_deadline()

    def _stop_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _run(self, actions: list[Action]) -> None:
        """Carry out ``actions`` in order; results go upward once all ran."""
        upward: list[Callable[[], None]] = []
        for action in actions:
            if isinstance(action, Write):
                if self._connected and self.transport is not None:
                    self.transport.write(action.data)
            elif isinstance(action, SetTimer):
                if self._timer is not None and self._timer.active():
                    self._timer.reset(action.seconds)
                else:
                    self._timer = self._clock.callLater(action.seconds, self._fired)
            elif isinstance(action, CancelTimer):
                if self._timer is not None and self._timer.active():
                    self._timer.cancel()
                self._timer = None
            elif isinstance(action, SetDeadline):
                # a new generation: never reuse the call of an older one
                self._stop_deadline()
                self._deadline = self._clock.callLater(
                    action.seconds, self._deadline_fired, action.generation
                )
            elif isinstance(action, CancelDeadline):
                self._stop_deadline()
            elif isinstance(action, Notice):
                self.log.emit(LogLevel.levelWithName(action.level), action.format, **action.fields)
            else:
                upward.append(self._upward(action))
        for deliver in upward:
            deliver()
        self._after_actions()

    def _upward(self, action: Action) -> Callable[[], None]:
        raise NotImplementedError

    def _after_connect(self) -> None:
        pass

    def _after_actions(self) -> None:
        pass


@dataclass
class _Pending:
    request: codec.Request
    frame: bytes
    deferred: Deferred[codec.Response]
    queued_at: float
    sent_at: float = 0.0


class ClientLinkProtocol(_LinkAdapter):
    """The initiator over a transport: ``request(message) -> Deferred[Response]``.

    Requests wait in a FIFO queue; one conversation is on the line at a time.
    A request's Deferred errbacks with a :class:`LinkError` subclass
    (:class:`LinkTimeout`, :class:`LinkReset`, :class:`LinkLost`,
    :class:`TooManyResends`, :class:`ResponseUndecodable`) carrying the reason.

    :ivar last_success: ``clock.seconds()`` of the last successful round trip,
        or None.
    """

    def __init__(
        self,
        clock: IReactorTime,
        timeouts: LinkTimeouts = LinkTimeouts(),
        max_frame_length: int = codec.DEFAULT_MAX_FRAME_LENGTH,
    ) -> None:
        super().__init__(clock)
        self._link: InitiatorLink = InitiatorLink(timeouts, max_frame_length)
        self._queue: deque[_Pending] = deque()
        self._current: Optional[_Pending] = None
        self._lost: Optional[Failure] = None

    @property
    def pending(self) -> int:
        """Requests queued or in flight."""
        return len(self._queue) + (self._current is not None)

    def is_idle(self) -> bool:
        """True when nothing is queued or in flight and the line is settled."""
        return self._current is None and not self._queue and self._link.is_idle()

    def request(self, message: codec.Request) -> Deferred[codec.Response]:
        """Send ``message`` when the line is free; fire with its response."""
        if self._lost is not None:
            return fail(LinkLost(f"serial link is closed: {self._lost.getErrorMessage()}"))
        try:
            frame = codec.encode_request(message)
        except (codec.CodecError, ValueError) as exc:
            return fail(exc)
        pending = _Pending(message, frame, Deferred(self._cancel), self._clock.seconds())
        self._queue.append(pending)
        self._next()
        return pending.deferred

    def _cancel(self, deferred: Deferred[codec.Response]) -> None:
        for pending in self._queue:
            if pending.deferred is deferred:
                self._queue.remove(pending)
                return
        if self._current is not None and self._current.deferred is deferred:
            self._current = None
            self._run(self._link.abort(LinkReset("request cancelled by the caller")))

    def _next(self) -> None:
        if not self._connected or self._current is not None or not self._queue:
            return
        if not self._link.is_idle():
            return
        self._current = self._queue.popleft()
        self._current.sent_at = self._clock.seconds()
        self._run(self._link.send(self._current.frame))

    def _after_connect(self) -> None:
        self._next()

    def _after_actions(self) -> None:
        self._next()

    def _upward(self, action: Action) -> Callable[[], None]:
        pending, self._current = self._current, None
        if pending is None:
            # the caller cancelled; the machine's report has no taker
            return lambda: None
        if isinstance(action, Deliver):
            return lambda: self._delivered(pending, action.strings)
        assert isinstance(action, Failed), action
        return lambda: pending.deferred.errback(action.error)

    def _delivered(self, pending: _Pending, strings: tuple[bytes, ...]) -> None:
        try:
            response = codec.decode_response_fields(strings, pending.request)
        except codec.MessageError as exc:
            self.log.warn(
                "Undecodable response to a {kind} request: {reason}",
                kind=pending.request.kind,
                reason=str(exc),
            )
            pending.deferred.errback(ResponseUndecodable(f"undecodable response: {exc}"))
            return
        now = self._clock.seconds()
        self.last_success = now
        self.log.debug(
            "{kind} round trip in {ms:.1f} ms (queued {queued_ms:.1f} ms)",
            kind=pending.request.kind,
            ms=(now - pending.sent_at) * 1000,
            queued_ms=(pending.sent_at - pending.queued_at) * 1000,
        )
        pending.deferred.callback(response)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._connected = False
        self._lost = reason
        self._stop_timer()
        error = LinkLost(f"serial link closed: {reason.getErrorMessage()}")
        self._run(self._link.abort(error))
        self._stop_timer()
        if self._current is not None:
            current, self._current = self._current, None
            current.deferred.errback(error)
        while self._queue:
            self._queue.popleft().deferred.errback(LinkLost(str(error)))
        self._closed()


class ServerLinkProtocol(_LinkAdapter):
    """The responder over a transport, answering through ``handler``.

    Never crashes on what it receives: an intact frame that is not a request
    we understand gets an empty answer (``codec.empty_response_for_header``),
    a handler failure gets ``codec.make_response(request, b"")``; each is
    logged once.
    """

    def __init__(
        self,
        handler: IRequestHandler,
        clock: IReactorTime,
        timeouts: LinkTimeouts = LinkTimeouts(),
        max_frame_length: int = codec.DEFAULT_MAX_FRAME_LENGTH,
    ) -> None:
        super().__init__(clock)
        self._handler = handler
        self._link: ResponderLink = ResponderLink(timeouts, max_frame_length)
        self.requests_served = 0
        self._served_waiters: list[tuple[int, Deferred[None]]] = []

    def is_idle(self) -> bool:
        """True when no request is being received, computed or answered."""
        return self._link.is_idle()

    def when_served(self, count: int) -> Deferred[None]:
        """A fresh Deferred firing once ``count`` answers in total were ACKed."""
        d: Deferred[None] = Deferred()
        if self.requests_served >= count:
            d.callback(None)
        else:
            self._served_waiters.append((count, d))
        return d

    def _upward(self, action: Action) -> Callable[[], None]:
        if isinstance(action, Deliver):
            return lambda: self._dispatch(action.exchange, action.strings)
        if isinstance(action, Sent):
            return lambda: self._sent(action.exchange)
        assert isinstance(action, Failed), action
        return lambda: None  # already logged by the machine's notice

    def _sent(self, exchange: int) -> None:
        self.requests_served += 1
        self.last_success = self._clock.seconds()
        self.log.debug("Answer to exchange {exchange} acknowledged", exchange=exchange)
        ready = [d for count, d in self._served_waiters if count <= self.requests_served]
        self._served_waiters = [
            (count, d) for count, d in self._served_waiters if count > self.requests_served
        ]
        for d in ready:
            d.callback(None)

    def _dispatch(self, exchange: int, strings: tuple[bytes, ...]) -> None:
        try:
            request = codec.decode_request_fields(strings)
        except codec.MessageError as exc:
            header = strings[0] if strings else b""
            self.log.warn(
                "Undecodable request (header {header}): {reason}; answering empty",
                header=header[:16].hex(),
                reason=str(exc),
            )
            self._answer(exchange, codec.empty_response_for_header(header))
            return
        started = self._clock.seconds()
        # one chain; each step returns the same Deferred, retyped for its new result
        d = maybeDeferred(self._handler.handle, request)
        frame = d.addCallback(codec.encode_response).addErrback(self._handler_failed, request)
        done = frame.addCallback(self._answered, exchange, request, started)
        done.addErrback(
            lambda failure: self.log.failure(
                "Could not answer exchange {exchange}", failure, exchange=exchange
            )
        )

    def _handler_failed(self, failure: Failure, request: codec.Request) -> bytes:
        if failure.check(CancelledError):
            self.log.warn("Handling of a {kind} request was cancelled", kind=request.kind)
        else:
            self.log.failure(
                "Handler failed on a {kind} request; answering empty",
                failure,
                LogLevel.error,
                kind=request.kind,
            )
        return codec.encode_response(codec.make_response(request, b""))

    def _answered(
        self, frame: bytes, exchange: int, request: codec.Request, started: float
    ) -> None:
        self.log.debug(
            "{kind} request handled in {ms:.1f} ms",
            kind=request.kind,
            ms=(self._clock.seconds() - started) * 1000,
        )
        self._answer(exchange, frame)

    def _answer(self, exchange: int, frame: bytes) -> None:
        if not self._connected:
            self.log.warn("Dropped the answer to exchange {exchange}: link closed", exchange=exchange)
            return
        self._run(self._link.answer(exchange, frame))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._connected = False
        self._stop_timer()
        self._run(self._link.abort(LinkLost(f"serial link closed: {reason.getErrorMessage()}")))
        self._stop_timer()
        self._closed()


def open_serial(protocol: Protocol, config: SerialConfig, reactor: object) -> SerialPort:
    """Open ``config.device`` with its line settings and attach ``protocol``.

    :raises serial.SerialException: (or ``OSError``) when the device cannot be
        opened or configured.
    """
    return SerialPort(
        protocol,
        config.device,
        reactor,
        baudrate=config.baudrate,
        bytesize=config.bytesize,
        parity=config.parity,
        stopbits=config.stopbits,
        xonxoff=config.xonxoff,
        rtscts=config.rtscts,
    )
