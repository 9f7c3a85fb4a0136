"""The Twisted link protocols over in-memory transports and a task.Clock."""

from __future__ import annotations

from typing import Callable, Optional

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from signer.protocol import codec
from signer.protocol.link import ACK_BYTE, NAK_BYTE, START_BYTE, LinkTimeouts
from signer.protocol.transport import (
    ClientLinkProtocol,
    IRequestHandler,
    LinkLost,
    LinkTimeout,
    ResponseUndecodable,
    ServerLinkProtocol,
    TooManyResends,
)
from tests.support.responder import ScriptedHandler

NUL = codec.NulRequest(b"120420182026.49")
SIGN = codec.SignX509Request(csr=b"csr\x02\x10\x11" * 1000, subject=b"/CN=example.org", profile=5)


class Line:
    """A client and a server protocol joined by two StringTransports.

    ``pump()`` moves bytes both ways until the line is quiet; ``c2s``/``s2c``
    may rewrite the bytes in transit (to damage or drop them).
    """

    def __init__(
        self,
        client: ClientLinkProtocol,
        server: ServerLinkProtocol,
        c2s: Optional[Callable[[bytes], bytes]] = None,
        s2c: Optional[Callable[[bytes], bytes]] = None,
    ) -> None:
        self.client, self.server = client, server
        self.client_transport, self.server_transport = StringTransport(), StringTransport()
        self.c2s = c2s or (lambda data: data)
        self.s2c = s2c or (lambda data: data)
        server.makeConnection(self.server_transport)
        client.makeConnection(self.client_transport)

    def pump(self) -> None:
        for _ in range(1000):
            c2s = self.client_transport.value()
            self.client_transport.clear()
            s2c = self.server_transport.value()
            self.server_transport.clear()
            if not c2s and not s2c:
                return
            if c2s:
                self.server.dataReceived(self.c2s(c2s))
            if s2c:
                self.client.dataReceived(self.s2c(s2c))
        raise AssertionError("line never went quiet")


def results(d: Deferred) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def logged() -> EventLoggingObserver:
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    yield observer
    globalLogPublisher.removeObserver(observer)


def test_scripted_handler_provides_the_interface() -> None:
    """The test handler is a real IRequestHandler."""
    assert verifyObject(IRequestHandler, ScriptedHandler())


def test_round_trip_over_memory_line(clock: Clock) -> None:
    """request() fires with the typed response; last_success is the clock's
    time; no timer is left running on either side."""
    handler = ScriptedHandler(b"-----BEGIN CERTIFICATE-----")
    client, server = ClientLinkProtocol(clock), ServerLinkProtocol(handler, clock)
    line = Line(client, server)
    clock.advance(42)
    got = results(client.request(SIGN))
    line.pump()
    assert got == [codec.SignX509Response(b"-----BEGIN CERTIFICATE-----")]
    assert handler.requests == [SIGN]
    assert client.last_success == 42 and server.last_success == 42
    assert client.is_idle() and server.is_idle()
    assert clock.getDelayedCalls() == []
    assert client.stats.frames_out == 1 and server.stats.frames_in == 1
    assert server.requests_served == 1


def test_requests_are_queued_one_conversation_at_a_time(clock: Clock) -> None:
    """Three requests issued at once: one START on the wire, then the next
    only after the previous response; responses fire in FIFO order."""
    handler = ScriptedHandler(b"x")
    client, server = ClientLinkProtocol(clock), ServerLinkProtocol(handler, clock)
    line = Line(client, server)
    requests = [NUL, SIGN, codec.RevokeRequest(crl_sha1=codec.EMPTY_SHA1.encode())]
    got = [results(client.request(r)) for r in requests]
    assert line.client_transport.value() == START_BYTE
    assert client.pending == 3
    line.pump()
    assert [g[0] for g in got] == [codec.make_response(r, b"x") for r in requests]
    assert handler.requests == requests
    assert client.is_idle()


