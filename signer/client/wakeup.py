"""Optional wake-up sources: a message from the web application wakes the client.

A message names the kind of work and optionally the row id (``docs/wakeup.md``):

- JSON: ``{"kind": "emailcerts", "id": 123}`` (``id`` may be missing or null);
- plain text: ``emailcerts 123`` or ``emailcerts``.

Kinds are :data:`KINDS`. :func:`parse_message` is the sans-IO core; anything
it refuses (:class:`BadMessage`) is logged and ignored, never raised into the
reactor. A valid message calls ``wake(kind, row_id)``: the database stays the
source of truth, a message only triggers a look.

Two sources, both :class:`~twisted.application.service.Service` objects that
keep one connection up through :class:`~twisted.application.internet.ClientService`
with a capped, jittered exponential backoff, and log every connect, loss and
failed attempt:

- :class:`RedisWakeup` subscribes to a pub/sub channel (txredisapi's
  :class:`~txredisapi.SubscriberProtocol`). Pub/sub keeps nothing: a message
  published while the client is disconnected is lost (the fallback poll
  catches its row).
- :class:`AmqpWakeup` (pika's Twisted adapter) declares a **durable queue**
  (default ``signer``) and consumes it with automatic acknowledgement. With
  ``exchange`` empty, publishers use the default exchange and the queue name
  as routing key; with an exchange name, the client also declares that
  exchange as a durable ``fanout`` and binds the queue to it, so publishers
  only need the exchange. The queue outlives client restarts: messages sent
  while the client was away are delivered when it returns (and coalesce into
  one run).

Health (:meth:`WakeupSource.health`): ``connected``, ``last_message_at``,
``messages``, ``ignored``, ``reconnects``, ``last_error``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from signer.client.wakeup_config import AmqpWakeupConfig, RedisWakeupConfig, WakeupConfig

#: The kinds of work a message may name.
KINDS: tuple[str, ...] = ("gpg", "emailcerts", "domaincerts", "orgemailcerts", "orgdomaincerts", "revoke", "crl")
#: Longest message accepted (bytes).
MAX_MESSAGE = 1024

#: Seconds allowed for a TCP connect, and again for login + subscribe/consume.
CONNECT_TIMEOUT = 10.0

#: ``wake(kind, row_id)``: what a valid message calls.
WakeCallback = Callable[[str, "int | None"], object]


class BadMessage(ValueError):
    """A wake-up message that is not in the documented format."""


@dataclass(frozen=True)
class WakeMessage:
    """One parsed message: the kind of work and the row id, if given."""

    kind: str
    row_id: int | None = None


def _row_id(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadMessage(f"id must be a positive integer, not {value!r}")
    if value <= 0 or value >= 2**63:
        raise BadMessage(f"id must be a positive integer, not {value}")
    return value


def _kind(value: Any) -> str:
    if not isinstance(value, str) or value not in KINDS:
        raise BadMessage(f"unknown kind {value!r} (expected one of {', '.join(KINDS)})")
    return value


def parse_message(data: bytes) -> WakeMessage:
    """Parse a JSON or plain-text wake-up message.

    :raises BadMessage: for anything else (too long, not UTF-8, unknown kind,
        bad id, extra words or keys).
    """
    if len(data) > MAX_MESSAGE:
        raise BadMessage(f"message of {len(data)} bytes is longer than {MAX_MESSAGE}")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadMessage("message is not UTF-8") from None
    if not text:
        raise BadMessage("empty message")
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise BadMessage(f"not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadMessage("JSON message must be an object")
        extra = sorted(set(body) - {"kind", "id"})
        if extra:
            raise BadMessage(f"unknown key {extra[0]!r} in JSON message")
        if "kind" not in body:
            raise BadMessage("JSON message without 'kind'")
        return WakeMessage(_kind(body["kind"]), _row_id(body.get("id")))
    words = text.split()
    if len(words) > 2:
        raise BadMessage("plain message must be 'KIND' or 'KIND ID'")
    kind = _kind(words[0])
    if len(words) == 1:
        return WakeMessage(kind)
    if not words[1].isascii() or not words[1].isdigit():
        raise BadMessage(f"id must be a positive integer, not {words[1]!r}")
    return WakeMessage(kind, _row_id(int(words[1])))


def format_message(kind: str, row_id: int | None = None) -> bytes:
    """The canonical JSON form of a message (what ``signer notify`` publishes).

    :raises BadMessage: for an unknown kind or a bad id.
    """
    body: dict[str, Any] = {"kind": _kind(kind)}
    if row_id is not None:
        body["id"] = _row_id(row_id)
    return json.dumps(body, separators=(",", ":")).encode("ascii")


def retry_policy(initial: float, maximum: float) -> Callable[[int], float]:
    """Exponential backoff ``initial * 2**attempt`` capped at ``maximum``, plus up to 25 % jitter."""
    base = backoffPolicy(initialDelay=initial, maxDelay=maximum, factor=2.0, jitter=lambda: 0.0)

    def policy(attempt: int) -> float:
        delay = base(attempt)
        return delay + random.uniform(0.0, delay / 4)

    return policy


class WakeupSource(Service):
    """Common part of the sources: the connection loop, message handling, health state."""

    log = Logger()
    kind = "?"

    def __init__(
        self,
        wake: WakeCallback,
        reactor: Any,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        self.wake = wake
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connected = False
        self.last_message_at: float | None = None
        self.last_connected_at: float | None = None
        self.messages = 0
        self.ignored = 0
        self.connects = 0
        self.failed_attempts = 0
        self.last_error: str | None = None
        self._client: ClientService | None = None
        self._protocol: Any = None

    # -- to be provided by a source ------------------------------------------

    def describe(self) -> str:
        raise NotImplementedError

    def endpoint(self) -> Any:
        raise NotImplementedError

    def factory(self) -> Factory:
        raise NotImplementedError

    def prepare(self, protocol: Any) -> Deferred[Any]:
        """Subscribe/consume on a fresh connection; fails = close and retry."""
        raise NotImplementedError

    # -- health --------------------------------------------------------------

    @property
    def reconnects(self) -> int:
        """Successful connections after the first."""
        return max(self.connects - 1, 0)

    def health(self) -> dict[str, Any]:
        """The facts for the health page."""
        now = self.clock.seconds()
        return {
            "source": self.kind,
            "broker": self.describe(),
            "connected": self.connected,
            "last_message_at": self.last_message_at,
            "seconds_since_last_message": None
            if self.last_message_at is None
            else round(now - self.last_message_at, 1),
            "messages": self.messages,
            "ignored": self.ignored,
            "reconnects": self.reconnects,
            "failed_attempts": self.failed_attempts,
            "last_error": self.last_error,
        }

    # -- service -------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        super().startService()
        policy = retry_policy(self.backoff_initial, self.backoff_max)

        def logged_policy(attempt: int) -> float:
            delay = policy(attempt)
            self.log.info(
                "Wake-up {source}: next connection attempt in {delay:.1f} s",
                source=self.kind, delay=delay,
            )
            return delay

        self._client = ClientService(
            _LoggingEndpoint(self.endpoint(), self),
            self.factory(),
            retryPolicy=logged_policy,
            clock=self.clock,
            prepareConnection=self._prepare,
        )
        self._client.startService()
        self.log.info("Wake-up {source}: connecting to {broker}", source=self.kind, broker=self.describe())

    def stopService(self) -> Deferred[None] | None:  # noqa: N802
        super().stopService()
        client, self._client = self._client, None
        if client is None:
            return None
        return client.stopService()

    # -- events --------------------------------------------------------------

    def _prepare(self, proxy: Any) -> Deferred[Any]:
        protocol = getattr(proxy, "_protocol", proxy)
        d = self.prepare(protocol)
        d.addTimeout(CONNECT_TIMEOUT, self.clock)

        def ready(_: Any) -> None:
            self._protocol = protocol
            self.connected = True
            self.connects += 1
            self.failed_attempts = 0
            self.last_connected_at = self.clock.seconds()
            if self.connects == 1:
                self.log.info("Wake-up {source}: connected to {broker}", source=self.kind, broker=self.describe())
            else:
                self.log.info(
                    "Wake-up {source}: reconnected to {broker} (reconnect {n})",
                    source=self.kind, broker=self.describe(), n=self.reconnects,
                )

        def failed(failure: Failure) -> Failure:
            self._attempt_failed(f"setting up the subscription failed: {failure.getErrorMessage()}")
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.abortConnection()
            return failure

        return d.addCallbacks(ready, failed)

    def _attempt_failed(self, error: str) -> None:
        self.failed_attempts += 1
        self.last_error = error
        self.log.warn(
            "Wake-up {source}: cannot connect to {broker}: {error} (attempt {n}); "
            "the client keeps polling every fallback interval",
            source=self.kind, broker=self.describe(), error=error, n=self.failed_attempts,
        )

    def _lost(self, protocol: Any, reason: Failure | None) -> None:
        """The connection of ``protocol`` is gone (ClientService will reconnect)."""
        if protocol is not self._protocol:
            return
        self._protocol = None
        self.connected = False
        why = reason.getErrorMessage() if reason is not None else "closed"
        if self.running:
            self.last_error = f"connection lost: {why}"
            self.log.warn(
                "Wake-up {source}: connection to {broker} lost ({why}); reconnecting with backoff, "
                "polling every fallback interval meanwhile",
                source=self.kind, broker=self.describe(), why=why,
            )
        else:
            self.log.info("Wake-up {source}: disconnected from {broker}", source=self.kind, broker=self.describe())

    def message_received(self, data: bytes) -> None:
        """Parse one message and call ``wake``; never raises."""
        self.last_message_at = self.clock.seconds()
        try:
            message = parse_message(data)
        except BadMessage as exc:
            self.ignored += 1
            self.log.warn(
                "Wake-up {source}: ignoring message {data!r}: {error}",
                source=self.kind, data=data[:80], error=str(exc),
            )
            return
        self.messages += 1
        self.log.debug(
            "Wake-up {source}: {kind} {id}", source=self.kind, kind=message.kind, id=message.row_id
        )
        try:
            self.wake(message.kind, message.row_id)
        except Exception:
            self.log.failure("Wake-up {source}: the wake callback failed", source=self.kind)


@implementer(IStreamClientEndpoint)
class _LoggingEndpoint:
    """Wraps an endpoint to record and log failed connection attempts."""

    def __init__(self, endpoint: Any, owner: WakeupSource) -> None:
        self.endpoint = endpoint
        self.owner = owner

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = self.endpoint.connect(factory)

        def failed(failure: Failure) -> Failure:
            self.owner._attempt_failed(failure.getErrorMessage())
            return failure

        return d.addErrback(failed)


def _tcp_endpoint(reactor: Any, host: str, port: int) -> Any:
    return HostnameEndpoint(reactor, host, port, timeout=CONNECT_TIMEOUT)


# -- Redis ----------------------------------------------------------------------


class _RedisSubscriber:
    """Builds the txredisapi subscriber protocol (imported lazily)."""

    @staticmethod
    def protocol_class() -> type:
        import txredisapi

        class Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]
            owner: "RedisWakeup"

            def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:  # noqa: N802
                if isinstance(message, str):
                    message = message.encode("utf-8")
                elif not isinstance(message, bytes):
                    message = str(message).encode("utf-8")
                self.owner.message_received(message)

            def connectionLost(self, why: Any) -> None:  # noqa: N802
                txredisapi.SubscriberProtocol.connectionLost(self, why)
                self.owner._lost(self, why)

        return Subscriber


class RedisWakeup(WakeupSource):
    """Subscribes to one Redis pub/sub channel."""

    kind = "redis"

    def __init__(self, config: RedisWakeupConfig, wake: WakeCallback, reactor: Any, **backoff: float) -> None:
        super().__init__(wake, reactor, **backoff)
        self.config = config

    def describe(self) -> str:
        return self.config.describe()

    def endpoint(self) -> Any:
        return _tcp_endpoint(self.reactor, self.config.host, self.config.port)

    def factory(self) -> Factory:
        cls = _RedisSubscriber.protocol_class()
        owner = self

        class SubscriberFactory(Factory):
            noisy = False

            def buildProtocol(self, addr: Any) -> Protocol:  # noqa: N802
                protocol = cls(charset=None, convertNumbers=False, replyTimeout=None)
                protocol.owner = owner
                protocol.factory = self
                return protocol  # type: ignore[no-any-return]

        return SubscriberFactory()

    @inlineCallbacks
    def prepare(self, protocol: Any) -> Any:
        import txredisapi

        yield protocol.whenConnected()
        # a subscriber only listens: TCP keep-alive notices a peer that vanished silently
        protocol.transport.setTcpKeepAlive(1)
        if self.config.password:
            args = [self.config.username, self.config.password] if self.config.username else [self.config.password]
            reply = yield protocol.execute_command("AUTH", *args)
            if isinstance(reply, Exception):
                raise reply
        reply = yield protocol.subscribe([self.config.channel.encode("utf-8")])
        if isinstance(reply, (Exception, txredisapi.ResponseError)):
            raise reply
        return protocol


# -- AMQP -----------------------------------------------------------------------


class AmqpWakeup(WakeupSource):
    """Consumes a durable AMQP queue (optionally bound to a fanout exchange)."""

    kind = "amqp"
    #: Messages the broker may push ahead of our processing.
    prefetch = 100

    def __init__(self, config: AmqpWakeupConfig, wake: WakeCallback, reactor: Any, **backoff: float) -> None:
        super().__init__(wake, reactor, **backoff)
        self.config = config

    def describe(self) -> str:
        return self.config.describe()

    def endpoint(self) -> Any:
        return _tcp_endpoint(self.reactor, self.config.host, self.config.port)

    def parameters(self) -> Any:
        import pika

        return pika.ConnectionParameters(
            virtual_host=self.config.vhost,
            credentials=pika.PlainCredentials(self.config.user, self.config.password),
            heartbeat=self.config.heartbeat,
            client_properties={"connection_name": "signer-client wake-up"},
        )

    def factory(self) -> Factory:
        from pika.adapters.twisted_connection import TwistedProtocolConnection

        owner = self

        class Connection(TwistedProtocolConnection):  # type: ignore[misc]
            def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
                try:
                    TwistedProtocolConnection.connectionLost(self, reason)
                finally:
                    owner._lost(self, reason)

        class ConnectionFactory(Factory):
            noisy = False

            def buildProtocol(self, addr: Any) -> Protocol:  # noqa: N802
                protocol = Connection(owner.parameters(), custom_reactor=owner.reactor)
                protocol.factory = self
                return protocol

        return ConnectionFactory()

    @inlineCallbacks
    def prepare(self, protocol: Any) -> Any:
        ready = protocol.ready
        if ready is not None:
            yield ready
        channel = yield protocol.channel()
        yield channel.basic_qos(prefetch_count=self.prefetch)
        yield channel.queue_declare(queue=self.config.queue, durable=True)
        if self.config.exchange:
            yield channel.exchange_declare(exchange=self.config.exchange, exchange_type="fanout", durable=True)
            yield channel.queue_bind(queue=self.config.queue, exchange=self.config.exchange)
        queue, _tag = yield channel.basic_consume(queue=self.config.queue, auto_ack=True)
        self._consume(queue)
        return protocol

    @inlineCallbacks
    def _consume(self, queue: Any) -> Any:
        """Take messages off the consumer queue until it is closed (connection gone)."""
        while True:
            try:
                item = yield queue.get()
            except Exception as exc:
                self.log.debug("Wake-up amqp: consumer closed: {e}", e=str(exc))
                return
            self.message_received(bytes(item.body))


def make_wakeup_source(config: WakeupConfig, wake: WakeCallback, reactor: Any) -> WakeupSource | None:
    """The configured source (not started), or None when ``source = "off"``."""
    backoff = {"backoff_initial": config.backoff_initial, "backoff_max": config.backoff_max}
    if config.source == "redis":
        return RedisWakeup(config.redis, wake, reactor, **backoff)
    if config.source == "amqp":
        return AmqpWakeup(config.amqp, wake, reactor, **backoff)
    return None
