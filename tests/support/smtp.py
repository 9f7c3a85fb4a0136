"""A real SMTP server, in-process, on 127.0.0.1 and a free port.

Built from Twisted's server classes (:class:`twisted.mail.smtp.ESMTP` through
an :class:`~twisted.mail.smtp.SMTPFactory`, with an
:class:`~twisted.mail.smtp.IMessageDelivery` that stores every message), so
the client's SMTP conversation is the real thing. Received messages are kept
in :attr:`SMTPSink.messages` as :class:`ReceivedMail` (envelope + parsed
:class:`email.message.EmailMessage`).

``refuse`` makes the server answer every RCPT with 550, to test delivery
failures.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.mail import smtp
from zope.interface import implementer


@dataclass(frozen=True)
class ReceivedMail:
    """One message the sink accepted."""

    sender: str
    recipient: str
    raw: bytes
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return part.get_content()  # type: ignore[no-any-return]


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, sink: "SMTPSink", sender: str, recipient: str) -> None:
        self.sink = sink
        self.sender = sender
        self.recipient = recipient
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> Deferred[None]:
        raw = b"\r\n".join(self.lines) + b"\r\n"
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        self.sink._received(ReceivedMail(self.sender, self.recipient, raw, parsed))  # type: ignore[arg-type]
        return succeed(None)

    def connectionLost(self) -> None:
        self.lines = []


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, sink: "SMTPSink") -> None:
        self.sink = sink

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> None:
        return None

    def validateFrom(self, helo: Any, origin: smtp.Address) -> smtp.Address:
        self._from = str(origin)
        return origin

    def validateTo(self, user: smtp.User) -> Any:
        if self.sink.refuse:
            raise smtp.SMTPBadRcpt(user)
        sender = getattr(self, "_from", "")
        recipient = str(user.dest)
        return lambda: _Message(self.sink, sender, recipient)


class _Factory(smtp.SMTPFactory):
    protocol = smtp.ESMTP

    def __init__(self, sink: "SMTPSink") -> None:
        super().__init__()
        self.sink = sink

    def buildProtocol(self, addr: Any) -> smtp.ESMTP:
        protocol = super().buildProtocol(addr)
        protocol.delivery = _Delivery(self.sink)
        protocol.host = b"sink.test"
        return protocol


class SMTPSink:
    """Listen with :meth:`start`; read :attr:`messages`; :meth:`stop` at the end."""

    def __init__(self) -> None:
        self.messages: list[ReceivedMail] = []
        self.refuse = False
        self.port = 0
        self._listening: Any = None
        self._waiters: list[tuple[int, Deferred[list[ReceivedMail]]]] = []

    def start(self, reactor: Any) -> int:
        self._listening = reactor.listenTCP(0, _Factory(self), interface="127.0.0.1")
        self.port = self._listening.getHost().port
        return self.port

    def stop(self) -> Deferred[Any]:
        listening, self._listening = self._listening, None
        return listening.stopListening() if listening else succeed(None)

    def _received(self, mail: ReceivedMail) -> None:
        self.messages.append(mail)
        ready = [w for w in self._waiters if len(self.messages) >= w[0]]
        self._waiters = [w for w in self._waiters if w not in ready]
        for _, d in ready:
            d.callback(list(self.messages))

    def wait_for(self, count: int) -> Deferred[list[ReceivedMail]]:
        """Fires when at least ``count`` messages were received."""
        if len(self.messages) >= count:
            return succeed(list(self.messages))
        d: Deferred[list[ReceivedMail]] = Deferred()
        self._waiters.append((count, d))
        return d

    def to(self, recipient: str) -> list[ReceivedMail]:
        return [mail for mail in self.messages if mail.recipient == recipient]