def test_requests_before_connection_wait_for_it(clock: Clock) -> None:
    """A request made before the port is open goes out once it is."""
    client = ClientLinkProtocol(clock)
    got = results(client.request(NUL))
    server = ServerLinkProtocol(ScriptedHandler(), clock)
    Line(client, server).pump()
    assert got == [codec.NulResponse()]


def test_megabyte_response(clock: Clock) -> None:
    """A 1 MiB response crosses the link intact."""
    payload = bytes(range(256)) * 4096
    client = ClientLinkProtocol(clock)
    line = Line(client, ServerLinkProtocol(ScriptedHandler(payload), clock))
    got = results(client.request(SIGN))
    line.pump()
    assert got == [codec.SignX509Response(payload)]
    assert client.stats.bytes_in > len(payload)


def test_client_timeout_errbacks_and_next_request_proceeds(clock: Clock, logged) -> None:
    """No answer to START: after start_ack seconds the Deferred errbacks with
    LinkTimeout (logged as a warning), and the queued request starts."""
    client = ClientLinkProtocol(clock, LinkTimeouts(start_ack=3))
    transport = StringTransport()
    client.makeConnection(transport)
    first, second = results(client.request(NUL)), results(client.request(NUL))
    assert transport.value() == START_BYTE
    transport.clear()
    clock.advance(2.9)
    assert first == []
    clock.advance(0.2)
    assert isinstance(first[0], Failure) and first[0].check(LinkTimeout)
    assert "no ACK for our START within 3 s" in first[0].getErrorMessage()
    assert second == [] and transport.value() == START_BYTE
    assert client.stats.timeouts == 1
    assert any(
        e["log_level"] == LogLevel.warn and "exchange failed" in e["log_format"] for e in logged
    )


def test_client_response_start_timeout(clock: Clock) -> None:
    """The request was ACKed but the responder never starts its answer:
    LinkTimeout after response_start seconds."""
    client = ClientLinkProtocol(clock, LinkTimeouts(response_start=7))
    transport = StringTransport()
    client.makeConnection(transport)
    got = results(client.request(NUL))
    client.dataReceived(ACK_BYTE)
    client.dataReceived(ACK_BYTE)
    clock.advance(6.9)
    assert got == []
    clock.advance(0.1)
    assert got[0].check(LinkTimeout)
    assert clock.getDelayedCalls() == []


def test_undecodable_response(clock: Clock) -> None:
    """An intact response frame with a wrong version errbacks ResponseUndecodable."""
    client = ClientLinkProtocol(clock)
    client.makeConnection(StringTransport())
    got = results(client.request(NUL))
    bad = codec.encode_frame((bytes([9, 0, 0, 0]), b"", b"", b""))
    client.dataReceived(ACK_BYTE + ACK_BYTE + START_BYTE + bad)
    assert got[0].check(ResponseUndecodable)
    assert client.last_success is None
    assert client.is_idle()


def test_connection_lost_fails_everything(clock: Clock) -> None:
    """Losing the port errbacks the request in flight and the queued ones
    with LinkLost; later requests fail at once; no timer is left."""
    client = ClientLinkProtocol(clock)
    client.makeConnection(StringTransport())
    a, b = results(client.request(NUL)), results(client.request(SIGN))
    client.connectionLost(Failure(Exception("unplugged")))
    assert a[0].check(LinkLost) and b[0].check(LinkLost)
    assert "unplugged" in a[0].getErrorMessage()
    assert results(client.request(NUL))[0].check(LinkLost)
    assert clock.getDelayedCalls() == []


def test_cancel_queued_and_in_flight(clock: Clock) -> None:
    """Cancelling a queued request removes it; cancelling the one in flight
    resets the link and lets the next request go."""
    client = ClientLinkProtocol(clock)
    transport = StringTransport()
    client.makeConnection(transport)
    d1, d2, d3 = client.request(NUL), client.request(SIGN), client.request(NUL)
    r1, r2, r3 = results(d1), results(d2), results(d3)
    d2.cancel()
    assert r2[0].check(CancelledError)
    transport.clear()
    d1.cancel()
    assert r1[0].check(CancelledError)
    assert transport.value() == START_BYTE  # d3 started
    assert client.pending == 1
    client.dataReceived(ACK_BYTE)
    assert transport.value() == START_BYTE + codec.encode_request(NUL)
    assert r3 == []  # still in flight, not failed by the cancellations


