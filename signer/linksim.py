"""A simulated serial line with fault injection (the core of ``signer linksim``).

Two layers:

- the **line model** (no I/O, time passed in): :class:`Direction` carries the
  bytes of one direction like a UART and a cable would. Bytes written by the
  sender wait in a transmit queue and leave it one *byte time* after another
  (``bits per character / baud``; 10 bit times for 8N1), then travel for the
  configured latency. On the way the line may flip a bit of a byte, drop a
  byte, stall (deliver nothing for a while; the bytes wait and come later) or
  be unplugged (bytes that cross the line meanwhile are lost). Every random
  decision comes from a :class:`random.Random` seeded from ``(seed, direction,
  kind)``: flips and drops are decided by byte index on the wire (the same
  bytes are hit for the same seed, however the traffic was chunked), random
  stalls by line time. :class:`Line` holds both directions and the unplug
  state they share.
- the **relay** (thin Twisted adapter): :class:`LineRelay` feeds what a side
  wrote into the model and writes what the model delivers to the far side,
  with one timer on an injected clock (``IReactorTime``) that fires when the
  next bytes are due; a stream is released in batches ``min_tick`` apart, a
  short write (an ACK) as soon as it has crossed. :class:`PtyEnd` is the reactor-side reader/writer of a
  pseudo-terminal master; :func:`open_pty_end` creates one.

A ``baud`` of 0 means unpaced: bytes cross at once (latency, faults and stalls
still apply).
"""

from __future__ import annotations

import errno
import math
import os
import random
import tty
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional, Protocol

from twisted.internet import fdesc
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "Direction",
    "DirectionCounters",
    "FaultSettings",
    "Line",
    "LineRelay",
    "LineSettings",
    "PtyEnd",
    "PtyPair",
    "Schedule",
    "open_pty",
    "open_pty_end",
    "parse_schedule",
]

_EPSILON = 1e-9


# -- settings -------------------------------------------------------------------


@dataclass(frozen=True)
class LineSettings:
    """Character format and speed of the simulated line (default 115200 8N1).

    :ivar baud: bits per second; 0 means unpaced (no pacing at all).
    :ivar latency: one-way delay in seconds added after a byte has been
        transmitted.
    """

    baud: int = 115200
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    latency: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.baud, bool) or not isinstance(self.baud, int) or self.baud < 0:
            raise ValueError(f"baud must be a non-negative integer, not {self.baud!r}")
        if self.bytesize not in (5, 6, 7, 8):
            raise ValueError(f"bytesize must be 5, 6, 7 or 8, not {self.bytesize!r}")
        if self.parity not in ("N", "E", "O", "M", "S"):
            raise ValueError(f"parity must be one of N, E, O, M, S, not {self.parity!r}")
        if self.stopbits not in (1, 1.5, 2):
            raise ValueError(f"stopbits must be 1, 1.5 or 2, not {self.stopbits!r}")
        if not self.latency >= 0:
            raise ValueError(f"latency must not be negative, not {self.latency!r}")

    @property
    def bits_per_character(self) -> float:
        """Start bit + data bits + parity bit (if any) + stop bits (10 for 8N1)."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def byte_time(self) -> float:
        """Seconds one character occupies the line (0 when unpaced)."""
        return self.bits_per_character / self.baud if self.baud else 0.0

    @property
    def bytes_per_second(self) -> float:
        """The line's capacity per direction (``inf`` when unpaced)."""
        return self.baud / self.bits_per_character if self.baud else math.inf

    def describe(self) -> str:
        """E.g. ``115200 baud 8N1 (11520 bytes/s per direction)``."""
        if not self.baud:
            speed = "unpaced"
        else:
            speed = (
                f"{self.baud} baud {self.bytesize}{self.parity}{self.stopbits:g} "
                f"({self.bytes_per_second:.0f} bytes/s per direction)"
            )
        if self.latency:
            speed += f", latency {self.latency * 1000:g} ms"
        return speed


@dataclass(frozen=True)
class Schedule:
    """One scheduled event: at ``start`` seconds after the line started, for
    ``duration`` seconds."""

    start: float
    duration: float

    @property
    def end(self) -> float:
        return self.start + self.duration


