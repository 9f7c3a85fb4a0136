"""The client's services: serial link, polling loop, WebDB pool, health page.

:func:`make_client_service` builds a :class:`~twisted.application.service.MultiService`
from a :class:`~signer.client.config.ClientConfig`:

- :class:`SerialLinkService` opens the serial port with a
  :class:`~signer.protocol.transport.ClientLinkProtocol` and closes it on stop;
- :class:`PollingService` runs :meth:`Jobs.run_round` from a
  :class:`~twisted.internet.task.LoopingCall` on the injected clock. The
  LoopingCall waits for the round's Deferred, so a round never overlaps the
  previous one. On stop (SIGTERM under twistd) no new conversation starts; the
  one in flight completes, or is abandoned after ``stop_grace`` seconds (its
  Deferred is cancelled, which resets the link; the in-flight journal makes
  the next start count it as a failed attempt);
- :class:`WebDBService` closes the connection pool last;
- :class:`HealthService` (optional) serves ``GET /`` as JSON: link state, last
  successful round trip, rounds, pending rows per table, CRL age per root.

With a ``[wakeup]`` source configured, the polling service drives a
:class:`~signer.client.wakeup_trigger.WakeupTrigger` (same interface as the
jobs) every ``fallback_interval`` seconds and a
:class:`~signer.client.wakeup_trigger.WakeupService` runs the source.

Services stop in reverse order of start: health, wake-up, polling (waits for
the round and the mails in flight), serial line, database.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, globalLogPublisher, jsonFileLogObserver

from signer.client.config import ClientConfig
from signer.client.crlinstall import CrlInstaller
from signer.client.jobs import Jobs
from signer.client.mailer import MailRenderer, SMTPSender
from signer.client.webdb import WebDB
from signer.protocol.link import LinkTimeouts
from signer.protocol.serialconfig import SerialConfig
from signer.protocol.transport import ClientLinkProtocol, open_serial

#: Seconds a stopping client waits for the conversation in flight.
DEFAULT_STOP_GRACE = 30.0


class SerialLinkService(Service):
    """Opens the serial line on start, closes it on stop."""

    log = Logger()

    def __init__(self, protocol: ClientLinkProtocol, serial: SerialConfig, reactor: Any) -> None:
        self.protocol = protocol
        self.serial = serial
        self.reactor = reactor
        self.port: Any = None

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        super().startService()
        self.port = open_serial(self.protocol, self.serial, self.reactor)
        self.log.info("Serial line open: {line}", line=self.serial.describe())

    def stopService(self) -> Deferred[None] | None:  # noqa: N802
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            port.loseConnection()
            self.log.info("Serial line closed")
        return None


class PollingService(Service):
    """Runs polling rounds every ``interval`` seconds, never overlapping."""

    log = Logger()

    def __init__(
        self, jobs: Jobs, interval: float, clock: IReactorTime, stop_grace: float = DEFAULT_STOP_GRACE
    ) -> None:
        self.jobs = jobs
        self.interval = interval
        self.clock = clock
        self.stop_grace = stop_grace
        self._loop: LoopingCall | None = None
        self._current: Deferred[Any] | None = None
        self.rounds_started = 0

    def _round(self) -> Deferred[Any]:
        self.rounds_started += 1
        d = self.jobs.run_round()
        self._current = d

        def done(result: Any) -> Any:
            self._current = None
            return result

        return d.addBoth(done)

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.jobs.stopping = False
        loop = LoopingCall(self._round)
        loop.clock = self.clock
        self._loop = loop
        finished = loop.start(self.interval, now=True)
        finished.addErrback(lambda failure: self.log.failure("Polling loop failed", failure))

    def round_in_flight(self) -> bool:
        return self._current is not None

    @inlineCallbacks
    def stopService(self) -> Any:  # noqa: N802
        super().stopService()
        self.jobs.stop()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        current = self._current
        if current is not None:
            self.log.info("Stopping: waiting up to {grace} s for the conversation in flight", grace=self.stop_grace)
            waiter: Deferred[Any] = Deferred()
            current.addBoth(lambda result: (waiter.called or waiter.callback(None), result)[1])
            timer = self.clock.callLater(self.stop_grace, lambda: waiter.called or waiter.callback("late"))
            outcome = yield waiter
            if timer.active():
                timer.cancel()
            if outcome == "late" and self._current is not None:
                self.log.warn("Stopping: abandoning the conversation in flight")
                self._current.cancel()
        yield self.jobs.when_mails_sent()


class WebDBService(Service):
    """Owns the WebDB pool; says at start whether the database is reachable."""

    log = Logger()

    def __init__(self, webdb: WebDB, threshold: int) -> None:
        self.webdb = webdb
        self.threshold = threshold

    def startService(self) -> None:  # noqa: N802
        super().startService()
        d = self.webdb.pending_counts(self.threshold)
        d.addCallbacks(
            lambda counts: self.log.info("WebDB reached ({dialect}); pending: {counts}",
                                         dialect=self.webdb.dialect, counts=counts),
            lambda failure: self.log.error("WebDB not reachable yet: {error}",
                                           error=failure.getErrorMessage()),
        )

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        self.webdb.close()


class HealthService(Service):
    """A small JSON page on a Twisted endpoint (``tcp:8078:interface=127.0.0.1``)."""

    log = Logger()

    def __init__(self, address: str, reactor: Any, client: "ClientParts") -> None:
        self.address = address
        self.reactor = reactor
        self.client = client
        self._listening: Any = None

    def startService(self) -> None:  # noqa: N802
        from twisted.internet.endpoints import serverFromString
        from twisted.web.resource import Resource
        from twisted.web.server import NOT_DONE_YET, Site

        client = self.client

        class Page(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> Any:  # noqa: N802
                def write(body: dict[str, Any]) -> None:
                    request.setHeader(b"content-type", b"application/json")
                    request.write(json.dumps(body, indent=1, default=str).encode())
                    request.finish()

                client.health().addCallback(write)
                return NOT_DONE_YET

        super().startService()
        endpoint = serverFromString(self.reactor, self.address)
        d = endpoint.listen(Site(Page()))

        def listening(port: Any) -> None:
            self._listening = port
            self.log.info("Health page on {address}", address=self.address)

        d.addCallbacks(listening, lambda f: self.log.error("Health page not started: {e}", e=f.getErrorMessage()))

    def stopService(self) -> Deferred[Any] | None:  # noqa: N802
        super().stopService()
        port, self._listening = self._listening, None
        return port.stopListening() if port is not None else None


class ClientParts:
    """The client's objects, wired (for the service and for tests)."""

    def __init__(
        self, config: ClientConfig, serial: SerialConfig | None, reactor: Any, requester: Any = None
    ) -> None:
        self.config = config
        self.serial = serial
        self.reactor = reactor
        link = config.link
        self.protocol = requester or ClientLinkProtocol(
            reactor,
            timeouts=LinkTimeouts(
                start_ack=link.start_ack,
                frame_ack=link.frame_ack,
                response_start=link.response_start,
                frame_byte=link.frame_byte,
                max_resends=link.max_resends,
            ),
            max_frame_length=link.max_frame_length,
        )
        self.webdb = WebDB.from_config(config.database)
        self.wakeup: Any = None
        self.jobs = Jobs(
            config,
            self.webdb,
            self.protocol,
            reactor,
            CrlInstaller(reactor),
            renderer=MailRenderer(config.mail, reactor.seconds),
            sender=SMTPSender(config.mail, reactor),
        )

    def health(self) -> Deferred[dict[str, Any]]:
        """The health facts (pending counts need the database)."""
        now = self.reactor.seconds()
        last_success = getattr(self.protocol, "last_success", None)
        body: dict[str, Any] = {
            "link_state": str(getattr(self.protocol, "link_state", "unknown")),
            "seconds_since_last_round_trip": None if last_success is None else round(now - last_success, 1),
            "rounds": self.jobs.rounds,
            "last_round_aborted": self.jobs.last_round.aborted if self.jobs.last_round else None,
            "wakeup": self.wakeup.health() if self.wakeup is not None else None,
            "crl_age_seconds": {
                str(root): None if at is None else round(now - at, 1) for root, at in self.jobs.crl_age.items()
            },
        }
        d = self.webdb.pending_counts(self.config.polling.warning_threshold)

        def add(counts: dict[str, int]) -> dict[str, Any]:
            body["pending"] = counts
            return body

        def failed(failure: Any) -> dict[str, Any]:
            body["pending"] = f"database error: {failure.getErrorMessage()}"
            return body

        return d.addCallbacks(add, failed)


