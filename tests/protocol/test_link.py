"""The sans-IO link machines: conversations, timeouts, NAK/resend, corruption,
garbage, restarts, and replay of the legacy transcripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.protocol import codec
from signer.protocol.link import (
    ACK_BYTE,
    DEADLINE_STEP,
    NAK_BYTE,
    START_BYTE,
    Action,
    CancelDeadline,
    CancelTimer,
    Deliver,
    Failed,
    InitiatorLink,
    LinkBusy,
    LinkReset,
    LinkTimeout,
    LinkTimeouts,
    Notice,
    ResponderLink,
    Sent,
    SetDeadline,
    SetTimer,
    TooManyResends,
    Write,
)

NUL = codec.NulRequest(b"120420182026.49")
NUL_FRAME = codec.encode_request(NUL)
NUL_ANSWER = codec.encode_response(codec.NulResponse())
SIGN = codec.SignX509Request(csr=b"-----BEGIN CERTIFICATE REQUEST-----\n" + b"\x02\x10\x11" * 300)
SIGN_FRAME = codec.encode_request(SIGN)
SIGN_ANSWER = codec.encode_response(codec.SignX509Response(b"\x02cert\x10\x11" * 200))
TIMEOUTS = LinkTimeouts()


def written(actions: Iterable[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Write))


def delivered(actions: Iterable[Action]) -> list[Deliver]:
    return [a for a in actions if isinstance(a, Deliver)]


def failures(actions: Iterable[Action]) -> list[Failed]:
    return [a for a in actions if isinstance(a, Failed)]


def timers(actions: Iterable[Action]) -> list[float]:
    return [a.seconds for a in actions if isinstance(a, SetTimer)]


def initiator_waiting_for_response(frame: bytes = NUL_FRAME) -> InitiatorLink:
    link = InitiatorLink()
    link.send(frame)
    link.data_received(ACK_BYTE)
    link.data_received(ACK_BYTE)
    assert link.state == "awaiting_response_start"
    return link


def initiator_receiving(frame: bytes = NUL_FRAME) -> InitiatorLink:
    link = initiator_waiting_for_response(frame)
    assert written(link.data_received(START_BYTE)) == ACK_BYTE
    assert link.state == "receiving"
    return link


def responder_receiving() -> ResponderLink:
    link = ResponderLink()
    assert written(link.data_received(START_BYTE)) == ACK_BYTE
    return link


def responder_processing(frame: bytes = NUL_FRAME) -> tuple[ResponderLink, int]:
    link = responder_receiving()
    actions = link.data_received(frame)
    (deliver,) = delivered(actions)
    assert link.state == "processing"
    return link, deliver.exchange


# -- the happy paths -------------------------------------------------------------


def test_initiator_full_conversation() -> None:
    """START, ACK, frame, ACK, peer START, our ACK, response frame, our ACK,
    delivery; each wait arms the timer with its configured timeout."""
    link = InitiatorLink()
    actions = link.send(NUL_FRAME)
    assert written(actions) == START_BYTE
    assert timers(actions) == [TIMEOUTS.start_ack]
    actions = link.data_received(ACK_BYTE)
    assert written(actions) == NUL_FRAME
    assert timers(actions) == [TIMEOUTS.frame_ack]
    actions = link.data_received(ACK_BYTE)
    assert written(actions) == b""
    assert timers(actions) == [TIMEOUTS.response_start]
    actions = link.data_received(START_BYTE)
    assert written(actions) == ACK_BYTE
    assert timers(actions) == [TIMEOUTS.frame_byte]
    actions = link.data_received(NUL_ANSWER)
    assert written(actions) == ACK_BYTE
    assert any(isinstance(a, CancelTimer) for a in actions)
    (deliver,) = delivered(actions)
    assert deliver.strings == (bytes([1, 0, 0, 0]), b"", b"", b"")
    assert link.is_idle()
    assert link.stats.frames_out == 1 and link.stats.frames_in == 1
    assert link.stats.bytes_out == 1 + len(NUL_FRAME) + 2
    assert link.stats.bytes_in == 3 + len(NUL_ANSWER)


def test_responder_full_conversation() -> None:
    """The mirror image: ACK the START, ACK the intact frame and deliver it;
    the answer goes out as START, then the frame once ACKed; Sent on the final ACK."""
    link = ResponderLink()
    assert written(link.data_received(START_BYTE)) == ACK_BYTE
    actions = link.data_received(SIGN_FRAME)
    assert written(actions) == ACK_BYTE
    (deliver,) = delivered(actions)
    assert codec.decode_request_fields(deliver.strings) == SIGN
    actions = link.answer(deliver.exchange, SIGN_ANSWER)
    assert written(actions) == START_BYTE
    assert timers(actions) == [TIMEOUTS.start_ack]
    actions = link.data_received(ACK_BYTE)
    assert written(actions) == SIGN_ANSWER
    actions = link.data_received(ACK_BYTE)
    assert [a for a in actions if isinstance(a, Sent)] == [Sent(deliver.exchange)]
    assert link.is_idle()


def test_frames_split_into_single_bytes() -> None:
    """Frames fed one byte at a time (0x02/0x10/0x11 inside included) arrive whole."""
    link = responder_receiving()
    actions: list[Action] = []
    for byte in SIGN_FRAME:
        actions += link.data_received(bytes([byte]))
    (deliver,) = delivered(actions)
    assert codec.decode_request_fields(deliver.strings) == SIGN


def test_control_bytes_in_one_chunk() -> None:
    """The legacy server's ACK and START may arrive in one read."""
    link = InitiatorLink()
    link.send(NUL_FRAME)
    link.data_received(ACK_BYTE)
    actions = link.data_received(ACK_BYTE + START_BYTE + NUL_ANSWER)
    assert written(actions) == ACK_BYTE + ACK_BYTE
    assert len(delivered(actions)) == 1
    assert link.is_idle()


