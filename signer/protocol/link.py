"""The link layer of the signer protocol: START/ACK/NAK state machines (sans-IO).

Two roles speak over one half-duplex line:

- the **initiator** (the client on the web host): ``START``, wait ``ACK``,
  send the request frame, wait ``ACK``/``NAK`` (resend the same frame on
  ``NAK``), wait for the responder's ``START``, ``ACK`` it, receive the
  response frame and ``ACK`` (or ``NAK``) it;
- the **responder** (the signing host): the mirror image.

The machines do no I/O. Every input (bytes from the line, the expiry of a
timer, a frame to send, an abort) returns a list of *actions* for the adapter
to carry out in order: :class:`Write`, :class:`SetTimer`, :class:`CancelTimer`,
:class:`SetDeadline`, :class:`CancelDeadline`, :class:`Deliver`,
:class:`Sent`, :class:`Failed` and :class:`Notice` (a log event). Each machine
owns two timers: the *wait* timer (:class:`SetTimer` replaces whatever wait
ran before) and, while a frame comes in, the *frame deadline*
(:class:`SetDeadline`, tagged with a generation so that a stale expiry is
recognised and ignored).

They are built with Automat's ``TypeMachineBuilder``; the state diagram is in
``docs/state-machines/link.md``. Bytes are consumed state by state: in a state
that waits for a control byte the bytes before it are garbage (discarded and
counted), the byte itself is an input, and the rest is fed again to whatever
state that input led to. While a frame is being received every byte belongs to
the frame (``0x02`` also occurs inside frames), which is buffered in one
``bytearray`` (no quadratic copying).

Recovery rules, the same for both roles:

- every wait has a timeout (:class:`LinkTimeouts`); on expiry the machine
  reports :class:`Failed` and returns to idle;
- an incoming frame must also keep up an average rate: from the ``ACK`` (or
  ``NAK``) that invites it, it may take ``frame_byte`` seconds plus
  ``1 / min_rate`` seconds for every byte that actually arrived. Bytes
  trickling in (a retried ``START`` every few seconds into a frame whose
  length prefix was damaged upwards) earn a millisecond each and cannot keep
  the receiver waiting; a long frame at line speed earns far more than it
  needs. See :func:`_frame_allowance`;
- a damaged frame (:class:`~signer.protocol.codec.FrameError`) is answered with
  ``NAK`` once the line has been quiet for ``resync_quiet`` seconds (so the tail
  of a frame whose length prefix was damaged is not taken for the resend);
  after ``max_resends`` NAKs for one frame the exchange fails;
- an oversized length prefix fails the exchange at once; what follows on the
  line is discarded until it is quiet, then the machine is idle;
- the responder takes a ``START`` while it computes an answer or waits for the
  ``ACK`` of its own frame or ``START`` as a restarted initiator: it abandons
  the answer, ``ACK``\\ s the ``START`` and receives the new request;
- the initiator takes a ``START`` while it waits for the ``ACK`` of its frame
  as that ``ACK`` lost on the line followed by the responder's ``START``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol, Union

from automat import TypeMachineBuilder

from signer.protocol import codec

START_BYTE = bytes([codec.START])
ACK_BYTE = bytes([codec.ACK])
NAK_BYTE = bytes([codec.NAK])


# -- errors ------------------------------------------------------------------


class LinkError(Exception):
    """An exchange on the serial link failed; the message says why."""


class LinkTimeout(LinkError):
    """The peer did not answer within the configured time."""


class NoResponse(LinkTimeout):
    """The responder acknowledged our request but never started its answer.

    With the legacy server this is what a request that crashes it looks like
    (it exits without answering), so the client counts it against the row.
    """


class LinkReset(LinkError):
    """The exchange was abandoned: the peer restarted, sent an oversized frame,
    flooded the line, or the caller aborted."""


class LinkLost(LinkReset):
    """The serial port was closed while the exchange was in flight."""


class TooManyResends(LinkError):
    """A frame could not be moved across intact within the resend bound."""


class LinkBusy(LinkError):
    """A frame was handed to a machine that is not idle (a programming error)."""


# -- configuration and counters -----------------------------------------------


@dataclass(frozen=True)
class LinkTimeouts:
    """Every wait of the link, in seconds, and the resend bound.

    Defaults are the legacy values where the legacy code has one.

    :ivar start_ack: after our ``START``, wait this long for ``ACK`` (legacy 20 s).
    :ivar frame_ack: after our frame, wait this long for ``ACK``/``NAK`` (legacy 5 s).
    :ivar response_start: initiator: after the request was ACKed, wait this long
        for the responder's ``START`` (legacy 120 s).
    :ivar frame_byte: while receiving a frame (from the ``ACK`` of its ``START``
        on), the longest silence allowed before the next byte. The legacy
        server pauses 1 s between ``START`` and its frame.
    :ivar resync_quiet: after a damaged frame, the quiet time on the line
        before we answer ``NAK``.
    :ivar max_resends: how many times one frame is sent again after a ``NAK``
        (and how many ``NAK``\\ s we send for one incoming frame).
    :ivar min_rate: the slowest average rate, in bytes per second, at which an
        incoming frame is still waited for: a frame (with the damaged tail
        drained after it) must be complete within ``frame_byte + n / min_rate``
        seconds of its ``ACK``/``NAK``, ``n`` being the bytes received so far.
        The default 500 is half of what 9600 baud carries (960 B/s); 115200
        baud carries 11,520 B/s, the legacy server's throttled writes ~1,700.
    """

    start_ack: float = 20.0
    frame_ack: float = 5.0
    response_start: float = 120.0
    frame_byte: float = 5.0
    resync_quiet: float = 0.1
    max_resends: int = 5
    min_rate: float = 500.0

    def __post_init__(self) -> None:
        for name in (
            "start_ack",
            "frame_ack",
            "response_start",
            "frame_byte",
            "resync_quiet",
            "min_rate",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"LinkTimeouts.{name} must be a positive number, not {value!r}")
        if not isinstance(self.max_resends, int) or self.max_resends < 0:
            raise ValueError(f"LinkTimeouts.max_resends must be >= 0, not {self.max_resends!r}")


@dataclass
class LinkStats:
    """Counters of one link (mutable; read them for logs and health)."""

    garbage_bytes: int = 0
    naks_sent: int = 0
    naks_received: int = 0
    resends: int = 0
    timeouts: int = 0
    resets: int = 0
    failures: int = 0
    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for JSON health output)."""
        return asdict(self)


