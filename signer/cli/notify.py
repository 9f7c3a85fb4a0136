"""``signer notify KIND [ID]``: publish one wake-up message for the signer client.

The tiny publisher the web application (or an operator) can call after it
wrote a request row::

    signer notify emailcerts 123 --redis redis://127.0.0.1:6379
    signer notify revoke --amqp amqp://guest:guest@127.0.0.1:5672/%2F --queue signer

It publishes the canonical JSON form ``{"kind":"emailcerts","id":123}``
(``docs/wakeup.md``). Redis: ``PUBLISH channel message``; the number of
subscribers that got it is printed (0 = no client listening: the fallback
poll will find the row). AMQP: the queue (or the fanout exchange) is
declared durable exactly as the client declares it, so the message waits
for a client that is down; the publish is confirmed by the broker.

Exit codes: 0 published, 2 usage (unknown kind, bad URL), 4 the broker is
unreachable or refused the message.
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

from signer.cli.errors import EXIT_LINK_FAILURE, EXIT_OK, EXIT_USAGE, CommandError

DEFAULT_TIMEOUT = 5.0


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``signer notify``."""
    from signer.client.wakeup import KINDS

    parser = subcommands.add_parser(
        "notify",
        help="wake the signer client: publish KIND [ID] on Redis or AMQP",
        description=(
            "Publish one wake-up message for the signer client (see docs/wakeup.md): "
            "the client runs the job of KIND at once instead of at its next fallback "
            "poll. The database stays the source of truth: the message only makes the "
            "client look. Exit codes: 0 published, 2 usage, 4 broker unreachable."
        ),
    )
    parser.add_argument("kind", choices=KINDS, metavar="KIND", help=f"one of {', '.join(KINDS)}")
    parser.add_argument("row_id", nargs="?", type=int, metavar="ID", help="the row id (optional)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--redis", metavar="URL", help="redis://[:PASSWORD@]HOST[:PORT][/DB]")
    where.add_argument("--amqp", metavar="URL", help="amqp://USER:PASSWORD@HOST[:PORT]/VHOST (%%2F = /)")
    parser.add_argument("--channel", default="signer", metavar="NAME", help="Redis channel (signer)")
    parser.add_argument("--queue", default="signer", metavar="NAME", help="AMQP queue (signer)")
    parser.add_argument(
        "--exchange", default="", metavar="NAME",
        help="AMQP fanout exchange the client binds its queue to (default: none, publish to the queue)",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help=f"give up after this long (default {DEFAULT_TIMEOUT:g})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from signer.client.config import ConfigError
    from signer.client.wakeup import BadMessage, format_message
    from signer.client.wakeup_config import parse_wakeup_table

    try:
        message = format_message(args.kind, args.row_id)
    except BadMessage as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    try:
        if args.redis is not None:
            config = parse_wakeup_table(
                {"source": "redis", "redis_url": args.redis, "redis_channel": args.channel}, "--redis"
            ).redis
            receivers = publish_redis(
                config.host, config.port, config.channel, message,
                password=config.password, username=config.username, timeout=args.timeout,
            )
            print(f"published {message.decode()} on {config.describe()} ({receivers} subscribers)")
        else:
            table = {"source": "amqp", "amqp_url": args.amqp, "amqp_queue": args.queue, "amqp_exchange": args.exchange}
            amqp = parse_wakeup_table(table, "--amqp").amqp
            publish_amqp(amqp, message, timeout=args.timeout)
            print(f"published {message.decode()} on {amqp.describe()}")
    except ConfigError as exc:
        raise CommandError(f"{exc.key.split('.')[-1] if exc.key else ''}: {exc.problem}", EXIT_USAGE) from None
    return EXIT_OK


class BrokerError(CommandError):
    """The broker cannot be reached or refused the message (exit 4)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_LINK_FAILURE)


def _resp(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _read_reply(stream: Any) -> bytes:
    line: bytes = stream.readline()
    if not line.endswith(b"\r\n"):
        raise BrokerError("Redis closed the connection")
    return line[:-2]


def publish_redis(
    host: str,
    port: int,
    channel: str,
    message: bytes,
    password: str = "",
    username: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """``PUBLISH channel message`` over a fresh connection; returns the number of receivers.

    :raises BrokerError: unreachable, refused AUTH, or an error reply.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            stream = sock.makefile("rb")
            if password:
                auth = [username.encode(), password.encode()] if username else [password.encode()]
                sock.sendall(_resp(b"AUTH", *auth))
                reply = _read_reply(stream)
                if not reply.startswith(b"+"):
                    raise BrokerError(f"Redis at {host}:{port} refused AUTH: {reply[1:].decode(errors='replace')}")
            sock.sendall(_resp(b"PUBLISH", channel.encode("utf-8"), message))
            reply = _read_reply(stream)
    except OSError as exc:
        raise BrokerError(f"Redis at {host}:{port} is unreachable: {exc.strerror or exc}") from None
    if not reply.startswith(b":"):
        raise BrokerError(f"Redis at {host}:{port} answered {reply.decode(errors='replace')!r}")
    return int(reply[1:])


def publish_amqp(config: Any, message: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Publish ``message`` to the client's queue (declared durable) or fanout exchange, with confirm.

    :param config: a :class:`~signer.client.wakeup_config.AmqpWakeupConfig`.
    :raises BrokerError: unreachable, refused login, or the message was not routed.
    """
    import pika
    import pika.exceptions

    parameters = pika.ConnectionParameters(
        host=config.host,
        port=config.port,
        virtual_host=config.vhost,
        credentials=pika.PlainCredentials(config.user, config.password),
        socket_timeout=timeout,
        blocked_connection_timeout=timeout,
        stack_timeout=timeout,
        connection_attempts=1,
        client_properties={"connection_name": "signer notify"},
    )
    where = f"AMQP broker at {config.host}:{config.port} (vhost {config.vhost!r})"
    try:
        connection = pika.BlockingConnection(parameters)
    except pika.exceptions.ProbableAuthenticationError as exc:
        raise BrokerError(f"{where} refused the login of {config.user!r}: {exc}") from None
    except pika.exceptions.AMQPError as exc:
        raise BrokerError(f"{where} is unreachable: {exc!r}") from None
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue=config.queue, durable=True)
        if config.exchange:
            channel.exchange_declare(exchange=config.exchange, exchange_type="fanout", durable=True)
            channel.queue_bind(queue=config.queue, exchange=config.exchange)
        channel.basic_publish(
            exchange=config.exchange,
            routing_key="" if config.exchange else config.queue,
            body=message,
            properties=pika.BasicProperties(content_type="application/json"),
            mandatory=True,
        )
    except pika.exceptions.UnroutableError:
        raise BrokerError(f"{where}: the message was not routed to any queue") from None
    except pika.exceptions.AMQPError as exc:
        raise BrokerError(f"{where}: publishing failed: {exc!r}") from None
    finally:
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            pass
