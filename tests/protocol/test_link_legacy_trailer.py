"""The legacy receivers' trailer rule, as our link state machines follow it.

Observed in the legacy CommModule (interop rehearsal against client.pl and
server.pl): a receiver takes a block as complete when it holds exactly
``outer length + 12`` bytes, and NAKs a block that does not fit its length but
ends with ``rie4Ech7``. A sender waits 5 s for ACK/NAK after its frame and
resends on NAK; without either it dies (server.pl after it already signed, so
the client's retry made it sign a second certificate). So a frame whose length
prefix was damaged upwards (or that lost a byte) must get a NAK well within
those 5 s, and a magic that merely occurs inside a frame must not.
"""

from __future__ import annotations

from typing import Iterable

from signer.protocol import codec
from signer.protocol.link import (
    ACK_BYTE,
    NAK_BYTE,
    START_BYTE,
    Action,
    Deliver,
    Failed,
    InitiatorLink,
    LinkTimeouts,
    ResponderLink,
    SetTimer,
    Write,
)

#: what the legacy senders wait for ACK/NAK after a frame (seconds)
LEGACY_FRAME_ACK_WAIT = 5.0

#: server.pl writes 30-byte chunks (SendIt's $mtu) with a pause after each
LEGACY_SERVER_CHUNK = 30

NUL_REQUEST = codec.encode_request(codec.NulRequest(b"120422062026.13"))
SIGN_RESPONSE = codec.encode_response(
    codec.SignX509Response(b"-----BEGIN CERTIFICATE-----\nMIIC" + b"A" * 900 + b"\n")
)


def written(actions: Iterable[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Write))


def delivered(actions: Iterable[Action]) -> list[Deliver]:
    return [a for a in actions if isinstance(a, Deliver)]


def failures(actions: Iterable[Action]) -> list[Failed]:
    return [a for a in actions if isinstance(a, Failed)]


def timers(actions: Iterable[Action]) -> list[float]:
    return [a.seconds for a in actions if isinstance(a, SetTimer)]


def damaged_upwards(frame: bytes, extra: int = 0x010000) -> bytes:
    """``frame`` with a bit of its length prefix flipped so it claims more."""
    outer = int.from_bytes(frame[:3], "big") | extra
    assert outer > int.from_bytes(frame[:3], "big")
    return outer.to_bytes(3, "big") + frame[3:]


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_initiator_naks_legacy_response_with_length_damaged_upwards() -> None:
    """A response arriving as server.pl sends it (30-byte chunks) whose length
    prefix claims more bytes than come: once the line is quiet after the
    magic, the initiator NAKs (no failure reported), within the legacy
    sender's 5 s; server.pl's resend is then delivered and ACKed."""
    timeouts = LinkTimeouts()
    link = InitiatorLink(timeouts)
    link.send(NUL_REQUEST)
    link.data_received(ACK_BYTE + ACK_BYTE)
    assert written(link.data_received(START_BYTE)) == ACK_BYTE
    actions: list[Action] = []
    for chunk in chunks(damaged_upwards(SIGN_RESPONSE), LEGACY_SERVER_CHUNK):
        actions += link.data_received(chunk)
    assert link.state == "receiving"
    # the last chunk ended with the magic: only a short quiet is awaited
    assert timers(actions)[-1] == timeouts.resync_quiet
    actions = link.timer_expired()
    assert link.state == "resyncing"
    assert failures(actions) == []
    actions = link.timer_expired()
    assert written(actions) == NAK_BYTE
    assert link.state == "receiving"
    assert 2 * timeouts.resync_quiet < LEGACY_FRAME_ACK_WAIT
    actions = []
    for chunk in chunks(SIGN_RESPONSE, LEGACY_SERVER_CHUNK):
        actions += link.data_received(chunk)
    (deliver,) = delivered(actions)
    assert codec.encode_frame(deliver.strings) == SIGN_RESPONSE
    assert written(actions) == ACK_BYTE
    assert link.is_idle()
    assert link.stats.naks_sent == 1


def test_responder_naks_legacy_request_with_length_damaged_upwards() -> None:
    """A request as client.pl sends it (one burst) with its length prefix
    damaged upwards: NAK after the quiet, no failure, the resend delivered."""
    timeouts = LinkTimeouts()
    link = ResponderLink(timeouts)
    assert written(link.data_received(START_BYTE)) == ACK_BYTE
    actions = link.data_received(damaged_upwards(NUL_REQUEST))
    assert timers(actions) == [timeouts.resync_quiet]
    actions = link.timer_expired() + link.timer_expired()
    assert written(actions) == NAK_BYTE
    assert failures(actions) == []
    actions = link.data_received(NUL_REQUEST)
    (deliver,) = delivered(actions)
    assert codec.decode_request_fields(deliver.strings) == codec.NulRequest(b"120422062026.13")
    assert written(actions) == ACK_BYTE


def test_magic_inside_a_frame_at_a_chunk_boundary_is_not_taken_for_its_end() -> None:
    """A payload containing the magic, split right after it: the short quiet
    timer is armed, but the next chunk arrives before it fires, the normal
    silence timer is armed again and the intact frame is delivered, no NAK."""
    timeouts = LinkTimeouts()
    payload = b"-----BEGIN CERTIFICATE-----\n" + codec.MAGIC + b"\nmore\n"
    frame = codec.encode_response(codec.SignX509Response(payload))
    cut = frame.index(codec.MAGIC) + len(codec.MAGIC)
    assert cut < len(frame) - codec.TRAILER_LENGTH
    link = InitiatorLink(timeouts)
    link.send(NUL_REQUEST)
    link.data_received(ACK_BYTE + ACK_BYTE + START_BYTE)
    first = link.data_received(frame[:cut])
    assert timers(first) == [timeouts.resync_quiet]
    second = link.data_received(frame[cut:])
    (deliver,) = delivered(second)
    assert codec.encode_frame(deliver.strings) == frame
    assert written(first + second) == ACK_BYTE
    assert link.stats.naks_sent == 0


def test_frame_without_magic_at_its_end_still_stalls_on_silence() -> None:
    """A frame cut short before its magic is not covered by the rule: the
    silence timer (frame_byte) is armed and its expiry fails the exchange."""
    timeouts = LinkTimeouts()
    link = ResponderLink(timeouts)
    link.data_received(START_BYTE)
    actions = link.data_received(NUL_REQUEST[:-3])
    assert timers(actions) == [timeouts.frame_byte]
    actions = link.timer_expired()
    (failed,) = failures(actions)
    assert "frame stalled" in str(failed.error)
    assert link.is_idle()
    assert written(actions) == b""