# -- actions -------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """Write these bytes to the line."""

    data: bytes


@dataclass(frozen=True)
class SetTimer:
    """(Re)start the machine's single timer; call ``timer_expired`` when it fires."""

    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    """Stop the machine's timer if it runs."""


@dataclass(frozen=True)
class SetDeadline:
    """(Re)start the frame deadline, a second timer independent of the wait
    timer; when it fires call ``deadline_expired(generation)``."""

    seconds: float
    generation: int


@dataclass(frozen=True)
class CancelDeadline:
    """Stop the frame deadline if it runs."""


@dataclass(frozen=True)
class Deliver:
    """An intact frame arrived (already ACKed): its inner strings, header first.

    :ivar exchange: the exchange number (responder: pass it back to
        :meth:`ResponderLink.answer`).
    """

    strings: tuple[bytes, ...]
    exchange: int


@dataclass(frozen=True)
class Sent:
    """Our frame of ``exchange`` was ACKed by the peer."""

    exchange: int


@dataclass(frozen=True)
class Failed:
    """The exchange in flight failed; ``exchange`` is None when none had begun."""

    error: LinkError
    exchange: Optional[int]


@dataclass(frozen=True)
class Notice:
    """A log event for the adapter: level name, format string, named fields."""

    level: str
    format: str
    fields: Mapping[str, object]


Action = Union[
    Write, SetTimer, CancelTimer, SetDeadline, CancelDeadline, Deliver, Sent, Failed, Notice
]


# -- the machine core ----------------------------------------------------------


class _Inputs(Protocol):
    def send(self, frame: bytes) -> None:
        "Send ``frame`` (initiator: a request; responder: the answer)."

    def bytes_in(self, data: bytes) -> None:
        "Bytes arrived from the line."

    def start(self) -> None:
        "A START control byte was recognised."

    def ack(self) -> None:
        "An ACK control byte was recognised."

    def nak(self) -> None:
        "A NAK control byte was recognised."

    def frame_ok(self, strings: tuple[bytes, ...], excess: bytes) -> None:
        "A complete, intact frame was received."

    def frame_damaged(self, reason: str, excess: bytes) -> None:
        "A complete frame failed its checks."

    def drop(self, error: LinkError, excess: bytes) -> None:
        "Give up the exchange and discard the line until it is quiet."

    def timer_expired(self) -> None:
        "The timer set last has fired."

    def deadline_expired(self) -> None:
        "The frame deadline set last has fired."

    def too_late(self, error: LinkError) -> None:
        "The frame deadline has passed and the frame has not earned more time."

    def abort(self, error: LinkError) -> None:
        "Give up the exchange in flight now."

    def state(self) -> str:
        "The name of the current state."