class _JsonLogService(Service):
    """Adds a JSON-lines observer on standard error while running."""

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self.observer = jsonFileLogObserver(sys.stderr)
        globalLogPublisher.addObserver(self.observer)

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        globalLogPublisher.removeObserver(self.observer)


def make_client_service(
    config: ClientConfig,
    serial: SerialConfig | None,
    reactor: Any,
    requester: Any = None,
    stop_grace: float = DEFAULT_STOP_GRACE,
) -> MultiService:
    """The whole client as one service.

    ``requester`` replaces the serial link (then ``serial`` may be None):
    for tests and the demo.
    """
    log = Logger()
    parts = ClientParts(config, serial, reactor, requester)
    top = MultiService()
    top.setName("signer-client")
    top.parts = parts  # type: ignore[attr-defined]
    if config.log_format == "json":
        _JsonLogService().setServiceParent(top)
    WebDBService(parts.webdb, config.polling.warning_threshold).setServiceParent(top)
    if requester is None:
        assert serial is not None
        SerialLinkService(parts.protocol, serial, reactor).setServiceParent(top)
    wakeup = config.wakeup
    if wakeup is not None and wakeup.source != "off":
        from signer.client.wakeup_trigger import WakeupService, WakeupTrigger

        trigger = WakeupTrigger(parts.jobs, reactor)
        parts.wakeup = WakeupService(wakeup, trigger, reactor, stop_grace)
        PollingService(trigger, wakeup.fallback_interval, reactor, stop_grace).setServiceParent(top)  # type: ignore[arg-type]
        parts.wakeup.setServiceParent(top)
    else:
        PollingService(parts.jobs, config.polling.interval, reactor, stop_grace).setServiceParent(top)
    if config.health_address:
        HealthService(config.health_address, reactor, parts).setServiceParent(top)
    log.info(
        "signer-client configured from {source}: roots {roots}, polling every {interval} s, "
        "crt_name prefix {prefix}",
        source=config.source,
        roots=[root.rootcert for root in config.roots],
        interval=config.polling.interval,
        prefix=config.files.crt_name_prefix,
    )
    return top
