"""Wake-up sources against the real Redis and RabbitMQ of this machine.

Needs Redis on 127.0.0.1:6379 (plus the ``redis-server`` binary for a
private server that the restart tests stop and start) and RabbitMQ on
127.0.0.1:5672 with guest/guest (plus ``rabbitmqctl`` for a private vhost
whose connections the tests close). When a broker cannot be reached the
tests are skipped, or fail when the environment variable ``CI`` is set.

The end-to-end tests run the real client jobs over a sqlite WebDB and the
fake signer, the real :class:`PollingService` at a 60 s fallback interval on
a :class:`~twisted.internet.task.Clock` (so the fallback poll only runs when
a test advances it), and a wake-up source on the real reactor.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import formatEvent, globalLogPublisher

from signer.cli.notify import BrokerError, publish_amqp, publish_redis
from signer.client.service import PollingService
from signer.client.wakeup import AmqpWakeup, RedisWakeup, WakeupSource
from signer.client.wakeup_config import AmqpWakeupConfig, RedisWakeupConfig, WakeupConfig
from signer.client.wakeup_trigger import WakeupService, WakeupTrigger
from tests.client.conftest import World
from tests.client.test_wakeup_trigger import members, seed, wait_until

REDIS_PORT = 6379
AMQP_PORT = 5672
FAST_BACKOFF = {"backoff_initial": 0.1, "backoff_max": 0.5}


def require(problem: str | None, what: str) -> None:
    """Skip (or fail under CI) when ``problem`` says the broker is not usable."""
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI: {problem}")
    pytest.skip(f"{what} not available: {problem}")


def redis_problem(port: int = REDIS_PORT) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
            if not reply.startswith(b"+PONG"):
                return f"no PONG: {reply!r}"
    except OSError as exc:
        return str(exc)
    return None


def amqp_problem(vhost: str = "/") -> str | None:
    import pika

    try:
        connection = pika.BlockingConnection(
            pika.ConnectionParameters("127.0.0.1", AMQP_PORT, vhost, connection_attempts=1, socket_timeout=3)
        )
    except Exception as exc:  # noqa: BLE001 (any failure means: not usable)
        return repr(exc)
    connection.close()
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server subprocess on a free port that a test may stop and start."""

    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        self.extra = list(extra)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while (problem := redis_problem(self.port)) is not None and "NOAUTH" not in problem:
            if time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server on {self.port} did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        require("redis-server is not installed", "redis-server")
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def password_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        require("redis-server is not installed", "redis-server")
    server = PrivateRedis("--requirepass", "s3cret")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def machine_redis() -> int:
    require(redis_problem(), "Redis on 127.0.0.1:6379")
    return REDIS_PORT


@dataclass
class Vhost:
    """A private RabbitMQ vhost (guest has all rights), removed after the tests."""

    name: str

    def close_connections(self) -> None:
        subprocess.run(
            ["rabbitmqctl", "close_all_connections", "--vhost", self.name, "wake-up test: broker restart"],
            check=True, capture_output=True, timeout=60,
        )


@pytest.fixture(scope="module")
def vhost() -> Iterator[Vhost]:
    require(amqp_problem(), "RabbitMQ on 127.0.0.1:5672 (guest/guest)")
    if shutil.which("rabbitmqctl") is None:
        require("rabbitmqctl is not installed", "rabbitmqctl")
    name = f"signer-wakeup-test-{os.getpid()}"
    subprocess.run(["rabbitmqctl", "add_vhost", name], check=True, capture_output=True, timeout=60)
    subprocess.run(
        ["rabbitmqctl", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
        check=True, capture_output=True, timeout=60,
    )
    yield Vhost(name)
    subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True, timeout=60)