@dataclass
class _Core:
    """What the transitions share: settings, the frame buffer, counters, the
    frame being sent, and the actions collected for the current input."""

    role: str
    timeouts: LinkTimeouts
    buffer: codec.FrameBuffer
    max_frame_length: int
    stats: LinkStats = field(default_factory=LinkStats)
    actions: list[Action] = field(default_factory=list)
    outgoing: bytes = b""
    sends: int = 0
    naks: int = 0
    drained: int = 0
    exchange: int = 0
    in_flight: bool = False
    # the frame deadline: bytes received since the ACK/NAK that invited the
    # frame, seconds covered by deadline timers that already fired, the
    # length of the one running now, its generation, whether it runs
    frame_bytes: int = 0
    #: the last bytes of the incoming frame so far (up to the magic's length)
    tail: bytes = b""
    deadline_spent: float = 0.0
    deadline_armed: float = 0.0
    deadline_generation: int = 0
    deadline_running: bool = False

    # helpers used by the transitions

    def write(self, data: bytes) -> None:
        self.stats.bytes_out += len(data)
        self.actions.append(Write(data))

    def set_timer(self, seconds: float) -> None:
        self.actions.append(SetTimer(seconds))

    def cancel_timer(self) -> None:
        self.actions.append(CancelTimer())

    def notice(self, level: str, fmt: str, **fields: object) -> None:
        self.actions.append(Notice(level, fmt, {"role": self.role, **fields}))

    def garbage(self, count: int, where: str) -> None:
        self.stats.garbage_bytes += count
        self.notice(
            "warn",
            "{role} link: discarded {count} garbage byte(s) while {where}",
            count=count,
            where=where,
        )

    def fail(self, error: LinkError) -> None:
        """Report the exchange (if any) as failed and forget its data."""
        self.stats.failures += 1
        if isinstance(error, LinkTimeout):
            self.stats.timeouts += 1
        elif isinstance(error, LinkReset):
            self.stats.resets += 1
        self.notice("warn", "{role} link: exchange failed: {reason}", reason=str(error))
        self.actions.append(Failed(error, self.exchange if self.in_flight else None))
        self.in_flight = False
        self.outgoing = b""
        self.buffer.clear()
        self.tail = b""

    def send_frame(self) -> None:
        self.sends += 1
        self.write(self.outgoing)
        self.set_timer(self.timeouts.frame_ack)

    def begin_receiving(self) -> None:
        self.write(ACK_BYTE)
        self.buffer.clear()
        self.tail = b""
        self.naks = 0
        self.set_timer(self.timeouts.frame_byte)
        self.start_deadline()

    def start_deadline(self) -> None:
        """Begin the deadline of a frame we just invited (ACK or NAK)."""
        self.frame_bytes = 0
        self.deadline_spent = 0.0
        self.arm_deadline(_frame_allowance(self, 0))

    def arm_deadline(self, seconds: float) -> None:
        self.deadline_generation += 1
        self.deadline_armed = seconds
        self.deadline_running = True
        self.actions.append(SetDeadline(seconds, self.deadline_generation))

    def stop_deadline(self) -> None:
        """End the frame deadline (the frame is in, or the exchange is over)."""
        if self.deadline_running:
            self.deadline_running = False
            self.deadline_generation += 1
            self.actions.append(CancelDeadline())

    def deadline_slack(self) -> float:
        """The deadline fired: the seconds the bytes received since have
        earned beyond the time already spent (<= 0: the frame is too late)."""
        self.deadline_running = False
        self.deadline_spent += self.deadline_armed
        self.deadline_armed = 0.0
        return _frame_allowance(self, self.frame_bytes) - self.deadline_spent


#: The shortest re-arm of the frame deadline (seconds, at most ``frame_byte``):
#: a frame that earns its time in small steps is checked again after this,
#: not after every millisecond it earned.
DEADLINE_STEP = 1.0


def _frame_allowance(core: _Core, received: int) -> float:
    """Seconds an incoming frame may take once ``received`` bytes are in.

    ``frame_byte + min(received, largest frame) / min_rate``: the silence
    allowance for the first byte plus the time the bytes actually received
    need at ``min_rate``. Counting the bytes that arrived rather than the
    length the prefix declares is deliberate. A length prefix with a flipped
    high bit can declare megabytes (at most ``max_frame_length``; a larger
    one is refused at once): a deadline of ``declared / min_rate`` would keep
    the line wedged for over an hour while the peer retries its ``START``,
    whereas here those lone bytes earn a few milliseconds and the frame fails
    ``frame_byte`` (plus at most :data:`DEADLINE_STEP`) seconds after its
    invitation. A genuine 8 MiB CRL at 115200 baud (~730 s) or from the
    legacy server (~1.7 kB/s, ~80 min) earns its time as it arrives. The
    price: a sender must average ``min_rate`` after the first ``frame_byte``
    seconds (configure a lower ``min_rate`` on a slower line), and a peer
    flooding the line at ``min_rate`` or more keeps one frame alive for at
    most ``frame_byte + largest frame / min_rate`` seconds.
    """
    cap = codec.frame_size(core.max_frame_length)
    return core.timeouts.frame_byte + min(received, cap) / core.timeouts.min_rate