def test_initiator_refuses_second_send_while_busy() -> None:
    """Only one exchange at a time: sending while busy is a programming error."""
    link = InitiatorLink()
    link.send(NUL_FRAME)
    with pytest.raises(LinkBusy):
        link.send(NUL_FRAME)


# -- timeouts --------------------------------------------------------------------


@pytest.mark.parametrize(
    "prepare, expected_state, message",
    [
        (lambda l: None, "awaiting_start_ack", "no ACK for our START"),
        (lambda l: l.data_received(ACK_BYTE), "awaiting_frame_ack", "no ACK/NAK"),
        (lambda l: l.data_received(ACK_BYTE * 2), "awaiting_response_start", "no START"),
        (lambda l: l.data_received(ACK_BYTE * 2 + START_BYTE), "receiving", "frame stalled"),
        (
            lambda l: l.data_received(ACK_BYTE * 2 + START_BYTE + NUL_ANSWER[:10]),
            "receiving",
            "10 byte(s) received",
        ),
    ],
)
def test_initiator_every_timeout(prepare, expected_state: str, message: str) -> None:
    """A silent responder at each stage: the timer fails the exchange with
    LinkTimeout, the machine is idle and the next exchange succeeds."""
    link = InitiatorLink()
    link.send(NUL_FRAME)
    prepare(link)
    assert link.state == expected_state
    actions = link.timer_expired()
    (failed,) = failures(actions)
    assert isinstance(failed.error, LinkTimeout)
    assert message in str(failed.error)
    assert failed.exchange == 1
    assert link.is_idle()
    assert link.stats.timeouts == 1
    # recovered: a full exchange works
    link.send(NUL_FRAME)
    actions = link.data_received(ACK_BYTE + ACK_BYTE + START_BYTE + NUL_ANSWER)
    assert len(delivered(actions)) == 1


def _responder_at(stage: str) -> ResponderLink:
    if stage.startswith("receiving"):
        link = ResponderLink()
        link.data_received(START_BYTE + (NUL_FRAME[:7] if stage.endswith("partial") else b""))
        return link
    link, exchange = responder_processing()
    link.answer(exchange, NUL_ANSWER)
    if stage == "awaiting_frame_ack":
        link.data_received(ACK_BYTE)
    return link


@pytest.mark.parametrize(
    "stage", ["receiving", "receiving partial", "awaiting_start_ack", "awaiting_frame_ack"]
)
def test_responder_every_timeout(stage: str) -> None:
    """A silent initiator at each stage: LinkTimeout, back to idle, then a
    new conversation is served."""
    link = _responder_at(stage)
    assert link.state == stage.split()[0]
    (failed,) = failures(link.timer_expired())
    assert isinstance(failed.error, LinkTimeout)
    assert link.is_idle()
    assert link.stats.timeouts == 1
    actions = link.data_received(START_BYTE + NUL_FRAME)
    assert len(delivered(actions)) == 1


def test_responder_idle_has_no_timer() -> None:
    """Idle and processing states wait for the peer or upper layer without a
    timer; a stray timer event there changes nothing."""
    link = ResponderLink()
    assert link.timer_expired() == []
    link, exchange = responder_processing()
    assert link.timer_expired() == []
    assert link.state == "processing"


def test_receive_timer_restarts_on_every_chunk() -> None:
    """The frame_byte timeout bounds silence between chunks, not the whole frame."""
    link = initiator_receiving()
    for index in range(len(NUL_ANSWER) - 1):
        assert timers(link.data_received(NUL_ANSWER[index : index + 1])) == [TIMEOUTS.frame_byte]


# -- NAK and resend --------------------------------------------------------------