def test_oversized_request_fails_at_once(clock: Clock) -> None:
    """A request too big for pack3 is refused without touching the line."""
    client = ClientLinkProtocol(clock)
    transport = StringTransport()
    client.makeConnection(transport)
    got = results(client.request(codec.SignX509Request(csr=b"x" * (codec.PACK3_MAX + 1))))
    assert got[0].check(codec.FieldTooLong)
    assert transport.value() == b""


def test_nak_and_resend_through_adapters(clock: Clock) -> None:
    """The first request frame is damaged in transit: the server NAKs once
    the line is quiet, the client resends, the exchange succeeds."""
    damaged = []

    def corrupt_first_frame(data: bytes) -> bytes:
        if len(data) > 1 and not damaged:
            damaged.append(data)
            return data[:-3] + b"XYZ"
        return data

    client = ClientLinkProtocol(clock)
    server = ServerLinkProtocol(ScriptedHandler(b"cert"), clock)
    line = Line(client, server, c2s=corrupt_first_frame)
    got = results(client.request(SIGN))
    line.pump()
    assert got == []
    assert server.stats.naks_sent == 0
    clock.advance(LinkTimeouts().resync_quiet)
    assert line.server_transport.value() == NAK_BYTE
    line.pump()
    assert got == [codec.SignX509Response(b"cert")]
    assert server.stats.naks_sent == 1
    assert client.stats.naks_received == 1 and client.stats.resends == 1


def test_client_gives_up_after_resend_bound(clock: Clock) -> None:
    """A line that damages every request frame: after max_resends the
    request fails with TooManyResends."""
    client = ClientLinkProtocol(clock, LinkTimeouts(max_resends=2))
    server = ServerLinkProtocol(ScriptedHandler(), clock, LinkTimeouts(max_resends=10))
    line = Line(client, server, c2s=lambda d: d if len(d) == 1 else d[:-1] + b"!")
    got = results(client.request(NUL))
    for _ in range(4):
        line.pump()
        clock.advance(LinkTimeouts().resync_quiet)
    line.pump()
    assert got[0].check(TooManyResends)
    assert client.stats.resends == 2


def test_server_answers_undecodable_request_with_empty_response(
    clock: Clock, logged
) -> None:
    """An intact frame with an unknown action gets a well-formed empty answer
    echoing the action byte, and one warning; the handler is not called."""
    handler = ScriptedHandler(b"never")
    server = ServerLinkProtocol(handler, clock)
    transport = StringTransport()
    server.makeConnection(transport)
    header = bytes([1, 7, 1, 0, 0, 0, 0, 0, 0])
    server.dataReceived(START_BYTE + codec.encode_frame((header, b"a", b"", b"")))
    assert transport.value() == ACK_BYTE + ACK_BYTE + START_BYTE
    transport.clear()
    server.dataReceived(ACK_BYTE)
    assert transport.value() == codec.empty_response_for_header(header)
    assert handler.requests == []
    warnings = [e for e in logged if "Undecodable request" in e.get("log_format", "")]
    assert len(warnings) == 1


@implementer(IRequestHandler)
class BrokenHandler:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def handle(self, request: codec.Request) -> Deferred[codec.Response]:
        if self.mode == "raise":
            raise RuntimeError("handler bug")
        if self.mode == "errback":
            return fail(ValueError("refused"))
        return succeed(codec.make_response(request, b"x" * (codec.PACK3_MAX + 1)))