def _deadline_extended(core: _Core) -> bool:
    """The frame deadline fired: re-arm it for the time the bytes received
    meanwhile have earned (at least :data:`DEADLINE_STEP`, or ``frame_byte``
    when shorter); False when they earned nothing beyond the time spent."""
    slack = core.deadline_slack()
    if slack <= 0:
        return False
    core.arm_deadline(max(slack, min(DEADLINE_STEP, core.timeouts.frame_byte)))
    return True


_ACK_ONLY = re.compile(re.escape(ACK_BYTE))
_START_ONLY = re.compile(re.escape(START_BYTE))
_ACK_OR_START = re.compile(b"[" + re.escape(ACK_BYTE) + re.escape(START_BYTE) + b"]")
_ACK_NAK_START = re.compile(
    b"[" + re.escape(ACK_BYTE) + re.escape(NAK_BYTE) + re.escape(START_BYTE) + b"]"
)


def _scan(
    inputs: _Inputs,
    core: _Core,
    data: bytes,
    pattern: re.Pattern[bytes],
    where: str,
) -> None:
    """Find the first control byte ``pattern`` accepts; the bytes before it are
    garbage; the byte becomes an input; the rest is fed again afterwards."""
    found = pattern.search(data)
    if found is None:
        core.garbage(len(data), where)
        return
    index = found.start()
    if index:
        core.garbage(index, where)
    byte = data[index]
    if byte == codec.START:
        inputs.start()
    elif byte == codec.ACK:
        inputs.ack()
    else:
        inputs.nak()
    rest = data[index + 1 :]
    if rest:
        inputs.bytes_in(rest)


def _ends_with_magic(core: _Core) -> bool:
    """The incomplete frame so far ends with the trailer magic."""
    return core.tail == codec.MAGIC and len(core.buffer) > 0


def _receive(inputs: _Inputs, core: _Core, data: bytes) -> None:
    """Feed frame bytes; raise the input the buffer's verdict calls for."""
    core.tail = (core.tail + data)[-len(codec.MAGIC) :]
    try:
        frame, excess = core.buffer.feed(data)
    except codec.OversizedFrame as exc:
        inputs.drop(LinkReset(f"peer sent an oversized frame: {exc}"), data)
        return
    if frame is None:
        # The legacy peers NAK a block that does not fit its length but ends
        # with the magic (a length prefix damaged upwards); they resend on
        # NAK, and die when neither ACK nor NAK comes within 5 s. So when the
        # incomplete frame ends with the magic and the line then stays quiet
        # for resync_quiet, the frame is taken as damaged (see frame_stalled).
        quiet = _ends_with_magic(core)
        core.set_timer(core.timeouts.resync_quiet if quiet else core.timeouts.frame_byte)
        return
    try:
        strings = codec.parse_frame(frame, core.max_frame_length)
    except codec.FrameError as exc:
        inputs.frame_damaged(str(exc), excess)
        return
    core.stats.frames_in += 1
    inputs.frame_ok(strings, excess)


def _feed_excess(inputs: _Inputs, excess: bytes) -> None:
    if excess:
        inputs.bytes_in(excess)


