"""Integration: both link protocols on the real ``SerialPort`` over a real
pseudo-terminal pair (socat), on the real reactor."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from zope.interface import implementer

from signer.protocol import codec
from signer.protocol.link import START_BYTE, LinkTimeouts
from signer.protocol.serialconfig import SerialConfig
from signer.protocol.transport import (
    ClientLinkProtocol,
    IRequestHandler,
    LinkTimeout,
    ServerLinkProtocol,
    open_serial,
)
from tests.support.pty import PtyPair, pty_pair
from tests.support.responder import ScriptedHandler

REPO = Path(__file__).resolve().parents[2]
NUL = codec.NulRequest(b"120420182026.49")
GUARD = 20  # seconds: no pty test may hang longer


@pytest.fixture
def pair() -> Iterator[PtyPair]:
    with pty_pair() as created:
        yield created


class Ends:
    """Our client on ``pair.a`` and our server on ``pair.b``, real SerialPorts."""

    def __init__(
        self,
        pair: PtyPair,
        handler: IRequestHandler,
        client_timeouts: LinkTimeouts = LinkTimeouts(),
        server_timeouts: LinkTimeouts = LinkTimeouts(),
    ) -> None:
        self.server = ServerLinkProtocol(handler, reactor, server_timeouts)
        self.server_port = open_serial(self.server, SerialConfig(pair.b), reactor)
        self.client = ClientLinkProtocol(reactor, client_timeouts)
        self.client_port = open_serial(self.client, SerialConfig(pair.a), reactor)

    def request(self, message: codec.Request) -> Deferred[codec.Response]:
        return self.client.request(message).addTimeout(GUARD, reactor)

    @inlineCallbacks
    def close(self):  # type: ignore[no-untyped-def]
        yield self.client.close()
        yield self.server.close()


@inlineCallbacks
def wait_until(predicate: Callable[[], bool], timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        yield deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.inlineCallbacks
def test_nul_round_trip(pair: PtyPair):  # type: ignore[no-untyped-def]
    """A NUL request answered over a real pty; both sides end idle with no
    garbage and the server counts one answered request."""
    ends = Ends(pair, ScriptedHandler())
    try:
        response = yield ends.request(NUL)
        assert response == codec.NulResponse()
        yield wait_until(lambda: ends.server.requests_served == 1)
        assert ends.client.last_success is not None
        assert ends.client.stats.garbage_bytes == 0 == ends.server.stats.garbage_bytes
        assert ends.client.is_idle() and ends.server.is_idle()
    finally:
        yield ends.close()


@pytest_twisted.inlineCallbacks
def test_sign_request_from_legacy_vector(pair: PtyPair, vectors_dir: Path):  # type: ignore[no-untyped-def]
    """The recorded multi-kB sign request of vector 04 reaches the server
    unchanged and the recorded certificate comes back."""
    record = json.loads((vectors_dir / "04_sign_x509_server_san.json").read_text())
    request = codec.decode_request(bytes.fromhex(record["request"]["frame_hex"]))
    response_frame = bytes.fromhex(record["response"]["frame_hex"])
    certificate = codec.parse_frame(response_frame)[1]
    handler = ScriptedHandler(certificate)
    ends = Ends(pair, handler)
    try:
        response = yield ends.request(request)
        assert handler.requests == [request]
        assert codec.encode_request(handler.requests[0]) == bytes.fromhex(
            record["request"]["frame_hex"]
        )
        assert codec.encode_response(response) == response_frame
    finally:
        yield ends.close()


@pytest_twisted.inlineCallbacks
def test_megabyte_response(pair: PtyPair):  # type: ignore[no-untyped-def]
    """A 1 MiB answer (a big CRL) crosses the pty intact, followed by a NUL."""
    payload = bytes(range(256)) * 4096
    ends = Ends(pair, ScriptedHandler(payload))
    try:
        started = time.monotonic()
        response = yield ends.request(codec.RevokeRequest(crl_sha1=codec.EMPTY_SHA1.encode()))
        elapsed = time.monotonic() - started
        assert response == codec.RevokeResponse(payload)
        assert elapsed < 10, f"1 MiB took {elapsed:.1f} s over an unpaced pty"
        assert (yield ends.request(NUL)) == codec.NulResponse()
    finally:
        yield ends.close()


@pytest_twisted.inlineCallbacks
def test_recovery_from_garbage_and_half_frame(pair: PtyPair):  # type: ignore[no-untyped-def]
    """Line noise and a half frame from a 'crashed' client: the server counts
    the garbage, times the half frame out, and serves the next request."""
    ends = Ends(pair, ScriptedHandler(), server_timeouts=LinkTimeouts(frame_byte=0.3))
    try:
        frame = codec.encode_request(NUL)
        ends.client_port.write(b"line noise" + START_BYTE + frame[:20])
        yield wait_until(lambda: ends.server.stats.timeouts == 1)
        assert ends.server.is_idle()
        assert ends.server.stats.garbage_bytes == len(b"line noise")
        assert (yield ends.request(NUL)) == codec.NulResponse()
    finally:
        yield ends.close()


@implementer(IRequestHandler)
class SlowOnce:
    """Never answers the first request; answers the rest at once."""

    def __init__(self) -> None:
        self.calls = 0

    def handle(self, request: codec.Request) -> Deferred[codec.Response]:
        self.calls += 1
        if self.calls == 1:
            return Deferred()
        return ScriptedHandler(b"ok").handle(request)


@pytest_twisted.inlineCallbacks
def test_recovery_from_client_giving_up(pair: PtyPair):  # type: ignore[no-untyped-def]
    """The server takes too long: the client fails that request with
    LinkTimeout; its next START resets the server at once and is served."""
    handler = SlowOnce()
    ends = Ends(pair, handler, client_timeouts=LinkTimeouts(response_start=0.3))
    try:
        with pytest.raises(LinkTimeout):
            yield ends.request(codec.SignX509Request(csr=b"csr"))
        started = time.monotonic()
        response = yield ends.request(codec.SignX509Request(csr=b"csr"))
        assert response == codec.SignX509Response(b"ok")
        assert time.monotonic() - started < 3.0  # not the 20 s START timeout
        assert ends.server.stats.resets == 1
    finally:
        yield ends.close()


@pytest_twisted.inlineCallbacks
def test_open_serial_applies_line_settings(pair: PtyPair):  # type: ignore[no-untyped-def]
    """open_serial passes every setting of the SerialConfig to the port."""
    config = SerialConfig(pair.a, baudrate=9600, bytesize=7, parity="E", stopbits=2)
    client = ClientLinkProtocol(reactor)
    port = open_serial(client, config, reactor)
    try:
        settings = port._serial.get_settings()
        assert (settings["baudrate"], settings["bytesize"], settings["parity"]) == (9600, 7, "E")
        assert settings["stopbits"] == 2 and not settings["xonxoff"] and not settings["rtscts"]
    finally:
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_scripted_responder_process(pair: PtyPair):  # type: ignore[no-untyped-def]
    """python -m tests.support.responder serves our client from another process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.responder", "--device", pair.b, "--payload", "PEM"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"READY")
        client = ClientLinkProtocol(reactor)
        open_serial(client, SerialConfig(pair.a), reactor)
        assert (yield client.request(NUL).addTimeout(GUARD, reactor)) == codec.NulResponse()
        response = yield client.request(codec.SignX509Request(csr=b"c")).addTimeout(GUARD, reactor)
        assert response == codec.SignX509Response(b"PEM")
        yield client.close()
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@pytest_twisted.inlineCallbacks
def test_scripted_responder_exit_after_and_payload_file(pair: PtyPair, tmp_path: Path):  # type: ignore[no-untyped-def]
    """--payload-file supplies the canned answer; --exit-after 1 makes the
    responder exit 0 once its first answer was acknowledged."""
    answer = tmp_path / "answer.pem"
    answer.write_bytes(b"\x00\x02binary\x10\x11" * 500)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "tests.support.responder", "--device", pair.b,
            "--payload-file", str(answer), "--exit-after", "1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"READY")
        client = ClientLinkProtocol(reactor)
        open_serial(client, SerialConfig(pair.a), reactor)
        request = codec.SignOpenPGPRequest(key=b"key")
        response = yield client.request(request).addTimeout(GUARD, reactor)
        assert response == codec.SignOpenPGPResponse(answer.read_bytes())
        yield client.close()
        yield wait_until(lambda: process.poll() is not None, timeout=10)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
