"""The dispatcher answers every request, served or not, and logs each outcome once."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from signer.protocol import codec
from signer.protocol.transport import IRequestHandler
from signer.server.dispatcher import Dispatcher, Operations
from signer.server.errors import RequestRefused


def run_inline(function: Callable[..., Any], *args: Any) -> "Deferred[Any]":
    """Stands in for deferToThread: runs the blocking call now."""
    return maybeDeferred(function, *args)


class Recorder:
    """Operations that record their calls and answer from a script."""

    def __init__(self) -> None:
        self.calls: list[codec.Request] = []

    def sign_x509(self, request: codec.SignX509Request) -> bytes:
        self.calls.append(request)
        if request.csr == b"bad":
            raise RequestRefused("the CSR is not a PKCS#10 request")
        if request.csr == b"bug":
            raise ZeroDivisionError("a bug")
        return b"-----BEGIN CERTIFICATE-----\n"

    def sign_openpgp(self, request: codec.SignOpenPGPRequest) -> bytes:
        self.calls.append(request)
        return b"armored"

    def revoke(self, request: codec.RevokeRequest) -> "Deferred[bytes]":
        self.calls.append(request)
        if request.crl_sha1 == b"zz":
            return fail(RequestRefused("CRL hash is not 40 hex digits"))
        return succeed(b"%XDZ004%patch")

    def sync_time(self, request: codec.NulRequest) -> None:
        self.calls.append(request)
        codec.parse_nul_timestamp(request.timestamp)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make_dispatcher(recorder: Recorder, openpgp: bool = True) -> Dispatcher:
    operations = Operations(
        sign_x509=recorder.sign_x509,
        revoke=recorder.revoke,
        sync_time=recorder.sync_time,
        sign_openpgp=recorder.sign_openpgp if openpgp else None,
    )
    return Dispatcher(operations, Clock(), run_inline)


def answer(dispatcher: Dispatcher, request: codec.Request) -> codec.Response:
    results: list[codec.Response] = []
    dispatcher.handle(request).addCallback(results.append)
    assert len(results) == 1, "the dispatcher's Deferred must fire and never fail"
    return results[0]


def test_provides_request_handler(recorder: Recorder) -> None:
    """The dispatcher is what the server link protocol expects."""
    assert verifyObject(IRequestHandler, make_dispatcher(recorder))


def test_routes_each_kind(recorder: Recorder) -> None:
    """Each request kind reaches its operation and its payload comes back typed."""
    dispatcher = make_dispatcher(recorder)
    assert answer(dispatcher, codec.SignX509Request(csr=b"csr")) == codec.SignX509Response(
        b"-----BEGIN CERTIFICATE-----\n"
    )
    assert answer(dispatcher, codec.SignOpenPGPRequest(key=b"k")) == codec.SignOpenPGPResponse(b"armored")
    assert answer(dispatcher, codec.RevokeRequest(crl_sha1=b"a" * 40)) == codec.RevokeResponse(
        b"%XDZ004%patch"
    )
    assert answer(dispatcher, codec.NulRequest(b"120420182026.49")) == codec.NulResponse()
    assert [type(call) for call in recorder.calls] == [
        codec.SignX509Request,
        codec.SignOpenPGPRequest,
        codec.RevokeRequest,
        codec.NulRequest,
    ]
    assert dispatcher.counters.served == 4


def test_refusal_is_an_empty_answer_with_one_warning(recorder: Recorder) -> None:
    """A RequestRefused becomes an empty field 1 and one log event naming the reason."""
    observer = EventLoggingObserver.createWithCleanup(_Case(), globalLogPublisher)
    dispatcher = make_dispatcher(recorder)
    assert answer(dispatcher, codec.SignX509Request(csr=b"bad")) == codec.SignX509Response(b"")
    refusals = [event for event in observer if event.get("reason")]
    assert len(refusals) == 1
    assert refusals[0]["reason"] == "the CSR is not a PKCS#10 request"
    assert dispatcher.counters.refused == 1


def test_bug_is_an_empty_answer_and_a_logged_failure(recorder: Recorder) -> None:
    """An unexpected exception still answers empty; the traceback goes to the log only."""
    observer = EventLoggingObserver.createWithCleanup(_Case(), globalLogPublisher)
    dispatcher = make_dispatcher(recorder)
    assert answer(dispatcher, codec.SignX509Request(csr=b"bug")) == codec.SignX509Response(b"")
    failures = [event for event in observer if "log_failure" in event]
    assert len(failures) == 1
    assert failures[0]["log_failure"].check(ZeroDivisionError)
    assert dispatcher.counters.failed == 1
    # The next request is served normally.
    assert answer(dispatcher, codec.SignX509Request(csr=b"ok")).payload


def test_malformed_nul_timestamp_still_gets_a_nul_answer(recorder: Recorder) -> None:
    """A NUL with a bad timestamp is answered like any NUL (empty), and counted as refused."""
    dispatcher = make_dispatcher(recorder)
    assert answer(dispatcher, codec.NulRequest(b"garbage")) == codec.NulResponse()
    assert dispatcher.counters.failed + dispatcher.counters.refused == 1


def test_openpgp_without_key_is_refused(recorder: Recorder) -> None:
    """With no OpenPGP key configured the request is refused, not crashed on."""
    dispatcher = make_dispatcher(recorder, openpgp=False)
    assert answer(dispatcher, codec.SignOpenPGPRequest(key=b"k")) == codec.SignOpenPGPResponse(b"")
    assert dispatcher.counters.refused == 1


def test_revoke_refusal_from_deferred(recorder: Recorder) -> None:
    """A failing Deferred from the revocation path is an empty revoke answer."""
    dispatcher = make_dispatcher(recorder)
    assert answer(dispatcher, codec.RevokeRequest(crl_sha1=b"zz")) == codec.RevokeResponse(b"")


class _Case:
    """Minimal stand-in for a TestCase's addCleanup, collected by pytest below."""

    cleanups: list[Callable[[], None]] = []

    def addCleanup(self, function: Callable[..., Any], *args: Any) -> None:  # noqa: N802
        _Case.cleanups.append(lambda: function(*args))


@pytest.fixture(autouse=True)
def _run_cleanups() -> Any:
    yield
    while _Case.cleanups:
        _Case.cleanups.pop()()
