"""The client services: rounds never overlap, clean stop, and the real link over a pty pair."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from zope.interface import implementer

from signer.client.config import PollingConfig
from signer.client.service import PollingService, make_client_service
from signer.protocol import codec
from signer.protocol.serialconfig import SerialConfig
from signer.protocol.transport import IRequestHandler, ServerLinkProtocol, open_serial
from tests.client.conftest import World, with_config
from tests.support.pty import pty_pair, socat_available
from tests.support.testca import make_csr


class HeldRequester:
    """Records requests and answers only when the test says so."""

    def __init__(self) -> None:
        self.requests: list[codec.Request] = []
        self.pending: list[Deferred[codec.Response]] = []
        self.cancelled = 0

    def request(self, message: codec.Request) -> Deferred[codec.Response]:
        self.requests.append(message)

        def cancel(d: Deferred[Any]) -> None:
            self.cancelled += 1

        d: Deferred[codec.Response] = Deferred(cancel)
        self.pending.append(d)
        return d

    def answer(self) -> None:
        d = self.pending.pop(0)
        d.callback(codec.make_response(self.requests[len(self.requests) - len(self.pending) - 1], b""))


@inlineCallbacks
def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> Any:
    """Let the real reactor run (database threads) until ``condition`` holds."""
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError("condition not reached in time")
        yield deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


@pytest_twisted.inlineCallbacks
def test_rounds_never_overlap(world: World) -> None:
    """While a round waits for its answer, no clock advance starts another; the next follows the answer."""
    held = HeldRequester()
    jobs = world.jobs(requester=held)
    jobs.rounds = 1  # a keep-alive-only round
    service = PollingService(jobs, 2.7, world.clock)
    service.startService()
    yield wait_until(lambda: len(held.requests) == 1)
    for _ in range(20):
        world.clock.advance(2.7)
    yield deferLater(reactor, 0.05, lambda: None)
    assert len(held.requests) == 1 and service.rounds_started == 1
    held.answer()
    yield wait_until(lambda: not service.round_in_flight())
    world.clock.advance(2.7)
    yield wait_until(lambda: len(held.requests) == 2)
    assert service.rounds_started == 2
    assert isinstance(held.requests[1], codec.NulRequest)
    held.answer()
    yield wait_until(lambda: not service.round_in_flight())
    yield service.stopService()


@pytest_twisted.inlineCallbacks
def test_stop_lets_the_conversation_in_flight_complete(world: World) -> None:
    """stopService waits for the answer in flight, then no new conversation starts."""
    held = HeldRequester()
    world.db.add_user(10, "a@example.org", "Ann")
    world.db.add_cert("emailcerts", 1, 10, "/CN=Ann")
    world.db.add_cert("emailcerts", 2, 10, "/CN=Ben")
    world.write_csr("client", 1, make_csr("Ann", index=4))
    world.write_csr("client", 2, make_csr("Ben", index=5))
    jobs = world.jobs(requester=held)
    service = PollingService(jobs, 2.7, world.clock)
    service.startService()
    yield wait_until(lambda: len(held.requests) == 1)
    stopped = service.stopService()
    assert not stopped.called
    held.answer()  # empty answer: a warning for row 1
    yield stopped
    assert len(held.requests) == 1  # row 2 was not started
    assert world.db.row("emailcerts", 1)["warning"] == 1
    assert not (world.tmp / "state" / "in-flight").exists()


@pytest_twisted.inlineCallbacks
def test_stop_abandons_a_hanging_conversation_after_the_grace(world: World) -> None:
    """A conversation that does not end within the grace is cancelled; the stop completes."""
    held = HeldRequester()
    jobs = world.jobs(requester=held)
    jobs.rounds = 1
    service = PollingService(jobs, 2.7, world.clock, stop_grace=5.0)
    service.startService()
    yield wait_until(lambda: len(held.requests) == 1)
    stopped = service.stopService()
    world.clock.advance(4.9)
    assert not stopped.called
    world.clock.advance(0.2)
    yield stopped
    assert held.cancelled == 1
    assert jobs.last_round is not None and jobs.last_round.aborted == "abandoned while stopping"


@pytest_twisted.inlineCallbacks
def test_abandoned_signing_counts_a_warning_at_the_next_start(world: World) -> None:
    """A signing request abandoned on stop keeps its journal entry: the next start counts a warning."""
    held = HeldRequester()
    world.db.add_cert("emailcerts", 1, 10, "/CN=Ann")
    world.write_csr("client", 1, make_csr("Ann", index=4))
    service = PollingService(world.jobs(requester=held), 2.7, world.clock, stop_grace=1.0)
    service.startService()
    yield wait_until(lambda: len(held.requests) == 1)
    stopped = service.stopService()
    world.clock.advance(1.5)
    yield stopped
    assert (world.tmp / "state" / "in-flight").read_text() == "emailcerts 1\n"
    report = yield world.jobs().run_round()
    assert world.db.row("emailcerts", 1)["warning"] == 1
    assert report.signed == [("emailcerts", 1)]


@implementer(IRequestHandler)
class SignerHandler:
    """Serves requests with the fake signer (the server side of the pty)."""

    def __init__(self, signer: Any) -> None:
        self.signer = signer

    def handle(self, request: codec.Request) -> Deferred[codec.Response]:
        return self.signer.request(request)


@pytest.mark.skipif(not socat_available(), reason="socat is not installed")
@pytest_twisted.inlineCallbacks
def test_service_over_a_real_pty_pair(world: World, backend: str) -> None:
    """The whole client service with the real ClientLinkProtocol signs and revokes over a pty."""
    with_config(world, polling=PollingConfig(interval=0.1))
    world.db.add_user(10, "a@example.org", "Ann")
    world.db.add_domain(5, 10)
    world.db.add_cert("domaincerts", 1, 5, "/CN=www.example.org/subjectAltName=DNS:www.example.org", rootcert=2)
    world.write_csr("server", 1, make_csr("www.example.org", index=4))
    with pty_pair() as pair:
        server = ServerLinkProtocol(SignerHandler(world.signer), reactor)
        server_port = open_serial(server, SerialConfig(pair.b), reactor)
        config = dataclasses.replace(world.config, database=world.db.config)
        service = make_client_service(config, SerialConfig(pair.a), reactor)
        service.startService()
        try:
            yield wait_until(lambda: world.db.row("domaincerts", 1)["crt_name"] != "", timeout=20)
            world.db.execute("UPDATE domaincerts SET revoked = '1970-01-01 10:00:01' WHERE id = 1")
            yield wait_until(lambda: world.db.row("domaincerts", 1)["revoked"] != "1970-01-01 10:00:01", timeout=20)
            yield wait_until(lambda: any(isinstance(r, codec.NulRequest) for r in world.signer.requests), timeout=20)
        finally:
            yield service.stopService()
            server_port.loseConnection()
    assert world.crt_path("server", 1).exists()
    assert isinstance(world.signer.requests[0], codec.SignX509Request)
    revocations = [r for r in world.signer.of_kind(codec.RevokeRequest) if r.certificate]
    assert [r.root for r in revocations] == [1]  # rootcert 2
    assert revocations[0].certificate == world.crt_path("server", 1).read_bytes()
    parts = service.parts  # type: ignore[attr-defined]
    assert parts.protocol.last_success is not None


@implementer(IRequestHandler)
class HeldHandler:
    """The server side of the pty: answers with the fake signer only when told to."""

    def __init__(self, signer: Any) -> None:
        self.signer = signer
        self.held: list[tuple[codec.Request, Deferred[codec.Response]]] = []

    def handle(self, request: codec.Request) -> Deferred[codec.Response]:
        d: Deferred[codec.Response] = Deferred()
        self.held.append((request, d))
        return d

    def release(self) -> None:
        request, d = self.held.pop(0)
        self.signer.request(request).chainDeferred(d)


@pytest.mark.skipif(not socat_available(), reason="socat is not installed")
@pytest_twisted.inlineCallbacks
def test_stop_keeps_line_and_database_until_the_round_is_done(world: World) -> None:
    """Stopping the whole client (SIGTERM) while the signer is still computing: the
    serial line and the WebDB stay open until the polling service is done, so the
    late answer is received, ACKed and stored; then the line closes."""
    world.db.add_user(10, "a@example.org", "Ann")
    world.db.add_cert("emailcerts", 1, 10, "/CN=Ann")
    world.write_csr("client", 1, make_csr("Ann", index=4))
    handler = HeldHandler(world.signer)
    with pty_pair() as pair:
        server = ServerLinkProtocol(handler, reactor)
        server_port = open_serial(server, SerialConfig(pair.b), reactor)
        service = make_client_service(world.config, SerialConfig(pair.a), reactor)
        parts = service.parts  # type: ignore[attr-defined]
        service.startService()
        try:
            yield wait_until(lambda: len(handler.held) == 1, timeout=20)
            assert isinstance(handler.held[0][0], codec.SignX509Request)
            stopped = service.stopService()
            yield deferLater(reactor, 0.2, lambda: None)
            assert not stopped.called and parts.protocol.transport.connected
            handler.release()
            yield stopped
        finally:
            server_port.loseConnection()
    assert world.db.row("emailcerts", 1)["crt_name"] != ""
    assert world.crt_path("client", 1).exists()
    assert server.requests_served == 1  # the client ACKed the answer before the line closed
    assert not parts.protocol.transport.connected
