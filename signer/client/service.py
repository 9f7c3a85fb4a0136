"""The client's services: serial link, polling loop, WebDB pool, health page.

:func:`make_client_service` builds a :class:`~twisted.application.service.MultiService`
from a :class:`~signer.client.config.ClientConfig`:

- :class:`~signer.protocol.service.SerialLineService` opens the serial port
  with a :class:`~signer.protocol.transport.ClientLinkProtocol` and closes it
  on stop once everything written (the last ACK) has left;
- :class:`PollingService` runs :meth:`Jobs.run_round` from a
  :class:`~twisted.internet.task.LoopingCall` on the injected clock. The
  LoopingCall waits for the round's Deferred, so a round never overlaps the
  previous one. On stop (SIGTERM under twistd) no new conversation starts; the
  one in flight completes, or is abandoned after ``stop_grace`` seconds (its
  Deferred is cancelled, which resets the link; the in-flight journal makes
  the next start count it as a failed attempt);
- :class:`WebDBService` closes the connection pool last;
- :class:`~signer.health.HealthService` (optional, ``[health] address``)
  serves ``GET /health`` (JSON) and ``GET /metrics`` (Prometheus) with the
  figures of :class:`~signer.client.health.ClientHealth`: link state, last
  successful round trip, rounds, pending rows per table, CRL age per root.

The log format is not chosen here: twistd's ``--logger`` (e.g.
``signer.logging.json_observer``) or, with ``etc/signer.tac``, ``[logging]
format`` through :func:`signer.logging.observer_for`.

With a ``[wakeup]`` source configured, the polling service drives a
:class:`~signer.client.wakeup_trigger.WakeupTrigger` (same interface as the
jobs) every ``fallback_interval`` seconds and a
:class:`~signer.client.wakeup_trigger.WakeupService` runs the source.

Services stop one after another (:class:`OrderedMultiService`), in reverse
order of start: health, wake-up, polling (waits for the round and the mails in
flight), serial line (after its last bytes left), database.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from signer.client.config import ClientConfig
from signer.client.crlinstall import CrlInstaller
from signer.client.health import ClientHealth
from signer.client.jobs import Jobs
from signer.client.mailer import MailRenderer, SMTPSender
from signer.client.webdb import WebDB
from signer.protocol.link import LinkTimeouts
from signer.health import HealthService
from signer.protocol.serialconfig import SerialConfig
from signer.protocol.service import OPENED_CLIENT, SerialLineService
from signer.protocol.transport import ClientLinkProtocol

#: Seconds a stopping client waits for the conversation in flight.
DEFAULT_STOP_GRACE = 30.0


class OrderedMultiService(MultiService):
    """A MultiService whose children stop one after another, the last started first.

    Twisted's ``MultiService`` stops all children at once; the client needs
    the polling service to finish the conversation in flight before the
    serial line closes and the WebDB pool goes away.
    """

    log = Logger()

    @inlineCallbacks
    def stopService(self) -> Any:  # noqa: N802 (Twisted's name)
        Service.stopService(self)
        for service in reversed(list(self)):
            try:
                yield maybeDeferred(service.stopService)
            except Exception:
                self.log.failure("stopping {service} failed", service=type(service).__name__)


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

            def fire(outcome: str | None) -> None:
                if not waiter.called:
                    waiter.callback(outcome)

            def passed_on(result: Any) -> Any:
                fire(None)
                return result

            current.addBoth(passed_on)
            timer = self.clock.callLater(self.stop_grace, fire, "late")
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
                min_rate=link.min_rate,
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
    top = OrderedMultiService()
    top.setName("signer-client")
    top.parts = parts  # type: ignore[attr-defined]
    WebDBService(parts.webdb, config.polling.warning_threshold).setServiceParent(top)
    if requester is None:
        assert serial is not None
        SerialLineService(parts.protocol, serial, reactor, opened=OPENED_CLIENT).setServiceParent(top)
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
        HealthService(config.health_address, ClientHealth(parts), reactor).setServiceParent(top)
    log.info(
        "signer-client configured from {source}: roots {roots}, polling every {interval} s, "
        "crt_name prefix {prefix}",
        source=config.source,
        roots=[root.rootcert for root in config.roots],
        interval=config.polling.interval,
        prefix=config.files.crt_name_prefix,
    )
    return top