@pytest.mark.parametrize("mode", ["raise", "errback", "unencodable"])
def test_server_answers_handler_failure_with_empty_response(
    clock: Clock, logged, mode: str
) -> None:
    """A handler that raises, errbacks or returns an unencodable answer: the
    client receives the empty typed response and the failure is logged."""
    client = ClientLinkProtocol(clock)
    server = ServerLinkProtocol(BrokenHandler(mode), clock)
    line = Line(client, server)
    got = results(client.request(SIGN))
    line.pump()
    assert got == [codec.SignX509Response(b"")]
    assert any(
        "Handler failed" in e.get("log_format", "") and e["log_level"] == LogLevel.error
        for e in logged
    )
    assert server.is_idle()


@implementer(IRequestHandler)
class SlowHandler:
    def __init__(self) -> None:
        self.calls: list[tuple[codec.Request, Deferred[codec.Response]]] = []

    def handle(self, request: codec.Request) -> Deferred[codec.Response]:
        d: Deferred[codec.Response] = Deferred()
        self.calls.append((request, d))
        return d


def test_server_recovers_from_client_restart_while_computing(clock: Clock) -> None:
    """The client gives up while the server computes; its next START resets
    the server at once; the late answer is dropped, the new one delivered."""
    handler = SlowHandler()
    client = ClientLinkProtocol(clock, LinkTimeouts(response_start=10))
    server = ServerLinkProtocol(handler, clock)
    line = Line(client, server)
    first = results(client.request(SIGN))
    line.pump()
    clock.advance(10)
    assert first[0].check(LinkTimeout)
    second = results(client.request(NUL))
    line.pump()
    assert len(handler.calls) == 2
    handler.calls[0][1].callback(codec.SignX509Response(b"late"))
    line.pump()
    assert second == []
    handler.calls[1][1].callback(codec.NulResponse())
    line.pump()
    assert second == [codec.NulResponse()]
    assert server.stats.resets == 1


def test_server_close_while_computing_drops_answer(clock: Clock) -> None:
    """The port closes while the handler works: the answer is dropped
    quietly and nothing is written."""
    handler = SlowHandler()
    server = ServerLinkProtocol(handler, clock)
    transport = StringTransport()
    server.makeConnection(transport)
    server.dataReceived(START_BYTE + codec.encode_request(NUL))
    transport.clear()
    server.connectionLost(Failure(Exception("closed")))
    handler.calls[0][1].callback(codec.NulResponse())
    assert transport.value() == b""
    assert clock.getDelayedCalls() == []


def test_when_served_fires_after_acknowledged_answers(clock: Clock) -> None:
    """when_served(n) fires once n answers were ACKed by the client."""
    client = ClientLinkProtocol(clock)
    server = ServerLinkProtocol(ScriptedHandler(), clock)
    line = Line(client, server)
    served = results(server.when_served(2))
    client.request(NUL)
    line.pump()
    assert served == []
    client.request(NUL)
    line.pump()
    assert served == [None]
    assert results(server.when_served(1)) == [None]


# -- the frame deadline through the adapters ---------------------------------------


def test_server_wedge_trickling_starts_fail_at_the_frame_deadline(clock: Clock, logged) -> None:
    """The server (frame_timeout 30 s) receives a request whose length prefix
    claims more than arrives (its last byte lost, so it does not end with the
    magic, which would get a NAK), then the client's START retries every 20 s: the
    frame deadline (a second delayed call) ends the reception with a logged
    LinkTimeout; the next START is ACKed at once and answered; no delayed
    call is left."""
    handler = ScriptedHandler()
    server = ServerLinkProtocol(handler, clock, LinkTimeouts(frame_byte=30))
    transport = StringTransport()
    server.makeConnection(transport)
    frame = codec.encode_request(NUL)
    server.dataReceived(START_BYTE + (len(frame) + 500).to_bytes(3, "big") + frame[3:-1])
    assert len(clock.getDelayedCalls()) == 2  # silence timer and frame deadline
    clock.pump([1] * 20)
    server.dataReceived(START_BYTE)  # taken as one more frame byte
    assert server.link_state == "receiving"
    clock.pump([1] * 20)
    assert server.is_idle()
    assert transport.value() == ACK_BYTE  # the retried START got nothing
    reasons = [e.get("reason", "") for e in logged if "exchange failed" in e.get("log_format", "")]
    assert len(reasons) == 1 and "frame did not complete within 31 s" in reasons[0]
    assert server.stats.timeouts == 1
    transport.clear()
    server.dataReceived(START_BYTE)
    assert transport.value() == ACK_BYTE
    server.dataReceived(frame)
    assert handler.requests == [NUL]
    assert transport.value() == ACK_BYTE + ACK_BYTE + START_BYTE
    server.dataReceived(ACK_BYTE)
    server.dataReceived(ACK_BYTE)
    assert server.requests_served == 1
    assert clock.getDelayedCalls() == []