def parse_schedule(text: str) -> Schedule:
    """Parse ``T:DURATION`` (seconds, decimals allowed), e.g. ``5:2.5``.

    :raises ValueError: with a message saying what is wrong.
    """
    start_text, sep, duration_text = text.partition(":")
    if not sep:
        raise ValueError(f"expected T:DURATION in seconds (e.g. 5:2.5), got {text!r}")
    try:
        start, duration = float(start_text), float(duration_text)
    except ValueError:
        raise ValueError(f"expected numbers in T:DURATION, got {text!r}") from None
    if not (start >= 0 and duration > 0 and math.isfinite(start) and math.isfinite(duration)):
        raise ValueError(f"T must be >= 0 and DURATION > 0, got {text!r}")
    return Schedule(start, duration)


@dataclass(frozen=True)
class FaultSettings:
    """What goes wrong on the line, the same for both directions.

    :ivar flip_rate: probability that a byte crossing the line has one bit
        flipped.
    :ivar drop_rate: probability that a byte crossing the line is lost.
    :ivar stall_rate: random stalls per second of line time (per direction).
    :ivar stall_duration: length of a random stall in seconds.
    :ivar stalls: scheduled stalls (both directions): nothing is delivered
        during them; bytes wait and cross afterwards.
    :ivar unplugs: scheduled unplugs (both directions): bytes crossing the line
        meanwhile are lost.
    :ivar seed: seed of every random decision.
    """

    flip_rate: float = 0.0
    drop_rate: float = 0.0
    stall_rate: float = 0.0
    stall_duration: float = 0.05
    stalls: tuple[Schedule, ...] = ()
    unplugs: tuple[Schedule, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("flip_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, not {value!r}")
        if not self.stall_rate >= 0:
            raise ValueError(f"stall_rate must not be negative, not {self.stall_rate!r}")
        if not self.stall_duration > 0:
            raise ValueError(f"stall_duration must be positive, not {self.stall_duration!r}")


# -- counters ---------------------------------------------------------------------


@dataclass
class DirectionCounters:
    """What happened in one direction (mutable).

    :ivar received: bytes the sender wrote into the line.
    :ivar delivered: bytes handed to the far side.
    :ivar flipped: delivered bytes with one bit flipped.
    :ivar dropped: bytes lost by the drop fault.
    :ivar unplugged_lost: bytes lost because the line was unplugged.
    :ivar stalls: stalls that began (random and scheduled).
    :ivar overflow_lost: bytes the far side's device would not take (no reader
        and its buffer full); counted by the relay.
    """

    received: int = 0
    delivered: int = 0
    flipped: int = 0
    dropped: int = 0
    unplugged_lost: int = 0
    stalls: int = 0
    overflow_lost: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# -- the line model ---------------------------------------------------------------


class _Unplugs:
    """The unplugged periods of the line: scheduled ones plus manual toggles."""

    def __init__(self, scheduled: Iterable[Schedule]) -> None:
        self.periods: list[tuple[float, float]] = sorted((s.start, s.end) for s in scheduled)
        self._manual_since: Optional[float] = None
        self.count = len(self.periods)

    @property
    def manual(self) -> bool:
        return self._manual_since is not None

    def toggle(self, now: float) -> bool:
        """Unplug (or plug back in) at ``now``; True when the line is now unplugged."""
        if self._manual_since is None:
            self._manual_since = now
            self.count += 1
            return True
        self.periods.append((self._manual_since, now))
        self.periods.sort()
        self._manual_since = None
        return False

    def overlaps(self, first: float, last: float) -> bool:
        """Whether any unplugged period touches the times ``[first, last]``."""
        if self._manual_since is not None and last >= self._manual_since:
            return True
        return any(start <= last and end > first for start, end in self.periods)

    def unplugged_at(self, moment: float) -> bool:
        if self._manual_since is not None and moment >= self._manual_since:
            return True
        return any(start <= moment < end for start, end in self.periods)

    def active(self, now: float) -> bool:
        """Whether the line is unplugged at ``now`` (for reports)."""
        return self.unplugged_at(now)


class _Stalls:
    """Stall intervals of one direction in line time: random (a Poisson process
    of ``rate`` per second) merged with the scheduled ones, generated lazily."""

    def __init__(
        self, rate: float, duration: float, scheduled: Iterable[Schedule], rng: random.Random
    ) -> None:
        self._rate = rate
        self._duration = duration
        self._rng = rng
        self._scheduled = deque(sorted((s.start, s.end) for s in scheduled))
        self._next_random: Optional[tuple[float, float]] = None
        if rate > 0:
            start = rng.expovariate(rate)
            self._next_random = (start, start + duration)
        self._known: deque[tuple[float, float]] = deque()
        self._counted = 0  # intervals at the front of _known already counted
        self.started = 0

    def _take_next(self) -> Optional[tuple[float, float]]:
        candidates = []
        if self._scheduled:
            candidates.append(("s", self._scheduled[0]))
        if self._next_random is not None:
            candidates.append(("r", self._next_random))
        if not candidates:
            return None
        kind, interval = min(candidates, key=lambda item: item[1][0])
        if kind == "s":
            self._scheduled.popleft()
        else:
            start = interval[1] + self._rng.expovariate(self._rate)
            self._next_random = (start, start + self._duration)
        return interval

    def _ensure(self, count: int) -> bool:
        """Generate intervals until ``count`` are known; False if there are no more."""
        while len(self._known) < count:
            interval = self._take_next()
            if interval is None:
                return False
            self._known.append(interval)
        return True

    def first_ending_after(self, moment: float) -> Optional[tuple[float, float]]:
        """The first stall interval that ends after ``moment`` (None: no more).

        Intervals that ended by ``moment`` are forgotten once counted.
        """
        index = 0
        while self._ensure(index + 1):
            interval = self._known[index]
            if interval[1] > moment:
                return interval
            if index == 0 and self._counted > 0:
                self._known.popleft()
                self._counted -= 1
            else:
                index += 1
        return None

    def count_until(self, moment: float) -> None:
        """Count the stalls that began up to ``moment``."""
        while self._ensure(self._counted + 1) and self._known[self._counted][0] <= moment:
            self._counted += 1
            self.started += 1


class _Geometric:
    """Indices of hit bytes for a per-byte probability, drawn as gaps."""

    def __init__(self, rate: float, rng: random.Random) -> None:
        self._rate = rate
        self._rng = rng
        self.next_index = self._gap(0) if rate > 0 else math.inf

    def _gap(self, after: int) -> float:
        if self._rate >= 1:
            return after
        u = self._rng.random()
        return after + math.floor(math.log1p(-u) / math.log1p(-self._rate))

    def advance(self) -> int:
        """The index just hit; draw the next one."""
        hit = int(self.next_index)
        self.next_index = self._gap(hit + 1)
        return hit


class Direction:
    """One direction of the line (see the module docstring).

    Call :meth:`feed` with what the sender wrote and :meth:`take` for what the
    far side receives by now; :meth:`next_due` says when :meth:`take` next
    has something to give. Times are seconds on the caller's clock; the line
    started at ``origin`` (scheduled events count from it).
    """

    def __init__(
        self,
        name: str,
        settings: LineSettings,
        faults: FaultSettings,
        unplugs: _Unplugs,
        origin: float = 0.0,
    ) -> None:
        self.name = name
        self.settings = settings
        self.counters = DirectionCounters()
        self._byte_time = settings.byte_time
        self._latency = settings.latency
        self._origin = origin
        self._unplugs = unplugs
        self._mask_bits = settings.bytesize

        def rng(kind: str) -> random.Random:
            return random.Random(f"{faults.seed}:{name}:{kind}")

        self._flips = _Geometric(faults.flip_rate, rng("flip"))
        self._flip_bits = rng("flip-bit")
        self._drops = _Geometric(faults.drop_rate, rng("drop"))
        self._stalls = _Stalls(faults.stall_rate, faults.stall_duration, faults.stalls, rng("stall"))
        self._pending = bytearray()
        self._cursor = -math.inf  # line time at which the head byte starts
        self._wire_index = 0  # bytes that have completed on the wire so far
        self._in_flight: deque[tuple[float, bytes]] = deque()

    # line time is relative to the origin so that schedules are "T after start"

    def _line(self, now: float) -> float:
        return now - self._origin

    @property
    def queued(self) -> int:
        """Bytes waiting to be transmitted or travelling."""
        return len(self._pending) + sum(len(chunk) for _, chunk in self._in_flight)

    def feed(self, data: bytes, now: float) -> None:
        """The sender wrote ``data`` into the line at ``now``."""
        if not data:
            return
        line_now = self._line(now)
        self._transmit(line_now)
        if not self._pending:
            self._cursor = max(self._cursor, line_now)
        self._pending += data
        self.counters.received += len(data)
        # unpaced: bytes are transmitted at once (unless stalled)
        if not self._byte_time:
            self._transmit(line_now)

    def take(self, now: float) -> bytes:
        """The bytes that arrived at the far side by ``now`` (each once)."""
        line_now = self._line(now)
        self._transmit(line_now)
        self._stalls.count_until(line_now)
        self.counters.stalls = self._stalls.started
        if not self._pending:
            self._stalls.first_ending_after(max(self._cursor, line_now))  # forget old ones
        out = bytearray()
        while self._in_flight and self._in_flight[0][0] <= line_now + _EPSILON:
            out += self._in_flight.popleft()[1]
        return bytes(out)

    def next_due(self, now: float, batch: float = 0.0) -> Optional[float]:
        """When :meth:`take` should be called next (clock time), or None if idle.

        With ``batch`` > 0 a stream of bytes is released in batches: the call
        is due ``batch`` seconds from now at the earliest, but never later than
        when the last byte now queued has crossed (a lone ACK is not held back
        until the batch is full). Nothing is ever due before it has crossed.
        """
        line_now = self._line(now)
        candidates = []
        if self._in_flight:
            candidates.append(self._in_flight[0][0])
        if self._pending:
            start = self._cursor
            stall = self._stalls.first_ending_after(start)
            if stall is not None and stall[0] <= start + _EPSILON:
                start = stall[1]
            first = start + self._byte_time + self._latency
            last = start + len(self._pending) * self._byte_time + self._latency
            candidates.append(min(max(first, line_now + batch), last))
        if not candidates:
            return None
        return max(min(candidates), line_now) + self._origin

    def _transmit(self, line_now: float) -> None:
        """Move every byte whose transmission completed by ``line_now`` onto
        the cable (applying the faults)."""
        bt = self._byte_time
        while self._pending:
            stall = self._stalls.first_ending_after(self._cursor)
            if stall is not None and stall[0] <= self._cursor + _EPSILON:
                self._cursor = stall[1]
                continue
            if self._cursor > line_now + _EPSILON:
                return
            stall_start = stall[0] if stall is not None else math.inf
            if bt:
                complete = math.floor((line_now - self._cursor) / bt + _EPSILON)
                count = min(len(self._pending), complete)
                if stall_start != math.inf:
                    count = min(count, math.ceil((stall_start - self._cursor) / bt - _EPSILON))
            else:
                count = len(self._pending)
            if count <= 0:
                return
            chunk = bytes(self._pending[:count])
            del self._pending[:count]
            first_done = self._cursor + bt
            self._cursor += count * bt
            self._on_wire(chunk, first_done, self._cursor)

    def _on_wire(self, chunk: bytes, first_done: float, last_done: float) -> None:
        """``chunk`` completed on the wire between ``first_done`` and ``last_done``."""
        start_index = self._wire_index
        end_index = start_index + len(chunk)
        self._wire_index = end_index
        unplugged = self._unplugs.overlaps(first_done, last_done)
        if (
            not unplugged
            and self._flips.next_index >= end_index
            and self._drops.next_index >= end_index
        ):
            self._in_flight.append((last_done + self._latency, chunk))
            self.counters.delivered += len(chunk)
            return
        data = bytearray(chunk)
        keep = [True] * len(chunk)
        if unplugged:
            bt = self._byte_time
            for offset in range(len(chunk)):
                if self._unplugs.unplugged_at(first_done + offset * bt):
                    keep[offset] = False
                    self.counters.unplugged_lost += 1
        while self._drops.next_index < end_index:
            offset = self._drops.advance() - start_index
            if keep[offset]:
                keep[offset] = False
                self.counters.dropped += 1
        while self._flips.next_index < end_index:
            offset = self._flips.advance() - start_index
            bit = self._flip_bits.randrange(self._mask_bits)
            if keep[offset]:
                data[offset] ^= 1 << bit
                self.counters.flipped += 1
        out = bytes(byte for byte, kept in zip(data, keep) if kept)
        if out:
            self._in_flight.append((last_done + self._latency, out))
            self.counters.delivered += len(out)


class Line:
    """Both directions of the simulated line and the unplug state they share.

    Direction ``a`` carries what side A writes to side B, ``b`` the reverse.
    """

    def __init__(
        self, settings: LineSettings, faults: FaultSettings = FaultSettings(), origin: float = 0.0
    ) -> None:
        self.settings = settings
        self.faults = faults
        self.origin = origin
        self._unplugs = _Unplugs(faults.unplugs)
        self.a_to_b = Direction("a-b", settings, faults, self._unplugs, origin)
        self.b_to_a = Direction("b-a", settings, faults, self._unplugs, origin)

    @property
    def directions(self) -> tuple[Direction, Direction]:
        return (self.a_to_b, self.b_to_a)

    @property
    def unplug_count(self) -> int:
        """Unplugs so far (scheduled ones count from the start)."""
        return self._unplugs.count

    def toggle_unplug(self, now: float) -> bool:
        """Pull the cable (or plug it back in) at ``now``; True when now unplugged."""
        return self._unplugs.toggle(now - self.origin)

    def unplugged(self, now: float) -> bool:
        return self._unplugs.active(now - self.origin)

    def counters(self) -> dict[str, object]:
        """All counters, for reports and JSON."""
        return {
            "a_to_b": self.a_to_b.counters.as_dict(),
            "b_to_a": self.b_to_a.counters.as_dict(),
            "unplugs": self.unplug_count,
        }

    def report(self, elapsed: float) -> str:
        """Human-readable counters (several lines)."""
        lines = [f"linksim counters after {elapsed:.1f} s ({self.settings.describe()}):"]
        for label, direction in (("A->B", self.a_to_b), ("B->A", self.b_to_a)):
            c = direction.counters
            lines.append(
                f"  {label}: {c.received} bytes in, {c.delivered} delivered, "
                f"{c.flipped} flipped, {c.dropped} dropped, {c.unplugged_lost} lost unplugged, "
                f"{c.overflow_lost} lost (no reader), {c.stalls} stalls"
            )
        lines.append(f"  unplugs: {self.unplug_count}")
        return "\n".join(lines)


# -- the relay ------------------------------------------------------------------


class WritableEnd(Protocol):
    """Where the relay writes what a direction delivers."""

    def write(self, data: bytes) -> None: ...


class LineRelay:
    """Moves bytes through a :class:`Line` between two ends on a clock.

    The ends call :meth:`received` with what their side wrote; the relay
    writes deliveries with ``end.write``. One timer at a time, set for when
    the next bytes are due (see :meth:`Direction.next_due`): a stream is
    released in batches ``min_tick`` apart (about 23 bytes per 2 ms at 115200
    baud), a short write (an ACK) as soon as it has crossed.

    ``early`` lets bytes out up to that many seconds before they have fully
    crossed. A reactor's timers have about a millisecond of resolution, so
    a lone ACK due 87 µs from now would otherwise arrive a whole millisecond
    late; released early by less than a timer tick it arrives closer to its
    true time. The long-run rate is unaffected (the line's clock is exact).
    """

    log = Logger()

    def __init__(
        self,
        line: Line,
        clock: IReactorTime,
        end_a: WritableEnd,
        end_b: WritableEnd,
        min_tick: float = 0.002,
        early: float = 0.0,
    ) -> None:
        self.line = line
        self._clock = clock
        self._ends = {"a": end_a, "b": end_b}
        self._min_tick = min_tick
        self._early = early
        self._timer: Optional[IDelayedCall] = None
        self._due: Optional[float] = None

    def received(self, side: str, data: bytes) -> None:
        """Side ``"a"`` or ``"b"`` wrote ``data``."""
        direction = self.line.a_to_b if side == "a" else self.line.b_to_a
        direction.feed(data, self._clock.seconds())
        self.pump()

    def toggle_unplug(self) -> bool:
        """Unplug or plug back in now; True when now unplugged."""
        unplugged = self.line.toggle_unplug(self._clock.seconds())
        self.pump()
        return unplugged

    def pump(self) -> None:
        """Deliver what is due and set the timer for what comes next."""
        now = self._clock.seconds()
        horizon = now + self._early
        for direction, far in ((self.line.a_to_b, "b"), (self.line.b_to_a, "a")):
            data = direction.take(horizon)
            if data:
                self._ends[far].write(data)
        due = [
            d
            for d in (
                direction.next_due(horizon, self._min_tick) for direction in self.line.directions
            )
            if d is not None
        ]
        if not due:
            self._cancel()
            return
        when = max(min(due) - self._early, now)
        if self._timer is not None and self._timer.active():
            if self._due is not None and abs(self._due - when) < _EPSILON:
                return
            if self._due is not None and self._due <= when:
                return  # the earlier timer will pump again
            self._timer.cancel()
        self._due = when
        self._timer = self._clock.callLater(when - now, self._fired)

    def _fired(self) -> None:
        self._timer = None
        self._due = None
        self.pump()

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._due = None

    def stop(self) -> None:
        """Cancel the timer (nothing more is delivered)."""
        self._cancel()


class PtyEnd(FileDescriptor):
    """The reactor's reader/writer of one pseudo-terminal master.

    Reads go to ``on_data``. Writes that the device does not take at once
    wait in a bounded buffer (``max_buffer`` bytes); beyond it bytes are
    discarded and counted by ``on_overflow`` (like a serial port nobody
    reads). A read or write error such as ``EIO`` (no slave open) never stops
    the relay: the end stops reading for ``retry`` seconds and tries again.
    """

    log = Logger()

    def __init__(
        self,
        fd: int,
        name: str,
        reactor: IReactorFDSet,
        on_data: Callable[[bytes], None],
        on_overflow: Callable[[int], None],
        clock: IReactorTime,
        max_buffer: int = 65536,
        retry: float = 0.05,
    ) -> None:
        super().__init__(reactor)
        self.fd = fd
        self.name = name
        self._on_data = on_data
        self._on_overflow = on_overflow
        self._clock = clock
        self._max_buffer = max_buffer
        self._retry = retry
        self._pending = bytearray()
        self._paused: Optional[IDelayedCall] = None
        self.connected = 1
        fdesc.setNonBlocking(fd)

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> Optional[Failure]:  # noqa: N802 (Twisted's name)
        try:
            data = os.read(self.fd, 65536)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EINTR):
                return None
            self._pause(error)
            return None
        if not data:
            self._pause(None)
            return None
        self._on_data(data)
        return None

    def _pause(self, error: Optional[OSError]) -> None:
        """No peer on the slave side: stop polling for a moment (no busy loop)."""
        self.stopReading()
        if self._paused is None or not self._paused.active():
            self.log.info(
                "{name}: device not readable ({reason}); retrying in {retry} s",
                name=self.name,
                reason=error.strerror if error is not None else "end of file",
                retry=self._retry,
            )
            self._paused = self._clock.callLater(self._retry, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self.connected:
            self.startReading()

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            try:
                written = os.write(self.fd, data)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EINTR, errno.EIO):
                    raise
                written = 0
            data = data[written:]
            if not data:
                return
        room = self._max_buffer - len(self._pending)
        if len(data) > room:
            self._on_overflow(len(data) - max(room, 0))
            data = data[: max(room, 0)]
        self._pending += data
        self.startWriting()

    def doWrite(self) -> Optional[Failure]:  # noqa: N802 (Twisted's name)
        if self._pending:
            try:
                written = os.write(self.fd, bytes(self._pending))
            except OSError as error:
                if error.errno in (errno.EAGAIN, errno.EINTR):
                    return None
                written = 0
                if error.errno == errno.EIO:
                    # nobody on the slave side: what waits is lost, as on a dead port
                    self._on_overflow(len(self._pending))
                    written = len(self._pending)
            del self._pending[:written]
        if not self._pending:
            self.stopWriting()
        return None

    def close(self) -> None:
        """Stop reading and writing (the :class:`PtyPair` closes the descriptor)."""
        if self._paused is not None and self._paused.active():
            self._paused.cancel()
        self.stopReading()
        self.stopWriting()
        self.connected = 0


