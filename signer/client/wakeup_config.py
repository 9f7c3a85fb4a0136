"""The ``[wakeup]`` table of the client configuration: optional event-driven wake-up.

::

    [wakeup]
    source = "redis"            # "off" (default), "redis" or "amqp"
    fallback_interval = 60.0    # seconds between polling rounds while wake-up is on
    backoff_initial = 1.0       # first reconnection delay (seconds)
    backoff_max = 60.0          # reconnection delay cap (seconds, before jitter)

    # Redis pub/sub: either a URL or the single keys (not both)
    redis_url = "redis://:secret@127.0.0.1:6379/0"
    redis_host = "127.0.0.1"
    redis_port = 6379
    redis_db = 0                # accepted for URL compatibility; pub/sub channels are server-wide
    redis_password_file = "/etc/signer/redis.password"
    redis_channel = "signer"

    # AMQP 0-9-1 (RabbitMQ): either a URL or the single keys (not both)
    amqp_url = "amqp://signer:secret@127.0.0.1:5672/%2F"
    amqp_host = "127.0.0.1"
    amqp_port = 5672
    amqp_vhost = "/"
    amqp_user = "guest"
    amqp_password_file = "/etc/signer/amqp.password"
    amqp_queue = "signer"       # durable queue the client declares and consumes
    amqp_exchange = ""          # "" = default exchange; a name = durable fanout bound to the queue

:func:`parse_wakeup_table` turns the table into a :class:`WakeupConfig`;
every problem raises :class:`~signer.client.config.ConfigError` naming the
file and the key. Passwords come from files (first line), never from the
TOML file itself unless they are part of a URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import SplitResult, unquote, urlsplit

from signer.client.config import ConfigError, _Table

SOURCES = ("off", "redis", "amqp")
DEFAULT_FALLBACK_INTERVAL = 60.0
DEFAULT_CHANNEL = "signer"
DEFAULT_QUEUE = "signer"


@dataclass(frozen=True)
class RedisWakeupConfig:
    """Where the Redis pub/sub channel is."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    channel: str = DEFAULT_CHANNEL
    username: str = ""
    password: str = field(default="", repr=False)

    def describe(self) -> str:
        return f"redis://{self.host}:{self.port} channel {self.channel!r}"


@dataclass(frozen=True)
class AmqpWakeupConfig:
    """Where the AMQP queue is; ``exchange`` empty = the default exchange."""

    host: str = "127.0.0.1"
    port: int = 5672
    vhost: str = "/"
    user: str = "guest"
    password: str = field(default="guest", repr=False)
    queue: str = DEFAULT_QUEUE
    exchange: str = ""
    heartbeat: int = 30

    def describe(self) -> str:
        vhost = self.vhost if self.vhost.startswith("/") else "/" + self.vhost
        via = f" via exchange {self.exchange!r}" if self.exchange else ""
        return f"amqp://{self.host}:{self.port}{vhost} queue {self.queue!r}{via}"


@dataclass(frozen=True)
class WakeupConfig:
    """The wake-up source and the slow fallback poll.

    ``source`` "off" keeps plain polling at ``[polling] interval``; otherwise
    rounds run every ``fallback_interval`` seconds and a message runs the
    matching job at once.
    """

    source: str = "off"
    fallback_interval: float = DEFAULT_FALLBACK_INTERVAL
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    redis: RedisWakeupConfig = RedisWakeupConfig()
    amqp: AmqpWakeupConfig = AmqpWakeupConfig()

    @property
    def enabled(self) -> bool:
        return self.source != "off"

    def polling_interval(self, normal: float) -> float:
        """Seconds between polling rounds: ``fallback_interval`` when wake-up is on."""
        return self.fallback_interval if self.enabled else normal


def _port(table: _Table, key: str, default: int) -> int:
    port: int = table.positive(key, int, default)
    if port > 65535:
        raise table.error(key, f"must be a TCP port, not {port}")
    return port


def _password_file(table: _Table, key: str) -> str | None:
    path = table.path(key, None)
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
    except OSError as exc:
        raise table.error(key, f"cannot read {path}: {exc.strerror}") from None


def _no_mix(table: _Table, url_key: str, keys: tuple[str, ...]) -> None:
    if url_key in table.data:
        for key in keys:
            if key in table.data:
                raise table.error(key, f"give either {table.key(url_key)} or {table.key(key)}, not both")


def _split_url(
    table: _Table, key: str, url: str, scheme: str, note: str, host: str, port: int
) -> tuple[SplitResult, str, int]:
    """``url`` split, with its host and port (defaults where it has none)."""
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise table.error(key, f"must start with {scheme}://{note}, not {url!r}")
    try:
        return parts, parts.hostname or host, parts.port or port
    except ValueError as exc:
        raise table.error(key, f"bad address: {exc}") from None