def test_initiator_resends_same_frame_on_nak_without_start() -> None:
    """NAK makes the initiator write the same frame again (no new START)."""
    link = InitiatorLink()
    link.send(NUL_FRAME)
    link.data_received(ACK_BYTE)
    actions = link.data_received(NAK_BYTE)
    assert written(actions) == NUL_FRAME
    assert timers(actions) == [TIMEOUTS.frame_ack]
    assert link.stats.naks_received == 1 and link.stats.resends == 1
    actions = link.data_received(ACK_BYTE + START_BYTE + NUL_ANSWER)
    assert len(delivered(actions)) == 1


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("bound", [0, 1, 5])
def test_resend_bound(role: str, bound: int) -> None:
    """After max_resends resends the next NAK fails the exchange with
    TooManyResends, and the machine is idle again."""
    timeouts = LinkTimeouts(max_resends=bound)
    if role == "initiator":
        link: InitiatorLink | ResponderLink = InitiatorLink(timeouts)
        link.send(NUL_FRAME)
        frame = NUL_FRAME
    else:
        link = ResponderLink(timeouts)
        (deliver,) = delivered(link.data_received(START_BYTE + NUL_FRAME))
        link.answer(deliver.exchange, NUL_ANSWER)
        frame = NUL_ANSWER
    assert written(link.data_received(ACK_BYTE)) == frame
    for _ in range(bound):
        assert written(link.data_received(NAK_BYTE)) == frame
    actions = link.data_received(NAK_BYTE)
    assert written(actions) == b""
    (failed,) = failures(actions)
    assert isinstance(failed.error, TooManyResends)
    assert link.is_idle()
    assert link.stats.resends == bound and link.stats.naks_received == bound + 1


def test_damaged_frame_is_nakked_after_quiet_then_resend_delivered() -> None:
    """A frame with a bad XOR byte gets a NAK once the line is quiet; the
    resent intact frame is delivered."""
    link = initiator_receiving()
    damaged = bytearray(NUL_ANSWER)
    damaged[-9] ^= 0x01
    actions = link.data_received(bytes(damaged))
    assert written(actions) == b"" and delivered(actions) == []
    assert timers(actions) == [TIMEOUTS.resync_quiet]
    assert link.state == "resyncing"
    actions = link.timer_expired()
    assert written(actions) == NAK_BYTE
    assert link.stats.naks_sent == 1
    actions = link.data_received(NUL_ANSWER)
    assert written(actions) == ACK_BYTE
    assert len(delivered(actions)) == 1


def test_tail_of_damaged_frame_is_not_taken_for_the_resend() -> None:
    """A length prefix damaged to a smaller value completes the frame early;
    the rest of it is drained before the NAK, so the resend parses cleanly."""
    link = responder_receiving()
    damaged = bytearray(SIGN_FRAME)
    damaged[1] ^= 0x02  # outer length shrinks by 512
    assert len(damaged) > 700
    actions = link.data_received(bytes(damaged[:600]))
    assert link.state == "resyncing"
    actions += link.data_received(bytes(damaged[600:]))
    assert written(actions) == b""
    assert written(link.timer_expired()) == NAK_BYTE
    (deliver,) = delivered(link.data_received(SIGN_FRAME))
    assert codec.decode_request_fields(deliver.strings) == SIGN


def test_nak_bound_for_incoming_frames() -> None:
    """A frame that stays damaged: after max_resends NAKs the receiver gives
    up (TooManyResends), discards the line until quiet, then is idle."""
    timeouts = LinkTimeouts(max_resends=2)
    link = ResponderLink(timeouts)
    link.data_received(START_BYTE)
    damaged = NUL_FRAME[:-1] + b"X"
    for _ in range(2):
        link.data_received(damaged)
        assert written(link.timer_expired()) == NAK_BYTE
    actions = link.data_received(damaged)
    (failed,) = failures(actions)
    assert isinstance(failed.error, TooManyResends)
    assert link.state == "flushing"
    assert link.timer_expired() and link.is_idle()
    assert link.stats.naks_sent == 2


# -- corruption at every byte position -------------------------------------------


def vector_frames(vectors_dir: Path) -> list[tuple[str, bytes, bytes]]:
    frames = []
    for path in sorted(vectors_dir.glob("*.json")):
        record = json.loads(path.read_text())
        frames.append(
            (
                path.stem,
                bytes.fromhex(record["request"]["frame_hex"]),
                bytes.fromhex(record["response"]["frame_hex"]),
            )
        )
    return frames


def drive_corrupted(link: InitiatorLink | ResponderLink, corrupted: bytes) -> str:
    """Feed a corrupted frame, then let timers fire until the machine settles.

    :returns: "nak" when it asked for a resend, "reset" when it gave up.
    """
    actions = link.data_received(corrupted)
    history = list(actions)
    for _ in range(3):
        assert delivered(history) == [], "a corrupted frame was delivered"
        if link.state == "receiving" and written(actions) == NAK_BYTE:
            return "nak"
        if link.is_idle():
            assert failures(history), "went idle without reporting the failure"
            assert written(history) == b""
            return "reset"
        actions = link.timer_expired()
        history += actions
    raise AssertionError(f"machine did not settle, state {link.state}")


@pytest.mark.parametrize("flip", [0x01, 0x80, 0xFF])
def test_corruption_at_each_byte_position_responder(vectors_dir: Path, flip: int) -> None:
    """Every byte of a real request frame, damaged in turn: the responder
    NAKs or resets, never delivers wrong data, never raises; after a NAK the
    intact resend is delivered, after a reset a new conversation works."""
    name, frame, _ = next(f for f in vector_frames(vectors_dir) if f[0].startswith("04_"))
    for index in range(len(frame)):
        link = responder_receiving()
        corrupted = bytearray(frame)
        corrupted[index] ^= flip
        outcome = drive_corrupted(link, bytes(corrupted))
        if outcome == "nak":
            actions = link.data_received(frame)
        else:
            actions = link.data_received(START_BYTE + frame)
        (deliver,) = delivered(actions)
        assert codec.encode_frame(deliver.strings) == frame, index


