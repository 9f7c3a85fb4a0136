"""SerialLineService (both roles' serial line) on real pseudo-terminals (socat).

The port is a real ``SerialPort`` on the real reactor; only the close timeout
runs on a ``task.Clock`` so the "bytes never leave" case needs no waiting.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from signer.protocol.serialconfig import SerialConfig
from signer.protocol.service import OPENED_SERVER, SerialLineService
from signer.protocol.transport import ClientLinkProtocol, ServerLinkProtocol, open_serial
from tests.support.pty import PtyPair, pty_pair, socat_available
from tests.support.responder import ScriptedHandler

pytestmark = pytest.mark.skipif(not socat_available(), reason="socat is not installed")


class Collector(Protocol):
    """Keeps every byte received."""

    def __init__(self) -> None:
        self.data = bytearray()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.data += data


@pytest.fixture
def pair() -> Iterator[PtyPair]:
    with pty_pair() as created:
        yield created


@pytest.fixture
def logged() -> Iterator[EventLoggingObserver]:
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    yield observer
    globalLogPublisher.removeObserver(observer)


def messages(logged: EventLoggingObserver, level: Any = None) -> list[str]:
    return [
        formatEvent(event)
        for event in logged
        if event.get("log_namespace", "").startswith("signer.protocol.service")
        and (level is None or event["log_level"] == level)
    ]


@inlineCallbacks
def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        yield deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.inlineCallbacks
def test_opens_logs_and_closes_after_the_last_byte(pair: PtyPair, logged: EventLoggingObserver) -> Any:
    """Start opens the device and logs its line settings; stop returns a Deferred
    that fires only once the port is closed, after every byte written left."""
    protocol = ClientLinkProtocol(reactor)
    service = SerialLineService(protocol, SerialConfig(pair.a, baudrate=57600), reactor)
    peer = Collector()
    peer_port = open_serial(peer, SerialConfig(pair.b, baudrate=57600), reactor)
    try:
        service.startService()
        assert service.running and service.port is not None
        assert messages(logged, LogLevel.info) == [f"Serial line open: {pair.a} 57600 8N1, no flow control"]
        tail = bytes(range(256)) * 80  # e.g. the end of an answer and its ACK, still buffered
        protocol.transport.write(tail)
        closed = service.stopService()
        assert closed is not None and not closed.called  # the bytes are still on their way
        yield closed
        assert not service.running and service.port is None
        assert protocol.transport.disconnected
        yield wait_until(lambda: len(peer.data) >= len(tail))
        assert bytes(peer.data) == tail
        assert messages(logged, LogLevel.info)[-1] == f"Serial line closed: {pair.a}"
    finally:
        peer_port.loseConnection()


@pytest_twisted.inlineCallbacks
def test_server_startup_line_names_device_and_speed(pair: PtyPair, logged: EventLoggingObserver) -> Any:
    """The server's wording ("serving on DEVICE at SPEED baud 8N1") with the fields as named values."""
    protocol = ServerLinkProtocol(ScriptedHandler(), reactor)
    service = SerialLineService(protocol, SerialConfig(pair.b, baudrate=115200), reactor, opened=OPENED_SERVER)
    service.startService()
    yield service.stopService()
    opened = [e for e in logged if e.get("log_format") == OPENED_SERVER]
    assert formatEvent(opened[0]) == f"serving on {pair.b} at 115200 baud 8N1"
    assert opened[0]["device"] == pair.b and opened[0]["baud"] == 115200


def test_a_line_that_never_drains_is_dropped_after_the_timeout(pair: PtyPair, logged: EventLoggingObserver) -> None:
    """Nobody reads the other end, so the bytes cannot all leave: stop waits
    ``close_timeout`` seconds, then closes the device without them (warning logged)."""
    clock = Clock()
    protocol = ClientLinkProtocol(reactor)
    service = SerialLineService(protocol, SerialConfig(pair.a), reactor, close_timeout=5.0, clock=clock)
    service.startService()
    protocol.transport.write(b"x" * (4 * 1024 * 1024))  # far more than the pty and socat buffer
    closed = service.stopService()
    assert closed is not None and not closed.called
    clock.advance(4.9)
    assert not closed.called
    clock.advance(0.1)
    assert closed.called
    assert protocol.transport.disconnected
    assert clock.getDelayedCalls() == []
    assert any("closing without them" in m for m in messages(logged, LogLevel.warn))


def test_a_missing_device_stops_startup(tmp_path: Any) -> None:
    """An unopenable device raises from startService; the service is not running and stops quietly."""
    service = SerialLineService(ClientLinkProtocol(reactor), SerialConfig(str(tmp_path / "ttyNone")), reactor)
    with pytest.raises(OSError, match="ttyNone"):  # serial.SerialException is an OSError
        service.startService()
    assert not service.running and service.port is None
    assert service.stopService() is None