def _register_common(
    builder: TypeMachineBuilder[_Inputs, _Core],
    states: Mapping[str, Any],
) -> None:
    """Transitions both roles share: receiving, resyncing, flushing, sending."""
    idle = states["idle"]
    receiving = states["receiving"]
    resyncing = states["resyncing"]
    flushing = states["flushing"]
    awaiting_frame_ack = states["awaiting_frame_ack"]

    for name, state in states.items():
        state.upon(_Inputs.state).loop().returns(name)
        if name == "idle":
            continue

        @state.upon(_Inputs.abort).to(idle)
        def abort(inputs: _Inputs, core: _Core, error: LinkError) -> None:
            core.cancel_timer()
            core.stop_deadline()
            core.fail(error)

        @state.upon(_Inputs.drop).to(flushing)
        def drop(inputs: _Inputs, core: _Core, error: LinkError, excess: bytes) -> None:
            core.fail(error)
            core.drained = len(excess)
            core.stats.garbage_bytes += len(excess)
            core.set_timer(core.timeouts.resync_quiet)

    @idle.upon(_Inputs.abort).loop()
    def abort_idle(inputs: _Inputs, core: _Core, error: LinkError) -> None:
        pass

    @idle.upon(_Inputs.timer_expired).loop()
    def stale_timer(inputs: _Inputs, core: _Core) -> None:
        pass

    # the frame deadline runs in receiving, resyncing and flushing only; a
    # stale expiry anywhere else changes nothing
    for name, state in states.items():
        if name not in ("receiving", "resyncing", "flushing"):

            @state.upon(_Inputs.deadline_expired).loop()
            def stale_deadline(inputs: _Inputs, core: _Core) -> None:
                pass

    # receiving a frame
    @receiving.upon(_Inputs.bytes_in).loop()
    def frame_bytes(inputs: _Inputs, core: _Core, data: bytes) -> None:
        core.frame_bytes += len(data)
        _receive(inputs, core, data)

    @receiving.upon(_Inputs.frame_damaged).to(resyncing)
    def damaged(inputs: _Inputs, core: _Core, reason: str, excess: bytes) -> None:
        if core.naks >= core.timeouts.max_resends:
            inputs.drop(
                TooManyResends(
                    f"frame still damaged after {core.naks} NAK(s): {reason}"
                ),
                excess,
            )
            return
        core.notice("warn", "{role} link: damaged frame ({reason}); NAK when quiet", reason=reason)
        core.drained = len(excess)
        core.set_timer(core.timeouts.resync_quiet)

    @receiving.upon(_Inputs.timer_expired).loop()
    def frame_stalled(inputs: _Inputs, core: _Core) -> None:
        got = len(core.buffer)
        if _ends_with_magic(core):
            # the sender is done (quiet after the magic) but the length
            # prefix wants more: damaged, NAK like the legacy receivers
            inputs.frame_damaged(
                f"the frame ended with its trailer after {got} byte(s) but its "
                f"length prefix declares {core.buffer.expected}",
                b"",
            )
            return
        core.stop_deadline()
        inputs.too_late(
            LinkTimeout(
                f"frame stalled: {got} byte(s) received, then "
                f"{core.timeouts.frame_byte:g} s of silence"
            )
        )

    @receiving.upon(_Inputs.deadline_expired).to(receiving)
    def frame_deadline(inputs: _Inputs, core: _Core) -> None:
        if _deadline_extended(core):
            return
        got = len(core.buffer)
        expected = core.buffer.expected
        of = f"{got} of {expected}" if expected is not None else f"{got} (length unknown)"
        inputs.too_late(
            LinkTimeout(
                f"frame did not complete within {core.deadline_spent:g} s "
                f"(received {of} bytes; at least {core.timeouts.min_rate:g} bytes/s "
                f"expected after the first {core.timeouts.frame_byte:g} s)"
            )
        )

    @resyncing.upon(_Inputs.deadline_expired).to(resyncing)
    def resync_deadline(inputs: _Inputs, core: _Core) -> None:
        if _deadline_extended(core):
            return
        inputs.too_late(
            LinkTimeout(
                f"damaged frame: the line did not go quiet for a NAK within "
                f"{core.deadline_spent:g} s ({core.drained} byte(s) discarded)"
            )
        )

    @flushing.upon(_Inputs.deadline_expired).to(flushing)
    def flush_deadline(inputs: _Inputs, core: _Core) -> None:
        if _deadline_extended(core):
            return
        inputs.too_late(
            LinkTimeout(
                f"line still not quiet after {core.deadline_spent:g} s and "
                f"{core.drained} discarded byte(s); listening again"
            )
        )

    for overdue in (receiving, resyncing):

        @overdue.upon(_Inputs.too_late).to(idle)
        def frame_too_late(inputs: _Inputs, core: _Core, error: LinkError) -> None:
            core.cancel_timer()
            core.stats.garbage_bytes += core.drained
            core.drained = 0
            core.fail(error)

    @flushing.upon(_Inputs.too_late).to(idle)
    def flush_too_late(inputs: _Inputs, core: _Core, error: LinkError) -> None:
        # the exchange failed when flushing began: only log, do not fail again
        core.cancel_timer()
        core.notice("warn", "{role} link: {reason}", reason=str(error))
        core.drained = 0

    # after a damaged frame: discard until quiet, then NAK
    @resyncing.upon(_Inputs.bytes_in).loop()
    def resync_bytes(inputs: _Inputs, core: _Core, data: bytes) -> None:
        core.frame_bytes += len(data)
        core.drained += len(data)
        if core.drained > core.max_frame_length:
            core.stats.garbage_bytes += core.drained - len(data)
            inputs.drop(LinkReset("line kept babbling after a damaged frame"), data)
            return
        core.set_timer(core.timeouts.resync_quiet)

    @resyncing.upon(_Inputs.timer_expired).to(receiving)
    def send_nak(inputs: _Inputs, core: _Core) -> None:
        if core.drained:
            core.stats.garbage_bytes += core.drained
        core.naks += 1
        core.stats.naks_sent += 1
        core.notice(
            "warn",
            "{role} link: sent NAK {naks} (discarded {drained} trailing byte(s))",
            naks=core.naks,
            drained=core.drained,
        )
        core.drained = 0
        core.buffer.clear()
        core.tail = b""
        core.write(NAK_BYTE)
        core.set_timer(core.timeouts.frame_byte)
        core.start_deadline()

    # after an unrecoverable frame: discard until quiet, then idle
    @flushing.upon(_Inputs.bytes_in).loop()
    def flush_bytes(inputs: _Inputs, core: _Core, data: bytes) -> None:
        core.frame_bytes += len(data)
        core.drained += len(data)
        core.stats.garbage_bytes += len(data)
        core.set_timer(core.timeouts.resync_quiet)

    @flushing.upon(_Inputs.timer_expired).to(idle)
    def flushed(inputs: _Inputs, core: _Core) -> None:
        core.stop_deadline()
        core.notice(
            "info",
            "{role} link: line quiet again after discarding {drained} byte(s)",
            drained=core.drained,
        )
        core.drained = 0

    # waiting for ACK/NAK of our frame: NAK resends, shared by both roles
    @awaiting_frame_ack.upon(_Inputs.nak).loop()
    def resend(inputs: _Inputs, core: _Core) -> None:
        core.stats.naks_received += 1
        if core.sends > core.timeouts.max_resends:
            inputs.abort(
                TooManyResends(
                    f"peer NAKed our frame {core.sends} time(s); giving up"
                )
            )
            return
        core.stats.resends += 1
        core.notice(
            "warn",
            "{role} link: NAK received, resending frame ({size} bytes, resend {count})",
            size=len(core.outgoing),
            count=core.sends,
        )
        core.send_frame()

    @awaiting_frame_ack.upon(_Inputs.timer_expired).to(idle)
    def no_frame_ack(inputs: _Inputs, core: _Core) -> None:
        core.fail(
            LinkTimeout(f"no ACK/NAK for our frame within {core.timeouts.frame_ack:g} s")
        )