@pytest.mark.parametrize("flip", [0x01, 0x80, 0xFF])
def test_corruption_at_each_byte_position_initiator(vectors_dir: Path, flip: int) -> None:
    """Every byte of a real response frame, damaged in turn, at the initiator:
    NAK or reset (with the failure reported), never a wrong delivery."""
    name, request, response = next(
        f for f in vector_frames(vectors_dir) if f[0].startswith("02_")
    )
    outcomes = set()
    for index in range(len(response)):
        link = initiator_receiving(request)
        corrupted = bytearray(response)
        corrupted[index] ^= flip
        outcome = drive_corrupted(link, bytes(corrupted))
        outcomes.add(outcome)
        if outcome == "nak":
            (deliver,) = delivered(link.data_received(response))
            assert codec.encode_frame(deliver.strings) == response, index
            assert link.is_idle()
    assert "nak" in outcomes


def test_corrupted_length_prefix_to_oversized_resets() -> None:
    """A length prefix above the maximum fails the exchange at once (before
    buffering), the rest of the frame is discarded until the line is quiet."""
    link = ResponderLink(max_frame_length=1000)
    link.data_received(START_BYTE)
    actions = link.data_received(b"\x7f\x00\x00" + b"\x02" * 50)
    (failed,) = failures(actions)
    assert isinstance(failed.error, LinkReset)
    assert "oversized" in str(failed.error)
    assert written(actions) == b""
    # the tail of the huge frame keeps coming; 0x02 inside must not be a START
    assert written(link.data_received(b"\x02\x10" * 100)) == b""
    assert link.state == "flushing"
    link.timer_expired()
    assert link.is_idle()
    assert link.stats.garbage_bytes == 53 + 200
    assert len(delivered(link.data_received(START_BYTE + NUL_FRAME))) == 1


def test_babbling_line_after_damaged_frame_gives_up() -> None:
    """A line that never goes quiet after a damaged frame: once more than the
    maximum frame length was discarded the exchange fails (LinkReset) instead
    of waiting forever for quiet."""
    link = ResponderLink(max_frame_length=100)
    link.data_received(START_BYTE)
    link.data_received(NUL_FRAME[:-1] + b"!")
    assert link.state == "resyncing"
    actions: list[Action] = []
    for _ in range(10):
        actions += link.data_received(b"\x00" * 20)
    (failed,) = failures(actions)
    assert isinstance(failed.error, LinkReset) and "babbling" in str(failed.error)
    assert written(actions) == b""
    link.timer_expired()
    assert link.is_idle()
    assert link.stats.garbage_bytes == 200


# -- garbage ---------------------------------------------------------------------


def test_responder_discards_and_counts_garbage_before_start() -> None:
    """Line noise before START is discarded and counted; the request after it is served."""
    link = ResponderLink()
    actions = link.data_received(b"noise\x00\xff" + START_BYTE + NUL_FRAME)
    assert written(actions) == ACK_BYTE + ACK_BYTE
    assert link.stats.garbage_bytes == 7
    assert any(isinstance(a, Notice) and a.fields.get("count") == 7 for a in actions)
    assert len(delivered(actions)) == 1


def test_initiator_discards_garbage_in_every_wait() -> None:
    """Bytes other than the awaited control byte are counted as garbage and
    do not disturb the conversation (a NAK is not an ACK for our START)."""
    link = InitiatorLink()
    assert link.data_received(b"xx") and link.stats.garbage_bytes == 2
    link.send(NUL_FRAME)
    actions = link.data_received(b"a" + NAK_BYTE + ACK_BYTE)
    assert written(actions) == NUL_FRAME
    link.data_received(b"bc" + ACK_BYTE)
    link.data_received(b"def" + START_BYTE)
    actions = link.data_received(NUL_ANSWER + b"tail")
    assert len(delivered(actions)) == 1
    assert link.stats.garbage_bytes == 2 + 2 + 2 + 3 + 4


# -- restarts ----------------------------------------------------------------------


def test_responder_recovers_from_initiator_restarting_mid_frame() -> None:
    """Half a frame, silence (the initiator died), then a fresh START and
    frame: the stalled exchange times out and the new one is served."""
    link = ResponderLink(LinkTimeouts(frame_byte=0.5))
    link.data_received(START_BYTE + NUL_FRAME[:20])
    (failed,) = failures(link.timer_expired())
    assert failed.exchange is None and isinstance(failed.error, LinkTimeout)
    actions = link.data_received(START_BYTE + NUL_FRAME)
    assert written(actions) == ACK_BYTE + ACK_BYTE
    assert len(delivered(actions)) == 1