class Woken:
    """Records ``wake`` calls with their real arrival time."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []
        self.at: list[float] = []

    def __call__(self, kind: str, row_id: int | None) -> None:
        self.calls.append((kind, row_id))
        self.at.append(time.monotonic())


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        text = formatEvent(event)
        if text:
            lines.append(text)

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def redis_source(port: int, wake: Callable[[str, int | None], object], channel: str | None = None) -> RedisWakeup:
    config = RedisWakeupConfig(port=port, channel=channel or f"signer-test-{uuid.uuid4().hex[:8]}")
    return RedisWakeup(config, wake, reactor, **FAST_BACKOFF)


def amqp_config(vhost: Vhost, exchange: str = "") -> AmqpWakeupConfig:
    return AmqpWakeupConfig(vhost=vhost.name, queue=f"q-{uuid.uuid4().hex[:8]}", exchange=exchange, heartbeat=5)


def publish(source: WakeupSource, message: bytes) -> None:
    if isinstance(source, RedisWakeup):
        receivers = publish_redis("127.0.0.1", source.config.port, source.config.channel, message)
        assert receivers == 1
    else:
        assert isinstance(source, AmqpWakeup)
        publish_amqp(source.config, message)


@inlineCallbacks
def started(source: WakeupSource) -> Any:
    source.startService()
    yield wait_until(lambda: source.connected, timeout=10)
    return source


# -- messages reach the callback ----------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "amqp"])
@pytest_twisted.inlineCallbacks
def test_message_reaches_the_callback_within_a_second(kind: str, request: pytest.FixtureRequest) -> None:
    """A published message calls wake(kind, id) in well under a second."""
    woken = Woken()
    if kind == "redis":
        source: WakeupSource = redis_source(request.getfixturevalue("machine_redis"), woken)
    else:
        source = AmqpWakeup(amqp_config(request.getfixturevalue("vhost")), woken, reactor, **FAST_BACKOFF)
    yield started(source)
    try:
        sent = time.monotonic()
        publish(source, b'{"kind":"emailcerts","id":123}')
        yield wait_until(lambda: woken.calls, timeout=1.0)
        assert woken.calls == [("emailcerts", 123)]
        assert woken.at[0] - sent < 1.0
        health = source.health()
        assert health["connected"] is True and health["messages"] == 1 and health["reconnects"] == 0
        assert health["last_message_at"] is not None
    finally:
        yield source.stopService()
    assert not source.connected


@pytest.mark.parametrize("kind", ["redis", "amqp"])
@pytest_twisted.inlineCallbacks
def test_malformed_messages_are_logged_and_ignored(
    kind: str, request: pytest.FixtureRequest, log_lines: list[str]
) -> None:
    """Garbage is logged with the reason and ignored; the next good message still arrives."""
    woken = Woken()
    if kind == "redis":
        source: WakeupSource = redis_source(request.getfixturevalue("machine_redis"), woken)
    else:
        source = AmqpWakeup(amqp_config(request.getfixturevalue("vhost")), woken, reactor, **FAST_BACKOFF)
    yield started(source)
    try:
        for junk in (b"certificates 5", b"\xff\xfe\x00", b'{"kind":"gpg","id":"x"}', b"", b"gpg 1 2"):
            publish(source, junk)
        publish(source, b"domaincerts 9")
        yield wait_until(lambda: woken.calls, timeout=2.0)
        assert woken.calls == [("domaincerts", 9)]
        assert source.ignored == 5 and source.messages == 1 and source.connected
        ignored = [line for line in log_lines if "ignoring message" in line]
        assert len(ignored) == 5
        assert any("unknown kind 'certificates'" in line for line in ignored)
        assert any("not UTF-8" in line for line in ignored)
    finally:
        yield source.stopService()


# -- outages ------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_redis_restart_is_survived(private_redis: PrivateRedis, log_lines: list[str]) -> None:
    """Redis goes away: disconnected state and failed attempts are reported; after the restart it reconnects."""
    woken = Woken()
    source = redis_source(private_redis.port, woken)
    yield started(source)
    try:
        private_redis.stop()
        yield wait_until(lambda: not source.connected, timeout=5)
        yield wait_until(lambda: source.failed_attempts >= 2, timeout=5)
        health = source.health()
        assert health["connected"] is False and "refused" in (health["last_error"] or "").lower()
        private_redis.start()
        yield wait_until(lambda: source.connected, timeout=5)
        assert source.reconnects == 1 and source.failed_attempts == 0
        publish(source, b"gpg 4")
        yield wait_until(lambda: woken.calls, timeout=1.0)
        assert woken.calls == [("gpg", 4)]
        text = "\n".join(log_lines)
        assert "connection to redis://127.0.0.1" in text and "lost" in text
        assert "cannot connect to" in text and "reconnected to" in text
        assert "next connection attempt in" in text
    finally:
        yield source.stopService()


@pytest_twisted.inlineCallbacks
def test_redis_password_is_sent_and_a_wrong_one_is_reported(password_redis: PrivateRedis) -> None:
    """With requirepass, the right password subscribes; a wrong one keeps retrying and names the error."""
    woken = Woken()
    good = RedisWakeup(RedisWakeupConfig(port=password_redis.port, password="s3cret"), woken, reactor, **FAST_BACKOFF)
    bad = RedisWakeup(RedisWakeupConfig(port=password_redis.port, password="wrong"), woken, reactor, **FAST_BACKOFF)
    yield started(good)
    bad.startService()
    try:
        yield wait_until(lambda: bad.failed_attempts >= 2, timeout=5)
        assert not bad.connected and "setting up the subscription failed" in (bad.last_error or "")
        assert publish_redis("127.0.0.1", password_redis.port, "signer", b"gpg 8", password="s3cret") == 1
        yield wait_until(lambda: woken.calls, timeout=1.0)
        assert woken.calls == [("gpg", 8)]
        with pytest.raises(BrokerError, match="refused AUTH"):
            publish_redis("127.0.0.1", password_redis.port, "signer", b"gpg", password="wrong")
    finally:
        yield good.stopService()
        yield bad.stopService()


@pytest_twisted.inlineCallbacks
def test_redis_killed_subscription_is_reestablished(private_redis: PrivateRedis) -> None:
    """CLIENT KILL TYPE pubsub drops the subscriber; it comes back subscribed."""
    woken = Woken()
    source = redis_source(private_redis.port, woken)
    yield started(source)
    try:
        subprocess.run(["redis-cli", "-p", str(private_redis.port), "CLIENT", "KILL", "TYPE", "pubsub"],
                       check=True, capture_output=True, timeout=10)
        yield wait_until(lambda: source.reconnects == 1 and source.connected, timeout=5)
        publish(source, b"crl")
        yield wait_until(lambda: woken.calls, timeout=1.0)
        assert woken.calls == [("crl", None)]
    finally:
        yield source.stopService()


@pytest_twisted.inlineCallbacks
def test_amqp_connections_closed_by_the_broker_are_reestablished(vhost: Vhost) -> None:
    """The broker closes every connection of the vhost: the consumer reconnects and receives again."""
    woken = Woken()
    source = AmqpWakeup(amqp_config(vhost), woken, reactor, **FAST_BACKOFF)
    yield started(source)
    try:
        vhost.close_connections()
        yield wait_until(lambda: source.reconnects == 1 and source.connected, timeout=10)
        assert source.last_error is not None and "lost" in source.last_error
        publish(source, b"revoke 17")
        yield wait_until(lambda: woken.calls, timeout=1.0)
        assert woken.calls == [("revoke", 17)]
    finally:
        yield source.stopService()


@pytest_twisted.inlineCallbacks
def test_amqp_queue_keeps_messages_while_the_client_is_away(vhost: Vhost) -> None:
    """The durable queue holds messages published while no client consumes; they arrive on start."""
    config = amqp_config(vhost, exchange=f"x-{uuid.uuid4().hex[:6]}")
    woken = Woken()
    first = AmqpWakeup(config, woken, reactor, **FAST_BACKOFF)
    yield started(first)  # declares queue, exchange and binding
    yield first.stopService()
    publish_amqp(config, b'{"kind":"orgemailcerts","id":3}')
    publish_amqp(config, b"gpg")
    second = AmqpWakeup(config, woken, reactor, **FAST_BACKOFF)
    yield started(second)
    try:
        yield wait_until(lambda: len(woken.calls) == 2, timeout=2.0)
        assert woken.calls == [("orgemailcerts", 3), ("gpg", None)]
    finally:
        yield second.stopService()


def test_notify_reports_an_unreachable_broker() -> None:
    """Publishing to a port where nothing listens raises BrokerError (exit 4) naming the broker."""
    port = free_port()
    with pytest.raises(BrokerError, match=f"127.0.0.1:{port} is unreachable") as info:
        publish_redis("127.0.0.1", port, "signer", b"gpg")
    assert info.value.exit_code == 4
    with pytest.raises(BrokerError, match=f"127.0.0.1:{port}"):
        publish_amqp(AmqpWakeupConfig(port=port), b"gpg", timeout=2)


# -- the whole client: row + message -> signed ------------------------------------------


@dataclass
class Client:
    trigger: WakeupTrigger
    polling: PollingService
    wakeup: WakeupService

    @inlineCallbacks
    def stop(self) -> Any:
        yield self.wakeup.stopService()
        yield self.polling.stopService()


@inlineCallbacks
def start_client(world: World, config: WakeupConfig, source: WakeupSource | None = None) -> Any:
    """Jobs + trigger + PollingService at the fallback interval (on world.clock) + wake-up source (real reactor)."""
    members(world)
    trigger = WakeupTrigger(world.jobs(), world.clock)
    polling = PollingService(trigger, config.polling_interval(2.7), world.clock)  # type: ignore[arg-type]
    wakeup = WakeupService(config, trigger, reactor, source=source)
    polling.startService()
    yield wait_until(lambda: trigger.rounds == 1 and not trigger.busy())
    wakeup.startService()
    return Client(trigger, polling, wakeup)


def wakeup_config(kind: str, request: pytest.FixtureRequest) -> WakeupConfig:
    if kind == "redis":
        port = request.getfixturevalue("machine_redis")
        redis = RedisWakeupConfig(port=port, channel=f"signer-test-{uuid.uuid4().hex[:8]}")
        return WakeupConfig(source="redis", redis=redis, **FAST_BACKOFF)
    return WakeupConfig(source="amqp", amqp=amqp_config(request.getfixturevalue("vhost")), **FAST_BACKOFF)


def publish_for(config: WakeupConfig, message: bytes) -> None:
    if config.source == "redis":
        publish_redis("127.0.0.1", config.redis.port, config.redis.channel, message)
    else:
        publish_amqp(config.amqp, message)


@pytest.mark.parametrize("kind", ["redis", "amqp"])
@pytest_twisted.inlineCallbacks
def test_row_plus_message_is_signed_within_a_second(world: World, kind: str, request: pytest.FixtureRequest) -> None:
    """Fallback 60 s: a new request row plus its message is signed, written and recorded within 1 s."""
    config = wakeup_config(kind, request)
    client = yield start_client(world, config)
    try:
        yield wait_until(lambda: client.wakeup.source.connected, timeout=10)
        seed(world, "emailcerts", 1, "Ann", 3)
        sent = time.monotonic()
        publish_for(config, b'{"kind":"emailcerts","id":1}')
        yield wait_until(lambda: world.db.row("emailcerts", 1)["crt_name"] != "", timeout=1.0)
        elapsed = time.monotonic() - sent
        assert elapsed < 1.0
        assert world.crt_path("client", 1).exists()
        assert client.trigger.rounds == 1  # no polling round was needed
        health = client.wakeup.health()
        assert health["connected"] and health["messages"] == 1 and health["wakes"] == 1
    finally:
        yield client.stop()


@pytest.mark.parametrize("kind", ["redis", "amqp"])
@pytest_twisted.inlineCallbacks
def test_lost_message_is_caught_by_the_fallback_poll(world: World, kind: str, request: pytest.FixtureRequest) -> None:
    """A row whose message never came waits until the fallback round (60 s later) signs it."""
    config = wakeup_config(kind, request)
    client = yield start_client(world, config)
    try:
        yield wait_until(lambda: client.wakeup.source.connected, timeout=10)
        seed(world, "domaincerts", 2, "www.example.org", 4)
        world.clock.advance(59.0)
        yield deferred_sleep(0.3)
        assert world.db.row("domaincerts", 2)["crt_name"] == ""
        world.clock.advance(1.0)
        yield wait_until(lambda: client.trigger.rounds == 2 and not client.trigger.busy(), timeout=5)
        assert world.db.row("domaincerts", 2)["crt_name"] == "../crt/server/0/server-2.crt"
        assert client.trigger.job_runs == 0
    finally:
        yield client.stop()


def deferred_sleep(seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


@pytest_twisted.inlineCallbacks
def test_client_keeps_working_while_the_broker_is_down(world: World, private_redis: PrivateRedis) -> None:
    """Redis down: the fallback poll still signs; health says disconnected; after the restart messages work again."""
    redis = RedisWakeupConfig(port=private_redis.port, channel="signer")
    config = WakeupConfig(source="redis", redis=redis, **FAST_BACKOFF)
    client = yield start_client(world, config)
    source = client.wakeup.source
    try:
        yield wait_until(lambda: source.connected, timeout=10)
        private_redis.stop()
        yield wait_until(lambda: not source.connected, timeout=5)
        seed(world, "emailcerts", 1, "Ann", 3)
        world.clock.advance(60.0)
        yield wait_until(lambda: world.db.row("emailcerts", 1)["crt_name"] != "", timeout=5)
        health = client.wakeup.health()
        assert health["connected"] is False and health["last_error"]
        private_redis.start()
        yield wait_until(lambda: source.connected, timeout=5)
        assert source.reconnects == 1
        seed(world, "emailcerts", 2, "Ben", 4)
        publish_redis("127.0.0.1", private_redis.port, "signer", b"emailcerts 2")
        yield wait_until(lambda: world.db.row("emailcerts", 2)["crt_name"] != "", timeout=1.0)
    finally:
        yield client.stop()


@pytest.mark.parametrize("kind", ["redis", "amqp"])
@pytest_twisted.inlineCallbacks
def test_whole_client_service_wakes_and_reports_on_its_health_page(
    world: World, kind: str, request: pytest.FixtureRequest
) -> None:
    """make_client_service with [wakeup]: a message signs the row at once; GET /health shows
    the wake-up state and /metrics its gauges."""
    import dataclasses
    import json

    from twisted.internet.threads import deferToThread

    from signer.client.service import make_client_service
    from signer.health import HealthService

    members(world)
    config = dataclasses.replace(
        world.config, wakeup=wakeup_config(kind, request), health_address="tcp:0:interface=127.0.0.1"
    )
    service = make_client_service(config, None, reactor, requester=world.signer)
    service.startService()
    try:
        parts = service.parts  # type: ignore[attr-defined]
        yield wait_until(lambda: parts.jobs.rounds == 1 and parts.wakeup.source.connected, timeout=10)
        seed(world, "orgemailcerts", 6, "Org Member", 5)
        publish_for(config.wakeup, b"orgemailcerts 6")
        yield wait_until(lambda: world.db.row("orgemailcerts", 6)["crt_name"] != "", timeout=1.0)
        health_service = [c for c in service if isinstance(c, HealthService)][0]  # type: ignore[attr-defined]
        listening = yield health_service.when_listening()
        port = listening.getHost().port

        def fetch(page: str) -> bytes:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{page}", timeout=5) as answer:
                return answer.read()  # type: ignore[no-any-return]

        yield wait_until(lambda: not parts.wakeup.trigger.busy())
        body = json.loads((yield deferToThread(fetch, "health")))
        metrics = (yield deferToThread(fetch, "metrics")).decode()
        wakeup = body["wakeup"]
        assert wakeup["source"] == kind and wakeup["connected"] is True
        assert wakeup["messages"] == 1 and wakeup["wakes"] == 1 and wakeup["reconnects"] == 0
        assert wakeup["fallback_interval"] == 60.0
        assert wakeup["last_job"]["kinds"] == ["orgemailcerts"] and wakeup["last_job"]["signed"] == 1
        assert parts.jobs.rounds == 1  # the polling round did not run again
        assert f'signer_wakeup_connected{{source="{kind}"}} 1.0' in metrics
        assert "signer_wakeup_messages_total 1.0" in metrics and "signer_polling_rounds_total 1.0" in metrics
    finally:
        yield service.stopService()