# -- the initiator -------------------------------------------------------------


def _build_initiator() -> Callable[[_Core], _Inputs]:
    builder = TypeMachineBuilder(_Inputs, _Core)
    idle = builder.state("idle")
    awaiting_start_ack = builder.state("awaiting_start_ack")
    awaiting_frame_ack = builder.state("awaiting_frame_ack")
    awaiting_response_start = builder.state("awaiting_response_start")
    receiving = builder.state("receiving")
    resyncing = builder.state("resyncing")
    flushing = builder.state("flushing")
    _register_common(
        builder,
        {
            "idle": idle,
            "awaiting_start_ack": awaiting_start_ack,
            "awaiting_frame_ack": awaiting_frame_ack,
            "awaiting_response_start": awaiting_response_start,
            "receiving": receiving,
            "resyncing": resyncing,
            "flushing": flushing,
        },
    )

    @idle.upon(_Inputs.send).to(awaiting_start_ack)
    def request(inputs: _Inputs, core: _Core, frame: bytes) -> None:
        core.exchange += 1
        core.in_flight = True
        core.outgoing = frame
        core.sends = 0
        core.write(START_BYTE)
        core.set_timer(core.timeouts.start_ack)

    @idle.upon(_Inputs.bytes_in).loop()
    def idle_garbage(inputs: _Inputs, core: _Core, data: bytes) -> None:
        core.garbage(len(data), "idle")

    @awaiting_start_ack.upon(_Inputs.bytes_in).loop()
    def start_ack_bytes(inputs: _Inputs, core: _Core, data: bytes) -> None:
        _scan(inputs, core, data, _ACK_ONLY, "waiting for the ACK of our START")

    @awaiting_start_ack.upon(_Inputs.ack).to(awaiting_frame_ack)
    def start_acked(inputs: _Inputs, core: _Core) -> None:
        core.send_frame()

    @awaiting_start_ack.upon(_Inputs.timer_expired).to(idle)
    def no_start_ack(inputs: _Inputs, core: _Core) -> None:
        core.fail(
            LinkTimeout(f"no ACK for our START within {core.timeouts.start_ack:g} s")
        )

    @awaiting_frame_ack.upon(_Inputs.bytes_in).loop()
    def frame_ack_bytes(inputs: _Inputs, core: _Core, data: bytes) -> None:
        _scan(inputs, core, data, _ACK_NAK_START, "waiting for the ACK of our frame")

    @awaiting_frame_ack.upon(_Inputs.ack).to(awaiting_response_start)
    def request_acked(inputs: _Inputs, core: _Core) -> None:
        core.stats.frames_out += 1
        core.outgoing = b""
        core.set_timer(core.timeouts.response_start)

    @awaiting_frame_ack.upon(_Inputs.start).to(receiving)
    def start_instead_of_ack(inputs: _Inputs, core: _Core) -> None:
        core.stats.frames_out += 1
        core.outgoing = b""
        core.notice("warn", "{role} link: START before the ACK of our frame; taking it as ACK")
        core.begin_receiving()

    @awaiting_response_start.upon(_Inputs.bytes_in).loop()
    def response_start_bytes(inputs: _Inputs, core: _Core, data: bytes) -> None:
        _scan(inputs, core, data, _START_ONLY, "waiting for the responder's START")

    @awaiting_response_start.upon(_Inputs.start).to(receiving)
    def response_start(inputs: _Inputs, core: _Core) -> None:
        core.begin_receiving()

    @awaiting_response_start.upon(_Inputs.timer_expired).to(idle)
    def no_response(inputs: _Inputs, core: _Core) -> None:
        core.fail(
            NoResponse(
                f"no START from the responder within {core.timeouts.response_start:g} s"
            )
        )

    @receiving.upon(_Inputs.frame_ok).to(idle)
    def response_received(
        inputs: _Inputs, core: _Core, strings: tuple[bytes, ...], excess: bytes
    ) -> None:
        core.write(ACK_BYTE)
        core.cancel_timer()
        core.stop_deadline()
        core.in_flight = False
        core.actions.append(Deliver(strings, core.exchange))
        _feed_excess(inputs, excess)

    return builder.build()