@pytest.mark.parametrize("stage", ["processing", "awaiting_start_ack", "awaiting_frame_ack"])
def test_responder_start_while_busy_means_initiator_restarted(stage: str) -> None:
    """A START while computing or sending an answer: the old exchange fails
    (LinkReset), the START is ACKed at once, the new request is delivered and
    a late answer to the old exchange is dropped."""
    link, old = responder_processing()
    if stage != "processing":
        link.answer(old, NUL_ANSWER)
    if stage == "awaiting_frame_ack":
        link.data_received(ACK_BYTE)
    assert link.state == stage
    actions = link.data_received(START_BYTE)
    (failed,) = failures(actions)
    assert failed.exchange == old and isinstance(failed.error, LinkReset)
    assert written(actions) == ACK_BYTE
    (deliver,) = delivered(link.data_received(SIGN_FRAME))
    assert deliver.exchange != old
    late = link.answer(old, NUL_ANSWER)
    assert written(late) == b"" and any(isinstance(a, Notice) for a in late)
    assert written(link.answer(deliver.exchange, SIGN_ANSWER)) == START_BYTE


def test_initiator_takes_start_as_lost_ack() -> None:
    """When the ACK of our frame is lost but the responder's START arrives,
    the initiator proceeds to receive the response."""
    link = InitiatorLink()
    link.send(NUL_FRAME)
    link.data_received(ACK_BYTE)
    actions = link.data_received(b"\xfe" + START_BYTE)
    assert written(actions) == ACK_BYTE
    assert len(delivered(link.data_received(NUL_ANSWER))) == 1


def test_initiator_ignores_late_start_when_idle() -> None:
    """A responder answering after we gave up gets no ACK: the START is garbage."""
    link = InitiatorLink()
    assert written(link.data_received(START_BYTE + NUL_ANSWER)) == b""
    assert link.is_idle()


def test_abort_fails_exchange_and_returns_to_idle() -> None:
    """abort() (connection lost, caller cancelled) reports the exchange and resets."""
    link = initiator_waiting_for_response()
    actions = link.abort(LinkReset("bye"))
    (failed,) = failures(actions)
    assert str(failed.error) == "bye"
    assert any(isinstance(a, CancelTimer) for a in actions)
    assert link.is_idle()
    assert link.abort(LinkReset("again")) == []


# -- legacy transcripts ----------------------------------------------------------------


def load_transcripts(vectors_dir: Path) -> list[dict]:
    records = [json.loads(p.read_text()) for p in sorted(vectors_dir.glob("*.json"))]
    assert len(records) >= 11
    return records


def test_responder_replays_legacy_client_transcripts(vectors_dir: Path) -> None:
    """Feeding the legacy client's bytes (c2s chunks, in order) into our
    responder, answering with the recorded response: we send exactly the
    bytes the legacy server sent (s2c), and deliver the recorded request."""
    for record in load_transcripts(vectors_dir):
        link = ResponderLink()
        request = bytes.fromhex(record["request"]["frame_hex"])
        response = bytes.fromhex(record["response"]["frame_hex"])
        ours = b""
        got: list[Deliver] = []
        for chunk in record["chunks"]:
            if chunk["dir"] != "c2s":
                continue
            actions = link.data_received(bytes.fromhex(chunk["hex"]))
            ours += written(actions)
            for deliver in delivered(actions):
                got.append(deliver)
                ours += written(link.answer(deliver.exchange, response))
        legacy = b"".join(bytes.fromhex(c["hex"]) for c in record["chunks"] if c["dir"] == "s2c")
        assert ours == legacy, record["name"]
        assert [codec.encode_frame(d.strings) for d in got] == [request]
        assert link.is_idle(), record["name"]
        assert link.stats.garbage_bytes == 0


def test_initiator_replays_legacy_server_transcripts(vectors_dir: Path) -> None:
    """Feeding the legacy server's bytes (s2c chunks) into our initiator
    after it sent the recorded request: we send exactly what the legacy
    client sent (c2s) and deliver the recorded response."""
    for record in load_transcripts(vectors_dir):
        link = InitiatorLink()
        request = bytes.fromhex(record["request"]["frame_hex"])
        response = bytes.fromhex(record["response"]["frame_hex"])
        ours = written(link.send(request))
        got: list[Deliver] = []
        for chunk in record["chunks"]:
            if chunk["dir"] != "s2c":
                continue
            actions = link.data_received(bytes.fromhex(chunk["hex"]))
            ours += written(actions)
            got += delivered(actions)
        legacy = b"".join(bytes.fromhex(c["hex"]) for c in record["chunks"] if c["dir"] == "c2s")
        assert ours == legacy, record["name"]
        assert [codec.encode_frame(d.strings) for d in got] == [response]
        assert link.is_idle()


# -- the frame deadline ------------------------------------------------------------------