@dataclass
class PtyPair:
    """One simulated port: the master we relay and the slave others open.

    :ivar slave_keep: our own descriptor of the slave, held open so that the
        master never reads EIO/HUP while no program has the slave open (a
        daemon being restarted).
    """

    master: int
    slave_keep: int
    path: str
    link: Optional[str] = None

    def close(self) -> None:
        for fd in (self.master, self.slave_keep):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.link is not None:
            try:
                if os.path.islink(self.link):
                    os.unlink(self.link)
            except OSError:
                pass


def open_pty(link: Optional[str] = None) -> PtyPair:
    """Create a raw pseudo-terminal; symlink its slave at ``link`` if given.

    An existing symlink at ``link`` is replaced; any other file there is an
    error (``FileExistsError``).
    """
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    path = os.ttyname(slave)
    if link is not None:
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(path, link)
    return PtyPair(master, slave, path, link)


def open_pty_end(
    pair: PtyPair,
    name: str,
    reactor: IReactorFDSet,
    clock: IReactorTime,
    on_data: Callable[[bytes], None],
    on_overflow: Callable[[int], None],
) -> PtyEnd:
    """A started :class:`PtyEnd` on ``pair``'s master."""
    end = PtyEnd(pair.master, name, reactor, on_data, on_overflow, clock)
    end.startReading()
    return end