# -- the responder -------------------------------------------------------------


def _build_responder() -> Callable[[_Core], _Inputs]:
    builder = TypeMachineBuilder(_Inputs, _Core)
    idle = builder.state("idle")
    receiving = builder.state("receiving")
    resyncing = builder.state("resyncing")
    flushing = builder.state("flushing")
    processing = builder.state("processing")
    awaiting_start_ack = builder.state("awaiting_start_ack")
    awaiting_frame_ack = builder.state("awaiting_frame_ack")
    _register_common(
        builder,
        {
            "idle": idle,
            "receiving": receiving,
            "resyncing": resyncing,
            "flushing": flushing,
            "processing": processing,
            "awaiting_start_ack": awaiting_start_ack,
            "awaiting_frame_ack": awaiting_frame_ack,
        },
    )

    @idle.upon(_Inputs.bytes_in).loop()
    def idle_bytes(inputs: _Inputs, core: _Core, data: bytes) -> None:
        _scan(inputs, core, data, _START_ONLY, "idle (waiting for START)")

    @idle.upon(_Inputs.start).to(receiving)
    def request_start(inputs: _Inputs, core: _Core) -> None:
        core.begin_receiving()

    @receiving.upon(_Inputs.frame_ok).to(processing)
    def request_received(
        inputs: _Inputs, core: _Core, strings: tuple[bytes, ...], excess: bytes
    ) -> None:
        core.write(ACK_BYTE)
        core.cancel_timer()
        core.stop_deadline()
        core.exchange += 1
        core.in_flight = True
        core.actions.append(Deliver(strings, core.exchange))
        _feed_excess(inputs, excess)

    def restarted(inputs: _Inputs, core: _Core) -> None:
        core.cancel_timer()
        core.fail(LinkReset("initiator sent a new START: it restarted or gave up; answer abandoned"))
        core.begin_receiving()

    for busy in (processing, awaiting_start_ack, awaiting_frame_ack):
        busy.upon(_Inputs.start).to(receiving)(restarted)

    @processing.upon(_Inputs.bytes_in).loop()
    def processing_bytes(inputs: _Inputs, core: _Core, data: bytes) -> None:
        _scan(inputs, core, data, _START_ONLY, "computing an answer")

    @processing.upon(_Inputs.timer_expired).loop()
    def no_timer_while_processing(inputs: _Inputs, core: _Core) -> None:
        pass

    @processing.upon(_Inputs.send).to(awaiting_start_ack)
    def answer(inputs: _Inputs, core: _Core, frame: bytes) -> None:
        core.outgoing = frame
        core.sends = 0
        core.write(START_BYTE)
        core.set_timer(core.timeouts.start_ack)

    @awaiting_start_ack.upon(_Inputs.bytes_in).loop()
    def start_ack_bytes(inputs: _Inputs, core: _Core, data: bytes) -> None:
        _scan(inputs, core, data, _ACK_OR_START, "waiting for the ACK of our START")

    @awaiting_start_ack.upon(_Inputs.ack).to(awaiting_frame_ack)
    def start_acked(inputs: _Inputs, core: _Core) -> None:
        core.send_frame()

    @awaiting_start_ack.upon(_Inputs.timer_expired).to(idle)
    def no_start_ack(inputs: _Inputs, core: _Core) -> None:
        core.fail(
            LinkTimeout(f"no ACK for our START within {core.timeouts.start_ack:g} s")
        )

    @awaiting_frame_ack.upon(_Inputs.bytes_in).loop()
    def frame_ack_bytes(inputs: _Inputs, core: _Core, data: bytes) -> None:
        _scan(inputs, core, data, _ACK_NAK_START, "waiting for the ACK of our frame")

    @awaiting_frame_ack.upon(_Inputs.ack).to(idle)
    def answer_acked(inputs: _Inputs, core: _Core) -> None:
        core.cancel_timer()
        core.stats.frames_out += 1
        core.outgoing = b""
        core.in_flight = False
        core.actions.append(Sent(core.exchange))

    return builder.build()