class Timed:
    """Runs a link machine in simulated time, without a reactor or tasks.

    Remembers when the wait timer and the frame deadline are due (from the
    SetTimer/CancelTimer/SetDeadline/CancelDeadline actions) and fires
    whichever is due first as :meth:`advance` moves the time on.
    """

    def __init__(self, link: InitiatorLink | ResponderLink) -> None:
        self.link = link
        self.now = 0.0
        self.timer_at: float | None = None
        self.deadline_at: float | None = None
        self.generation = 0
        self.fired: list[tuple[float, str]] = []

    def apply(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            if isinstance(action, SetTimer):
                self.timer_at = self.now + action.seconds
            elif isinstance(action, CancelTimer):
                self.timer_at = None
            elif isinstance(action, SetDeadline):
                self.deadline_at = self.now + action.seconds
                self.generation = action.generation
            elif isinstance(action, CancelDeadline):
                self.deadline_at = None
        return actions

    def feed(self, data: bytes) -> list[Action]:
        return self.apply(self.link.data_received(data))

    def advance(self, seconds: float) -> list[Action]:
        end = self.now + seconds
        actions: list[Action] = []
        while True:
            due = [
                (at, kind)
                for at, kind in ((self.timer_at, "timer"), (self.deadline_at, "deadline"))
                if at is not None and at <= end + 1e-9
            ]
            if not due:
                break
            self.now, kind = min(due)
            self.fired.append((self.now, kind))
            if kind == "timer":
                self.timer_at = None
                actions += self.apply(self.link.timer_expired())
            else:
                self.deadline_at = None
                actions += self.apply(self.link.deadline_expired(self.generation))
        self.now = end
        return actions


def with_length(frame: bytes, outer: int) -> bytes:
    """``frame`` with its outer length prefix replaced (a damaged prefix)."""
    return outer.to_bytes(3, "big") + frame[3:]


def trickle_starts(timed: Timed, interval: float, rounds: int = 50) -> list[Action]:
    """A peer that retries its START every ``interval`` seconds (it never got
    the ACK of its frame) until the machine reports a failure."""
    actions: list[Action] = []
    for _ in range(rounds):
        actions += timed.advance(interval)
        if failures(actions):
            return actions
        actions += timed.feed(START_BYTE)
    return actions


@pytest.mark.parametrize("frame_byte", [5.0, 30.0])
def test_responder_wedge_trickling_starts_hit_the_frame_deadline(frame_byte: float) -> None:
    """A request whose length prefix claims 1000 bytes more than arrive (and
    whose last byte is lost, so it does not end with the magic, which would
    get a NAK), then the peer's START retries every frame_byte - 1 s (each
    re-arms the silence timer): the frame deadline fails the reception with a LinkTimeout naming
    the seconds and the bytes, the machine is idle, the next START is ACKed at
    once and a good request is delivered."""
    timeouts = LinkTimeouts(frame_byte=frame_byte, min_rate=1000)
    timed = Timed(ResponderLink(timeouts))
    assert written(timed.feed(START_BYTE)) == ACK_BYTE
    claimed = len(NUL_FRAME) - 12 + 1000
    timed.feed(with_length(NUL_FRAME, claimed)[:-1])
    actions = trickle_starts(timed, frame_byte - 1)
    (failed,) = failures(actions)
    assert isinstance(failed.error, LinkTimeout)
    message = str(failed.error)
    assert "frame did not complete within" in message
    # 47 frame bytes and the START byte that came in before the deadline
    assert f"(received {len(NUL_FRAME)} of {claimed + 12} bytes" in message
    # failed by the deadline, not by silence, and soon after frame_byte
    assert all(kind == "deadline" for _, kind in timed.fired)
    failed_at = timed.fired[-1][0]
    assert frame_byte < failed_at <= frame_byte + DEADLINE_STEP + 1e-6
    assert f"within {failed_at:g} s" in message
    assert timed.link.is_idle()
    assert timed.timer_at is None and timed.deadline_at is None
    assert timed.link.stats.timeouts == 1
    # the peer's next START gets its ACK at once, then its frame goes through
    timed.advance(frame_byte - 1 - (timed.now % (frame_byte - 1)))
    assert written(timed.feed(START_BYTE)) == ACK_BYTE
    (deliver,) = delivered(timed.feed(NUL_FRAME))
    assert codec.decode_request_fields(deliver.strings) == NUL


def test_responder_wedge_after_a_lost_byte() -> None:
    """The linksim scenario: one byte of the request is lost, so the frame
    ends with its magic one byte short of its length. Like the legacy
    receivers, the responder takes that as damaged once the line is quiet
    (resync_quiet, then resync_quiet again before the NAK), well before the
    sender's 5 s wait for ACK/NAK ends; the resend is delivered."""
    timeouts = LinkTimeouts(frame_byte=30.0)
    timed = Timed(ResponderLink(timeouts))
    timed.feed(START_BYTE + NUL_FRAME[:20] + NUL_FRAME[21:])
    actions = timed.advance(2 * timeouts.resync_quiet + 1e-6)
    assert written(actions) == NAK_BYTE
    assert timed.link.state == "receiving"
    assert failures(actions) == []
    (deliver,) = delivered(timed.feed(NUL_FRAME))
    assert codec.decode_request_fields(deliver.strings) == NUL


def test_initiator_wedge_trickling_bytes_hit_the_frame_deadline() -> None:
    """The initiator receiving a response whose length prefix claims more
    than arrives, with lone 0x02 bytes every frame_byte - 1 s: the request
    fails with the deadline's LinkTimeout, and the next request's whole
    conversation (its START ACKed, the responder's START ACKed by us, the
    response delivered) works."""
    timed = Timed(InitiatorLink())
    timed.apply(timed.link.send(NUL_FRAME))
    timed.feed(ACK_BYTE + ACK_BYTE)
    assert written(timed.feed(START_BYTE)) == ACK_BYTE
    timed.feed(with_length(NUL_ANSWER, 2000)[:-1])
    actions = trickle_starts(timed, TIMEOUTS.frame_byte - 1)
    (failed,) = failures(actions)
    assert failed.exchange == 1
    assert isinstance(failed.error, LinkTimeout)
    assert f"received {len(NUL_ANSWER)} of 2012 bytes" in str(failed.error)
    assert timed.link.is_idle() and timed.deadline_at is None and timed.timer_at is None
    assert written(timed.apply(timed.link.send(NUL_FRAME))) == START_BYTE
    assert written(timed.feed(ACK_BYTE)) == NUL_FRAME
    timed.feed(ACK_BYTE)
    assert written(timed.feed(START_BYTE)) == ACK_BYTE
    (deliver,) = delivered(timed.feed(NUL_ANSWER))
    assert deliver.exchange == 2


def test_deadline_before_the_length_prefix_is_known() -> None:
    """Two bytes of a frame, then lone bytes every few seconds: the length
    is never known, and the deadline still ends the reception."""
    timed = Timed(ResponderLink(LinkTimeouts(frame_byte=10.0)))
    timed.feed(START_BYTE + b"\x00")
    actions = timed.advance(9) + timed.feed(b"\x00")
    assert timed.link.state == "receiving"
    actions += timed.advance(9)
    (failed,) = failures(actions)
    assert "received 2 (length unknown) bytes" in str(failed.error)
    assert timed.link.is_idle()


@pytest.mark.parametrize("role", ["initiator", "responder"])
def test_slow_but_steady_frame_completes(role: str) -> None:
    """A 60 kB frame arriving 1 s after its ACK at 2% above min_rate, in 20 ms
    chunks, takes ten times frame_byte and is delivered: the deadline keeps
    being earned by the bytes that arrive."""
    timeouts = LinkTimeouts(frame_byte=5.0, min_rate=1000)
    if role == "responder":
        timed = Timed(ResponderLink(timeouts))
        timed.feed(START_BYTE)
        frame = codec.encode_request(codec.SignX509Request(csr=b"x" * 60000))
    else:
        timed = Timed(InitiatorLink(timeouts))
        timed.apply(timed.link.send(NUL_FRAME))
        timed.feed(ACK_BYTE + ACK_BYTE + START_BYTE)
        frame = codec.encode_response(codec.SignX509Response(b"y" * 60000))
    timed.advance(1.0)
    chunk = 1020 * 20 // 1000  # bytes per 20 ms at 1020 bytes/s
    actions: list[Action] = []
    for offset in range(0, len(frame), chunk):
        actions += timed.advance(0.02)
        actions += timed.feed(frame[offset : offset + chunk])
    assert failures(actions) == []
    assert len(delivered(actions)) == 1
    assert timed.now > 10 * timeouts.frame_byte
    assert any(kind == "deadline" for _, kind in timed.fired)  # it was checked
    assert timed.deadline_at is None


def test_frame_slower_than_min_rate_fails() -> None:
    """The same frame at 90% of min_rate: it fails once the grace of
    frame_byte is used up (after about 41 s), not at the first byte gap."""
    timeouts = LinkTimeouts(frame_byte=5.0, min_rate=1000)
    timed = Timed(ResponderLink(timeouts))
    timed.feed(START_BYTE)
    frame = codec.encode_request(codec.SignX509Request(csr=b"x" * 60000))
    timed.advance(1.0)
    actions: list[Action] = []
    for offset in range(0, len(frame), 18):
        actions += timed.advance(0.02)
        if failures(actions):
            break
        actions += timed.feed(frame[offset : offset + 18])
    (failed,) = failures(actions)
    assert "frame did not complete within" in str(failed.error)
    assert 40 <= timed.now <= 43
    assert delivered(actions) == []


def test_stale_deadline_is_ignored() -> None:
    """A deadline expiry whose generation was replaced or cancelled changes
    nothing: in idle, in processing, and in receiving the resend after a NAK
    (which started a deadline of its own)."""
    link = ResponderLink()
    assert link.deadline_expired(0) == []
    actions = link.data_received(START_BYTE)
    (first,) = [a for a in actions if isinstance(a, SetDeadline)]
    assert first.seconds == TIMEOUTS.frame_byte
    actions = link.data_received(NUL_FRAME)
    assert any(isinstance(a, CancelDeadline) for a in actions)
    assert link.state == "processing"
    assert link.deadline_expired(first.generation) == []
    assert link.state == "processing"
    link.abort(LinkReset("restart"))
    assert link.deadline_expired(first.generation) == [] and link.is_idle()
    # damaged frame, NAK: the resend has a new deadline; the old one is stale
    actions = link.data_received(START_BYTE)
    (old,) = [a for a in actions if isinstance(a, SetDeadline)]
    link.data_received(NUL_FRAME[:-1] + b"!")
    actions = link.timer_expired()
    assert written(actions) == NAK_BYTE
    (new,) = [a for a in actions if isinstance(a, SetDeadline)]
    assert new.generation != old.generation and new.seconds == TIMEOUTS.frame_byte
    link.data_received(NUL_FRAME[:10])
    assert link.deadline_expired(old.generation) == []
    assert link.state == "receiving"
    assert len(delivered(link.data_received(NUL_FRAME[10:]))) == 1


def test_babbling_line_while_resyncing_hits_the_deadline() -> None:
    """After a damaged frame, a byte every 50 ms (never quiet for the NAK,
    far below the babble byte bound): the deadline fails the exchange, the
    machine is idle and serves the next START."""
    timed = Timed(ResponderLink(LinkTimeouts(frame_byte=5.0)))
    timed.feed(START_BYTE + NUL_FRAME[:-1] + b"!")
    assert timed.link.state == "resyncing"
    actions: list[Action] = []
    for _ in range(400):
        actions += timed.advance(0.05)
        if failures(actions):
            break
        actions += timed.feed(b"\x00")
    (failed,) = failures(actions)
    assert isinstance(failed.error, LinkTimeout)
    assert "did not go quiet" in str(failed.error)
    assert written(actions) == b""
    assert timed.fired[-1] == (pytest.approx(5.0 + DEADLINE_STEP), "deadline")
    assert timed.link.is_idle() and timed.timer_at is None
    # every byte after the damaged frame was discarded and counted
    stats = timed.link.stats
    assert stats.garbage_bytes == stats.bytes_in - 1 - len(NUL_FRAME) > 100
    assert written(timed.feed(START_BYTE)) == ACK_BYTE


def test_babbling_line_while_flushing_ends_at_the_deadline() -> None:
    """After an oversized length prefix the line is flushed until quiet; a
    byte every 50 ms would keep it flushing forever: the deadline returns the
    machine to idle (the failure was reported once, at the oversized prefix)."""
    timed = Timed(ResponderLink(LinkTimeouts(frame_byte=5.0), max_frame_length=1000))
    actions = timed.feed(START_BYTE + b"\x7f\x00\x00")
    assert len(failures(actions)) == 1 and timed.link.state == "flushing"
    for _ in range(400):
        actions += timed.advance(0.05)
        if timed.link.is_idle():
            break
        actions += timed.feed(b"\x00")
    assert timed.link.is_idle()
    assert len(failures(actions)) == 1
    assert any(
        isinstance(a, Notice) and "still not quiet" in str(a.fields.get("reason"))
        for a in actions
    )
    assert timed.fired[-1] == (pytest.approx(5.0 + DEADLINE_STEP), "deadline")
    assert timed.deadline_at is None and timed.timer_at is None


@pytest.mark.parametrize("min_rate", [0, -1, True, "fast"])
def test_min_rate_must_be_positive(min_rate: object) -> None:
    """min_rate is validated like the timeouts."""
    with pytest.raises(ValueError, match="min_rate"):
        LinkTimeouts(min_rate=min_rate)  # type: ignore[arg-type]


# -- never raises ----------------------------------------------------------------------

EVENT = st.one_of(
    st.binary(max_size=64).map(lambda b: ("bytes", b)),
    st.sampled_from([START_BYTE, ACK_BYTE, NAK_BYTE, NUL_FRAME, NUL_ANSWER]).map(
        lambda b: ("bytes", b)
    ),
    st.just(("timer", b"")),
    st.just(("deadline", b"")),
    st.just(("send", b"")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENT, max_size=40))
def test_machines_never_raise_on_arbitrary_input(events: list[tuple[str, bytes]]) -> None:
    """Arbitrary bytes, timer expiries and sends in any order: both machines
    only ever return actions, and every delivered frame is an intact one."""
    initiator = InitiatorLink(max_frame_length=4096)
    responder = ResponderLink(max_frame_length=4096)
    generations = {id(initiator): 0, id(responder): 0}
    last_exchange = 0
    for kind, data in events:
        for link in (initiator, responder):
            if kind == "bytes":
                actions = link.data_received(data)
            elif kind == "timer":
                actions = link.timer_expired()
            elif kind == "deadline":
                actions = link.deadline_expired(generations[id(link)])
            elif isinstance(link, InitiatorLink):
                actions = link.send(NUL_FRAME) if link.is_idle() else []
            else:
                actions = link.answer(last_exchange, NUL_ANSWER)
            for action in actions:
                if isinstance(action, SetDeadline):
                    generations[id(link)] = action.generation
            for deliver in delivered(actions):
                last_exchange = deliver.exchange
                assert codec.parse_frame(codec.encode_frame(deliver.strings)) == deliver.strings
