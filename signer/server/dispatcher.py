"""Turns each decoded request into a response, whatever happens.

The dispatcher is the server's :class:`~signer.protocol.transport.IRequestHandler`.
It routes a request to the matching operation, runs blocking work off the
reactor thread, and turns every failure into a well-formed empty answer plus
exactly one log event: the legacy server died on a bad request, ours answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from signer.protocol import codec
from signer.protocol.transport import IRequestHandler
from signer.server.errors import RequestRefused

T = TypeVar("T")
#: Runs a blocking callable elsewhere (a thread in production) and returns a Deferred.
BlockingRunner = Callable[..., "Deferred[Any]"]


@dataclass
class ServedCounters:
    """How many requests were answered with a payload, refused, or failed by a bug."""

    served: int = 0
    refused: int = 0
    failed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def bytes_on_wire(request: codec.Request, payload_length: int) -> int:
    """Bytes of the request frame plus the answer frame carrying ``payload_length``
    bytes (START/ACK/NAK bytes and resent frames not counted)."""
    inner = codec.LENGTH_PREFIX * codec.FIELD_COUNT
    asked = codec.REQUEST_HEADER_LENGTH + sum(len(f) for f in request.fields())
    answer = codec.RESPONSE_HEADER_LENGTH + payload_length
    return codec.frame_size(inner + asked) + codec.frame_size(inner + answer)


@dataclass(frozen=True)
class Operations:
    """What the server can do, one callable per request kind.

    ``sign_x509``, ``sign_openpgp`` and ``sync_time`` are blocking and run
    through the blocking runner; ``revoke`` returns a Deferred itself (it
    spawns xdelta and hands its CRL work to threads). ``sign_openpgp`` is None
    when no OpenPGP key is configured.
    """

    sign_x509: Callable[[codec.SignX509Request], bytes]
    revoke: Callable[[codec.RevokeRequest], "Deferred[bytes]"]
    sync_time: Callable[[codec.NulRequest], None]
    sign_openpgp: Callable[[codec.SignOpenPGPRequest], bytes] | None = None


@implementer(IRequestHandler)
class Dispatcher:
    """Answers every request: a payload when served, an empty field 1 when not."""

    log = Logger()

    def __init__(
        self,
        operations: Operations,
        clock: IReactorTime,
        run_blocking: BlockingRunner,
    ) -> None:
        self._operations = operations
        self._clock = clock
        self._run_blocking = run_blocking
        self.counters = ServedCounters()

    def handle(self, request: codec.Request) -> "Deferred[codec.Response]":
        """Serve ``request``; the Deferred never fails."""
        started = self._clock.seconds()
        result: Deferred[bytes] = maybeDeferred(self._route, request)

        def answered(payload: bytes) -> codec.Response:
            outcome = "served" if payload or isinstance(request, codec.NulRequest) else "empty"
            self._count(request, outcome)
            self.log.info(
                "{kind} request {outcome}: {size} bytes answered in {ms:.1f} ms"
                " ({bytes_on_wire} bytes on the wire)",
                kind=request.kind,
                outcome=outcome,
                size=len(payload),
                ms=(self._clock.seconds() - started) * 1000,
                bytes_on_wire=bytes_on_wire(request, len(payload)),
            )
            return codec.make_response(request, payload)

        def refused(failure: Failure) -> codec.Response:
            if failure.check(RequestRefused):
                error = failure.value
                assert isinstance(error, RequestRefused)  # what check() just matched
                self._count(request, "refused")
                self.log.warn(
                    "{kind} request refused: {reason} ({ms:.1f} ms)",
                    kind=request.kind,
                    outcome="refused",
                    reason=error.reason,
                    ms=(self._clock.seconds() - started) * 1000,
                    bytes_on_wire=bytes_on_wire(request, 0),
                )
            else:
                self._count(request, "failed")
                self.log.failure(
                    "{kind} request failed by an internal error; answering empty",
                    failure,
                    kind=request.kind,
                )
            return codec.make_response(request, b"")

        result.addCallbacks(answered, refused)
        return result  # type: ignore[return-value]

    def _count(self, request: codec.Request, outcome: str) -> None:
        if outcome == "refused":
            self.counters.refused += 1
        elif outcome == "failed":
            self.counters.failed += 1
        else:
            self.counters.served += 1
        key = f"{request.kind}:{outcome}"
        self.counters.by_kind[key] = self.counters.by_kind.get(key, 0) + 1

    def _route(self, request: codec.Request) -> "Deferred[bytes]":
        operations = self._operations
        if isinstance(request, codec.NulRequest):
            return self._run_blocking(operations.sync_time, request).addCallback(lambda _: b"")
        if isinstance(request, codec.SignX509Request):
            return self._run_blocking(operations.sign_x509, request)
        if isinstance(request, codec.SignOpenPGPRequest):
            if operations.sign_openpgp is None:
                raise RequestRefused("no OpenPGP key is configured on this signer")
            return self._run_blocking(operations.sign_openpgp, request)
        if isinstance(request, codec.RevokeRequest):
            return operations.revoke(request)
        raise RequestRefused(f"unsupported request type {type(request).__name__}")