def _redis(table: _Table) -> RedisWakeupConfig:
    _no_mix(table, "redis_url", ("redis_host", "redis_port", "redis_db"))
    host, port, db, username, password = "127.0.0.1", 6379, 0, "", ""
    url = table.get("redis_url", str, "")
    if url:
        parts, host, port = _split_url(table, "redis_url", url, "redis", "", host, port)
        path = parts.path.strip("/")
        if path:
            if not path.isdigit():
                raise table.error("redis_url", f"database must be a number, not {path!r}")
            db = int(path)
        username = unquote(parts.username or "")
        password = unquote(parts.password or "")
    else:
        host = table.get("redis_host", str, host)
        port = _port(table, "redis_port", port)
        db = table.get("redis_db", int, 0)
        if db < 0:
            raise table.error("redis_db", f"must not be negative, not {db}")
    from_file = _password_file(table, "redis_password_file")
    if from_file is not None:
        if password:
            raise table.error("redis_password_file", "the password is already in redis_url")
        password = from_file
    channel = table.get("redis_channel", str, DEFAULT_CHANNEL)
    if not channel:
        raise table.error("redis_channel", "must not be empty")
    if not host:
        raise table.error("redis_url" if url else "redis_host", "no host given")
    return RedisWakeupConfig(host=host, port=port, db=db, channel=channel, username=username, password=password)


def _amqp(table: _Table) -> AmqpWakeupConfig:
    _no_mix(table, "amqp_url", ("amqp_host", "amqp_port", "amqp_vhost", "amqp_user"))
    host, port, vhost, user, password = "127.0.0.1", 5672, "/", "guest", "guest"
    url = table.get("amqp_url", str, "")
    if url:
        parts, host, port = _split_url(
            table, "amqp_url", url, "amqp", " (amqps is not supported)", host, port
        )
        # RabbitMQ's URI spec: the path is the url-encoded vhost, "%2F" is "/"
        if parts.path not in ("", "/"):
            vhost = unquote(parts.path[1:])
        if parts.username is not None:
            user = unquote(parts.username)
            password = unquote(parts.password or "")
    else:
        host = table.get("amqp_host", str, host)
        port = _port(table, "amqp_port", port)
        vhost = table.get("amqp_vhost", str, vhost)
        user = table.get("amqp_user", str, user)
    from_file = _password_file(table, "amqp_password_file")
    if from_file is not None:
        if url and urlsplit(url).password:
            raise table.error("amqp_password_file", "the password is already in amqp_url")
        password = from_file
    queue = table.get("amqp_queue", str, DEFAULT_QUEUE)
    if not queue or queue.startswith("amq."):
        raise table.error("amqp_queue", f"must be a non-empty name not starting with 'amq.', not {queue!r}")
    exchange = table.get("amqp_exchange", str, "")
    if exchange.startswith("amq."):
        raise table.error("amqp_exchange", f"names starting with 'amq.' are reserved: {exchange!r}")
    heartbeat = table.positive("amqp_heartbeat", int, 30)
    if not host:
        raise table.error("amqp_url" if url else "amqp_host", "no host given")
    return AmqpWakeupConfig(
        host=host, port=port, vhost=vhost, user=user, password=password,
        queue=queue, exchange=exchange, heartbeat=heartbeat,
    )


def parse_wakeup_table(
    table: Mapping[str, Any] | None, source_path: str | Path, base: Path | None = None
) -> WakeupConfig:
    """Validate the ``[wakeup]`` table (None or empty = wake-up off).

    Relative ``*_password_file`` paths are resolved against ``base``, by
    default the folder of ``source_path``. Unknown keys are refused.

    :raises ConfigError: naming ``source_path``, the key ``wakeup.<key>`` and the problem.
    """
    source = str(source_path)
    if base is None:
        base = Path(source).resolve().parent if source and not source.startswith("<") else Path.cwd()
    if table is not None and not isinstance(table, Mapping):
        raise ConfigError(source, "wakeup", "expected a table")
    data = _Table(source, "wakeup", table or {}, base)
    kind = data.get("source", str, "off")
    if kind not in SOURCES:
        raise data.error("source", f"must be one of {', '.join(repr(s) for s in SOURCES)}, not {kind!r}")
    fallback = data.positive("fallback_interval", float, DEFAULT_FALLBACK_INTERVAL)
    backoff_initial = data.positive("backoff_initial", float, 1.0)
    backoff_max = data.positive("backoff_max", float, 60.0)
    if backoff_max < backoff_initial:
        raise data.error("backoff_max", f"must not be below backoff_initial ({backoff_initial})")
    redis = _redis(data)
    amqp = _amqp(data)
    data.finish()
    return WakeupConfig(
        source=kind,
        fallback_interval=fallback,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        redis=redis,
        amqp=amqp,
    )