def test_client_request_fails_at_the_frame_deadline(clock: Clock) -> None:
    """The client receiving a response whose length prefix claims more than
    arrives (its last byte lost, so it does not end with the magic, which
    would get a NAK), with lone bytes trickling in every 4 s: the request errbacks with
    the deadline's LinkTimeout after about frame_byte seconds (not never), the
    next request succeeds, and no delayed call is left."""
    client = ClientLinkProtocol(clock)
    transport = StringTransport()
    client.makeConnection(transport)
    got = results(client.request(NUL))
    answer = codec.encode_response(codec.NulResponse())
    client.dataReceived(ACK_BYTE + ACK_BYTE + START_BYTE + b"\x00\x10\x00" + answer[3:-1])
    for _ in range(5):
        clock.pump([0.5] * 8)
        client.dataReceived(START_BYTE)
        if got:
            break
    assert got and got[0].check(LinkTimeout)
    assert "frame did not complete within 6 s" in got[0].getErrorMessage()
    assert f"of {0x1000 + 12} bytes" in got[0].getErrorMessage()
    assert client.is_idle()
    second = results(client.request(NUL))
    client.dataReceived(ACK_BYTE + ACK_BYTE + START_BYTE + answer)
    assert second == [codec.NulResponse()]
    assert clock.getDelayedCalls() == []


def test_lost_byte_with_fast_client_retries_recovers(clock: Clock, logged) -> None:
    """The linksim wedge end to end: the client retries its START every 3 s,
    the server waits 30 s of silence per frame byte, and one byte of the first
    request frame is lost on the line. The frame still ends with its magic, so
    (like the legacy receivers) the server NAKs it once the line is quiet,
    the client resends within its 3 s frame_ack wait, and the first request
    is answered in well under a second, without any failure."""
    dropped: list[bytes] = []

    def drop_a_byte(data: bytes) -> bytes:
        if len(data) > 1 and not dropped:
            dropped.append(data)
            return data[:20] + data[21:]
        return data

    client = ClientLinkProtocol(clock, LinkTimeouts(start_ack=3, frame_ack=3, response_start=10))
    server = ServerLinkProtocol(ScriptedHandler(), clock, LinkTimeouts(frame_byte=30))
    line = Line(client, server, c2s=drop_a_byte)
    outcomes: list = []
    answered_at = None
    for tick in range(600):  # 60 s in steps of 0.1 s
        if client.pending == 0 and answered_at is None:
            outcomes.append(results(client.request(NUL)))
        line.pump()
        if outcomes[-1] and outcomes[-1][0] == codec.NulResponse():
            answered_at = clock.seconds()
            break
        clock.advance(0.1)
    assert dropped
    assert answered_at is not None, [o[0] for o in outcomes if o]
    assert answered_at < 1
    assert len(outcomes) == 1  # the first request itself was answered
    assert server.stats.naks_sent == 1 and client.stats.resends == 1
    reasons = [e.get("reason", "") for e in logged if "exchange failed" in e.get("log_format", "")]
    assert reasons == []
    line.pump()
    clock.advance(60)
    assert clock.getDelayedCalls() == []