_Initiator = _build_initiator()
_Responder = _build_responder()


class _Link:
    """What both facades share: feeding inputs and collecting actions."""

    role = "link"

    def __init__(
        self,
        factory: Callable[[_Core], _Inputs],
        timeouts: LinkTimeouts,
        max_frame_length: int,
    ) -> None:
        self.timeouts = timeouts
        self.max_frame_length = max_frame_length
        self._core = _Core(
            role=self.role,
            timeouts=timeouts,
            buffer=codec.FrameBuffer(max_frame_length),
            max_frame_length=max_frame_length,
        )
        self._machine = factory(self._core)

    @property
    def stats(self) -> LinkStats:
        """The link's counters."""
        return self._core.stats

    @property
    def state(self) -> str:
        """Name of the current state (see ``docs/state-machines/link.md``)."""
        return self._machine.state()

    def is_idle(self) -> bool:
        """True when no exchange is in flight and the line is settled."""
        return self.state == "idle"

    def _collect(self) -> list[Action]:
        actions, self._core.actions = self._core.actions, []
        return actions

    def data_received(self, data: bytes) -> list[Action]:
        """Bytes arrived from the line."""
        if data:
            self._core.stats.bytes_in += len(data)
            self._machine.bytes_in(bytes(data))
        return self._collect()

    def timer_expired(self) -> list[Action]:
        """The timer of the last :class:`SetTimer` fired."""
        self._machine.timer_expired()
        return self._collect()

    def deadline_expired(self, generation: int) -> list[Action]:
        """The frame deadline of the :class:`SetDeadline` carrying
        ``generation`` fired; an expiry of an earlier (replaced or cancelled)
        deadline is stale and changes nothing."""
        core = self._core
        if generation != core.deadline_generation or not core.deadline_running:
            return []
        self._machine.deadline_expired()
        return self._collect()

    def abort(self, error: LinkError) -> list[Action]:
        """Give up the exchange in flight (if any) at once and return to idle."""
        self._machine.abort(error)
        return self._collect()


class InitiatorLink(_Link):
    """The client's side of the link: sends requests, receives responses."""

    role = "initiator"

    def __init__(
        self,
        timeouts: LinkTimeouts = LinkTimeouts(),
        max_frame_length: int = codec.DEFAULT_MAX_FRAME_LENGTH,
    ) -> None:
        super().__init__(_Initiator, timeouts, max_frame_length)

    def send(self, frame: bytes) -> list[Action]:
        """Begin an exchange carrying ``frame``; the machine must be idle.

        :raises LinkBusy: when an exchange is already in flight.
        """
        if not self.is_idle():
            raise LinkBusy(f"cannot send while {self.state}")
        self._machine.send(frame)
        return self._collect()


class ResponderLink(_Link):
    """The signing host's side of the link: receives requests, sends answers."""

    role = "responder"

    def __init__(
        self,
        timeouts: LinkTimeouts = LinkTimeouts(),
        max_frame_length: int = codec.DEFAULT_MAX_FRAME_LENGTH,
    ) -> None:
        super().__init__(_Responder, timeouts, max_frame_length)

    def answer(self, exchange: int, frame: bytes) -> list[Action]:
        """Send ``frame`` as the answer to the request of ``exchange``.

        An answer for an exchange that was abandoned meanwhile (the initiator
        restarted, a timeout) is dropped with a notice.
        """
        core = self._core
        if exchange != core.exchange or not core.in_flight or self.state != "processing":
            return [
                Notice(
                    "warn",
                    "{role} link: dropped the answer to abandoned exchange {exchange}",
                    {"role": self.role, "exchange": exchange},
                )
            ]
        self._machine.send(frame)
        return self._collect()
