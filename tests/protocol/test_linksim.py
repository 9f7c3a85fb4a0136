"""``signer linksim``: the line model (pacing, faults, determinism), the relay
on ``task.Clock``, and the real command between real programs.

The model and relay tests use no real time. The integration tests run
``signer linksim`` as a subprocess with real pseudo-terminals: raw bytes, the
CLI's counters, a device closed and reopened, and our ``ClientLinkProtocol``
against the real ``twistd signer-server`` through bit flips and an unplug.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import tty
from pathlib import Path
from typing import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater

from signer.linksim import (
    Direction,
    FaultSettings,
    Line,
    LineRelay,
    LineSettings,
    Schedule,
    parse_schedule,
)
from signer.protocol import codec
from signer.protocol.link import LinkError, LinkTimeouts
from signer.protocol.serialconfig import SerialConfig
from signer.protocol.transport import ClientLinkProtocol, open_serial
from tests.support.testca import make_csr

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
BYTE_115200 = 10 / 115200


def pattern(size: int) -> bytes:
    return bytes(index * 7 % 251 for index in range(size))


def direction(settings: LineSettings = LineSettings(), faults: FaultSettings = FaultSettings()) -> Direction:
    return Line(settings, faults).a_to_b


# -- settings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bytesize", "parity", "stopbits", "bits"),
    [(8, "N", 1, 10), (7, "E", 1, 10), (8, "E", 2, 12), (8, "N", 1.5, 10.5), (5, "N", 1, 7)],
)
def test_bits_per_character(bytesize: int, parity: str, stopbits: float, bits: float) -> None:
    """Start bit + data bits + parity bit unless N + stop bits."""
    settings = LineSettings(115200, bytesize, parity, stopbits)
    assert settings.bits_per_character == bits
    assert settings.byte_time == pytest.approx(bits / 115200)


def test_unpaced_settings() -> None:
    """Baud 0 means unpaced: no byte time and unlimited capacity."""
    settings = LineSettings(baud=0)
    assert settings.byte_time == 0
    assert settings.describe().startswith("unpaced")


@pytest.mark.parametrize(
    "bad",
    [dict(baud=-1), dict(bytesize=9), dict(parity="X"), dict(stopbits=3), dict(latency=-0.1)],
)
def test_bad_line_settings(bad: dict[str, object]) -> None:
    """Impossible line settings are refused with a ValueError."""
    with pytest.raises(ValueError):
        LineSettings(**bad)  # type: ignore[arg-type]


def test_parse_schedule() -> None:
    """T:DURATION parses to seconds; malformed text says what is expected."""
    assert parse_schedule("5:2.5") == Schedule(5.0, 2.5)
    for bad in ("5", "a:b", "-1:2", "3:0"):
        with pytest.raises(ValueError):
            parse_schedule(bad)


# -- pacing ----------------------------------------------------------------------


def test_pacing_releases_bytes_at_the_baud_rate() -> None:
    """11,520 bytes written at once take one second at 115200 8N1: half by
    0.5 s, all by 1 s, and none before the first byte time."""
    line = direction()
    data = pattern(11520)
    line.feed(data, 0.0)
    assert line.take(BYTE_115200 * 0.99) == b""
    assert line.take(BYTE_115200) == data[:1]
    assert len(line.take(0.5)) == 5760 - 1
    assert line.take(1.0 - BYTE_115200 / 2) == data[5760:-1]
    assert line.take(1.0) == data[-1:]
    assert line.counters.received == line.counters.delivered == 11520


def test_pacing_of_a_stream_written_in_small_pieces() -> None:
    """A sender writing faster than the line gets exactly the line's rate."""
    line = direction(LineSettings(baud=9600))
    delivered = 0
    for step in range(1, 1001):  # 100 bytes every 2 ms: far more than 960 bytes/s
        now = step * 0.002
        line.feed(pattern(100), now)
        delivered += len(line.take(now))
    assert delivered == pytest.approx(960 * 2, abs=2)


def test_an_idle_line_gives_no_credit() -> None:
    """Bytes written after a pause start crossing when written, not earlier."""
    line = direction()
    line.feed(b"x" * 10, 0.0)
    assert len(line.take(5.0)) == 10
    line.feed(pattern(200), 10.0)
    assert len(line.take(10.0 + 50 * BYTE_115200)) == 50


def test_latency_delays_delivery() -> None:
    """With 20 ms latency a byte arrives one byte time plus 20 ms after it was written."""
    line = direction(LineSettings(latency=0.02))
    line.feed(b"\x10", 1.0)
    assert line.take(1.0 + BYTE_115200 + 0.019) == b""
    assert line.take(1.0 + BYTE_115200 + 0.02) == b"\x10"


def test_unpaced_delivers_at_once() -> None:
    """Unpaced, everything written is there at the same moment."""
    line = direction(LineSettings(baud=0))
    line.feed(pattern(100000), 3.0)
    assert line.take(3.0) == pattern(100000)
    assert line.next_due(3.0) is None


def test_next_due_batches_streams_but_not_a_lone_byte() -> None:
    """A long queue is due one batch from now; a single ACK when it has crossed."""
    line = direction()
    line.feed(b"\x10", 0.0)
    assert line.next_due(0.0, batch=0.002) == pytest.approx(BYTE_115200)
    stream = direction()
    stream.feed(pattern(1000), 0.0)
    assert stream.next_due(0.0, batch=0.002) == pytest.approx(0.002)
    assert stream.next_due(0.0) == pytest.approx(BYTE_115200)


# -- faults ----------------------------------------------------------------------


def run_through(faults: FaultSettings, data: bytes, chunk: int) -> tuple[bytes, Direction]:
    line = direction(LineSettings(baud=0), faults)
    out = bytearray()
    for offset in range(0, len(data), chunk):
        line.feed(data[offset : offset + chunk], float(offset))
        out += line.take(float(offset))
    return bytes(out), line


def test_flips_are_deterministic_per_seed_whatever_the_chunking() -> None:
    """The same seed flips the same bytes (and bits), however the bytes were
    written; another seed flips other bytes."""
    data = pattern(100000)
    faults = FaultSettings(flip_rate=0.01, seed=42)
    first, line = run_through(faults, data, 1000)
    second, _ = run_through(faults, data, 77)
    other, _ = run_through(FaultSettings(flip_rate=0.01, seed=43), data, 1000)
    assert first == second
    assert other != first
    assert len(first) == len(data)
    changed = [index for index in range(len(data)) if first[index] != data[index]]
    assert len(changed) == line.counters.flipped
    assert 800 < line.counters.flipped < 1200  # 1 % of 100,000
    assert all(bin(first[index] ^ data[index]).count("1") == 1 for index in changed)


def test_drops_remove_bytes_and_are_counted() -> None:
    """Dropped bytes are missing from the output, in number counted."""
    data = pattern(50000)
    out, line = run_through(FaultSettings(drop_rate=0.002, seed=1), data, 4096)
    assert line.counters.dropped > 0
    assert len(out) == len(data) - line.counters.dropped
    assert line.counters.delivered == len(out)
    again, _ = run_through(FaultSettings(drop_rate=0.002, seed=1), data, 100)
    assert again == out


def test_no_faults_means_no_changes() -> None:
    """Without faults the bytes cross unchanged and the fault counters stay 0."""
    data = pattern(30000)
    out, line = run_through(FaultSettings(seed=9), data, 999)
    assert out == data
    assert (line.counters.flipped, line.counters.dropped, line.counters.stalls) == (0, 0, 0)


def test_scheduled_stall_delays_but_keeps_bytes() -> None:
    """During a stall nothing is delivered; afterwards the bytes come, none lost."""
    line = direction(faults=FaultSettings(stalls=(Schedule(0.1, 0.2),)))
    line.feed(pattern(11520), 0.0)
    before = len(line.take(0.1))
    assert before == pytest.approx(1152, abs=1)
    assert line.take(0.3) == b""
    assert line.counters.stalls == 1
    total = before + len(line.take(0.4))
    assert total == pytest.approx(2304, abs=1)
    total += len(line.take(1.19))
    assert total < 11520  # the stall made the second last 1.2 s
    total += len(line.take(1.2))
    assert total == line.counters.delivered == 11520


def test_random_stalls_follow_the_rate_and_the_seed() -> None:
    """Random stalls come at about the configured rate per second, reproducibly."""
    faults = FaultSettings(stall_rate=2.0, stall_duration=0.01, seed=5)
    counts = []
    for _ in range(2):
        line = direction(faults=faults)
        for second in range(1, 101):
            line.feed(b"x" * 100, float(second))
            line.take(float(second) + 0.5)
        counts.append(line.counters.stalls)
    assert counts[0] == counts[1]
    assert 150 < counts[0] < 250


def test_stall_holds_back_bytes_written_during_it() -> None:
    """A byte written in a stall crosses right after it ends."""
    line = direction(LineSettings(baud=0), FaultSettings(stalls=(Schedule(1.0, 0.5),)))
    line.feed(b"a", 1.2)
    assert line.take(1.49) == b""
    assert line.next_due(1.2) == pytest.approx(1.5)
    assert line.take(1.5) == b"a"


def test_scheduled_unplug_loses_the_bytes_crossing_meanwhile() -> None:
    """Bytes that cross while unplugged are lost and counted; the rest arrive."""
    line = Line(LineSettings(), FaultSettings(unplugs=(Schedule(1.0, 1.0),)))
    data = pattern(3 * 11520)
    line.a_to_b.feed(data, 0.0)
    out = line.a_to_b.take(3.5)
    counters = line.a_to_b.counters
    assert counters.unplugged_lost == pytest.approx(11520, abs=1)
    assert len(out) == len(data) - counters.unplugged_lost
    assert out[:11519] == data[:11519]  # the byte completing at 1.0 s exactly may be lost
    assert out[-11519:] == data[-11519:]
    assert line.unplug_count == 1


def test_manual_unplug_toggles_both_directions() -> None:
    """A manual unplug loses bytes both ways until the line is plugged back in."""
    line = Line(LineSettings(baud=0))
    assert line.toggle_unplug(1.0) is True
    assert line.unplugged(1.5)
    line.a_to_b.feed(b"lost", 1.5)
    line.b_to_a.feed(b"lost too", 1.5)
    assert line.a_to_b.take(1.5) == b"" and line.b_to_a.take(1.5) == b""
    assert line.toggle_unplug(2.0) is False
    line.a_to_b.feed(b"kept", 2.5)
    assert line.a_to_b.take(2.5) == b"kept"
    assert line.a_to_b.counters.unplugged_lost == 4
    assert line.b_to_a.counters.unplugged_lost == 8
    assert line.unplug_count == 1


def test_counters_report_names_everything() -> None:
    """The report and the JSON counters carry each counter of each direction."""
    line = Line(LineSettings(baud=0), FaultSettings(flip_rate=1.0, seed=3))
    line.a_to_b.feed(b"abc", 0.0)
    line.a_to_b.take(0.0)
    counters = line.counters()
    assert counters["a_to_b"]["flipped"] == 3  # type: ignore[index]
    assert counters["b_to_a"]["received"] == 0  # type: ignore[index]
    text = line.report(1.0)
    assert "A->B: 3 bytes in, 3 delivered, 3 flipped" in text
    assert "unplugs: 0" in text


# -- the relay on task.Clock --------------------------------------------------------


class Collector:
    """A relay end that records what is written to it and when."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.writes: list[tuple[float, bytes]] = []

    def write(self, data: bytes) -> None:
        self.writes.append((self.clock.seconds(), data))

    @property
    def data(self) -> bytes:
        return b"".join(data for _, data in self.writes)


def relay(settings: LineSettings = LineSettings(), faults: FaultSettings = FaultSettings()) -> tuple[LineRelay, Clock, Collector, Collector]:
    clock = Clock()
    a, b = Collector(clock), Collector(clock)
    return LineRelay(Line(settings, faults), clock, a, b, min_tick=0.002), clock, a, b


def test_relay_paces_in_batches_and_never_early() -> None:
    """One second of 115200-baud traffic: all 11,520 bytes arrive within it, in
    batches about 2 ms apart, and never before the line could carry them."""
    line_relay, clock, _, b = relay()
    line_relay.received("a", pattern(11520))
    while clock.getDelayedCalls():
        clock.advance(clock.getDelayedCalls()[0].getTime() - clock.seconds())
    assert b.data == pattern(11520)
    assert clock.seconds() == pytest.approx(1.0, abs=0.003)
    assert 400 <= len(b.writes) <= 520
    total = 0
    for when, data in b.writes:
        total += len(data)
        assert total <= when * 11520 + 1e-6
    assert not clock.getDelayedCalls()  # idle: no timer left behind


def test_relay_delivers_a_lone_ack_after_one_byte_time() -> None:
    """A single control byte is not held back for the batch interval."""
    line_relay, clock, a, _ = relay()
    line_relay.received("b", b"\x10")
    clock.advance(BYTE_115200 * 0.9)
    assert a.data == b""
    clock.advance(BYTE_115200 * 0.2)
    assert a.data == b"\x10"


def test_relay_early_release_is_bounded_and_keeps_the_rate() -> None:
    """With ``early`` set, bytes come out at most that much before they have
    crossed (a lone ACK at once instead of a timer tick late), and a second of
    traffic still takes a second."""
    clock = Clock()
    a, b = Collector(clock), Collector(clock)
    line_relay = LineRelay(Line(LineSettings()), clock, a, b, min_tick=0.002, early=0.0005)
    line_relay.received("b", b"\x10")
    assert a.data == b"\x10"  # due in 87 us, within the 500 us allowance
    clock.advance(1.0)
    line_relay.received("a", pattern(11520))
    while clock.getDelayedCalls():
        clock.advance(clock.getDelayedCalls()[0].getTime() - clock.seconds())
    assert b.data == pattern(11520)
    total = 0
    for when, data in b.writes:
        total += len(data)
        assert total <= (when - 1.0 + 0.0005) * 11520 + 1e-6
    assert clock.seconds() == pytest.approx(2.0 - 0.0005, abs=0.003)


def test_relay_unpaced_is_synchronous_and_both_ways() -> None:
    """Unpaced, each side's bytes reach the other side during the same call."""
    line_relay, clock, a, b = relay(LineSettings(baud=0))
    line_relay.received("a", b"to b")
    line_relay.received("b", b"to a")
    assert (a.data, b.data) == (b"to a", b"to b")
    assert not clock.getDelayedCalls()


def test_relay_toggle_unplug_loses_in_flight_bytes() -> None:
    """Bytes still on the line when the cable is pulled are lost."""
    line_relay, clock, _, b = relay()
    line_relay.received("a", pattern(1152))  # 100 ms worth
    clock.advance(0.05)
    assert line_relay.toggle_unplug() is True
    for _ in range(100):
        clock.advance(0.002)
    assert len(b.data) == pytest.approx(576, abs=24)
    assert line_relay.line.a_to_b.counters.unplugged_lost == 1152 - len(b.data)


# -- the real command --------------------------------------------------------------


class LinkSim:
    """``signer linksim`` running as a subprocess."""

    def __init__(self, folder: Path, *options: str) -> None:
        self.a = str(folder / "ttyA")
        self.b = str(folder / "ttyB")
        self.process = subprocess.Popen(
            [str(BIN / "signer"), "linksim", "--link-a", self.a, "--link-b", self.b, *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.banner: list[str] = []
        for line in self.process.stdout:
            self.banner.append(line)
            if line.strip() == "READY":
                break
        else:
            raise AssertionError(f"linksim did not start: {self.process.stderr.read()}")  # type: ignore[union-attr]

    def stop(self) -> str:
        """SIGTERM; the rest of stdout (the counters)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=10)
        assert self.process.returncode == 0, err
        return out


@pytest.fixture
def linksim_factory(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    started: list[LinkSim] = []

    def make(*options: str) -> LinkSim:
        sim = LinkSim(tmp_path, *options)
        started.append(sim)
        return sim

    yield make
    for sim in started:
        if sim.process.poll() is None:
            sim.process.kill()
            sim.process.communicate()


def open_raw(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return fd


def pump(writer: int, reader: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Write ``data`` to ``writer`` while reading ``reader`` until quiet."""
    sent, got = 0, bytearray()
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        readable, writable, _ = select.select([reader], [writer] if sent < len(data) else [], [], 0.05)
        if writable:
            sent += os.write(writer, data[sent : sent + 4096])
        if readable:
            got += os.read(reader, 65536)
            quiet_since = None
        elif sent == len(data):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.3:
                break
    return bytes(got)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_cli_help_documents_every_option() -> None:
    """``signer linksim --help`` names each option and the SIGUSR1 unplug."""
    result = subprocess.run(
        [str(BIN / "signer"), "linksim", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    for option in (
        "--link-a", "--link-b", "--baud", "--bytesize", "--parity", "--stopbits", "--latency",
        "--tick-ms", "--early-us", "--seed", "--flip-rate", "--drop-rate", "--stall-rate", "--stall-ms",
        "--stall-at", "--unplug-at", "--duration", "--report-every", "--json", "SIGUSR1",
    ):
        assert option in result.stdout, option


@pytest.mark.parametrize("bad", [["--flip-rate", "2"], ["--baud", "-5"], ["--unplug-at", "7"]])
def test_cli_refuses_bad_options(bad: list[str]) -> None:
    """Impossible values are usage errors (exit 2) with a message."""
    result = subprocess.run(
        [str(BIN / "signer"), "linksim", *bad], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "linksim" in result.stderr


def test_cli_relays_paced_bytes_and_prints_counters(linksim_factory) -> None:  # type: ignore[no-untyped-def]
    """At 57600 baud, 2,880 bytes take about half a second each way; the
    devices are the symlinks; SIGTERM prints the byte counters."""
    sim = linksim_factory("--baud", "57600", "--json")
    assert os.path.realpath(sim.a) in "".join(sim.banner)
    a, b = open_raw(sim.a), open_raw(sim.b)
    try:
        started = time.monotonic()
        assert pump(a, b, pattern(2880)) == pattern(2880)
        elapsed = time.monotonic() - started - 0.3  # minus the quiet wait
        assert 0.45 < elapsed < 1.5, elapsed  # never faster than the line
        assert pump(b, a, b"answer") == b"answer"
    finally:
        os.close(a)
        os.close(b)
    out = sim.stop()
    counters = json.loads(out.strip().splitlines()[-1])
    assert counters["a_to_b"]["delivered"] == 2880
    assert counters["b_to_a"]["delivered"] == 6


def test_cli_is_deterministic_with_a_seed(linksim_factory) -> None:  # type: ignore[no-untyped-def]
    """The same seed flips the same bytes in two runs; another seed does not."""
    outputs = []
    for seed in ("11", "11", "12"):
        sim = linksim_factory("--baud", "0", "--flip-rate", "0.01", "--seed", seed)
        a, b = open_raw(sim.a), open_raw(sim.b)
        try:
            outputs.append(pump(a, b, pattern(20000)))
        finally:
            os.close(a)
            os.close(b)
        sim.stop()
    assert outputs[0] == outputs[1] != outputs[2]
    assert len(outputs[0]) == 20000 and outputs[0] != pattern(20000)


def test_cli_survives_a_device_closed_and_reopened(linksim_factory) -> None:  # type: ignore[no-untyped-def]
    """A program closing its device (a daemon killed) and another opening it
    later: the relay keeps carrying bytes, with no busy loop meanwhile."""
    sim = linksim_factory("--baud", "0")
    a, b = open_raw(sim.a), open_raw(sim.b)
    assert pump(a, b, b"first") == b"first"
    os.close(b)
    os.write(a, b"while nobody listens")
    cpu_before = cpu_seconds(sim.process.pid)
    time.sleep(0.5)
    assert cpu_seconds(sim.process.pid) - cpu_before < 0.1  # no busy loop without a reader
    b = open_raw(sim.b)
    import termios

    termios.tcflush(b, termios.TCIFLUSH)  # what pyserial does on open
    try:
        assert pump(a, b, b"second") == b"second"
        assert pump(b, a, b"and back") == b"and back"
    finally:
        os.close(a)
        os.close(b)
    assert sim.process.poll() is None
    out = sim.stop()
    assert "A->B: 31 bytes in" in out


def test_cli_duration_and_scheduled_unplug(linksim_factory) -> None:  # type: ignore[no-untyped-def]
    """--duration ends the run by itself; a scheduled unplug is announced and counted."""
    sim = linksim_factory("--baud", "0", "--duration", "3", "--unplug-at", "0.2:1.2")
    ready = time.monotonic()
    a, b = open_raw(sim.a), open_raw(sim.b)
    try:
        time.sleep(0.4)
        assert pump(a, b, b"into the void", timeout=0.5) == b""
        time.sleep(max(0.0, ready + 1.6 - time.monotonic()))
        assert pump(a, b, b"back") == b"back"
    finally:
        os.close(a)
        os.close(b)
    out, _ = sim.process.communicate(timeout=10)
    assert sim.process.returncode == 0
    assert "cable unplugged for 1.2 s" in out
    assert "13 lost unplugged" in out
    assert "unplugs: 1" in out


# -- our protocol through linksim against the real server ----------------------------


@pytest.fixture(scope="module")
def test_signer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("linksim") / "signer"
    created = subprocess.run(
        [str(BIN / "signer"), "init-test-signer", str(directory), "--no-openpgp"],
        capture_output=True, text=True, timeout=120,
    )
    assert created.returncode == 0, created.stderr
    return directory


class Server:
    """``twistd signer-server`` on one side of a line."""

    def __init__(
        self, signer_dir: Path, device: str, folder: Path, config: str = "signer-server.toml"
    ) -> None:
        self.folder = folder
        serial = folder / "serial.conf"
        serial.write_text(f'[serial]\ndevice = "{device}"\n')
        self.log = folder / "server.log"
        before = self.log.read_text().count("serving on") if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "twistd"), "-n", "--pidfile=", "--logfile", "-", "signer-server",
                 "--config", str(signer_dir / config), "--serial-config", str(serial)],
                cwd=folder, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while self.log.read_text().count("serving on") <= before:
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def x509_request(index: int) -> codec.SignX509Request:
    host = f"sim{index}.example.org"
    return codec.SignX509Request(
        csr=make_csr(host, index=100 + index),
        subject=f"/CN={host}".encode(),
        san=f"DNS:{host},DNS:www.{host}".encode(),
        root=1, profile=5, digest=8, days=365,
    )


NUL = codec.NulRequest(b"120420182026.49")
SHORT = LinkTimeouts(start_ack=1.0, frame_ack=1.0, response_start=5.0, frame_byte=1.0)


@pytest_twisted.inlineCallbacks
def test_signing_through_bit_flips(test_signer: Path, tmp_path: Path, linksim_factory):  # type: ignore[no-untyped-def]
    """Through a 921600-baud line flipping 1 byte in 2,000, X.509 requests to
    the real server still get their certificates thanks to NAK and resend (an
    exchange that cannot recover fails with a LinkError, never hangs)."""
    sim = linksim_factory("--baud", "921600", "--flip-rate", "5e-4", "--seed", "4", "--json")
    server = Server(test_signer, sim.a, tmp_path)
    client = ClientLinkProtocol(reactor, SHORT)
    open_serial(client, SerialConfig(sim.b), reactor)
    signed, failed = 0, 0
    try:
        for index in range(12):
            try:
                response = yield client.request(x509_request(index)).addTimeout(30, reactor)
            except LinkError:
                failed += 1
                continue
            assert response.certificate.startswith(b"-----BEGIN CERTIFICATE-----")
            signed += 1
    finally:
        yield client.close()
        server.stop()
    counters = json.loads(sim.stop().strip().splitlines()[-1])
    flips = counters["a_to_b"]["flipped"] + counters["b_to_a"]["flipped"]
    assert flips > 0, counters
    assert client.stats.naks_received + client.stats.naks_sent + client.stats.garbage_bytes > 0
    assert signed >= 9, (signed, failed, client.stats, counters)


@pytest_twisted.inlineCallbacks
def test_drops_and_stalls_fail_cleanly_and_recover(test_signer: Path, tmp_path: Path, linksim_factory):  # type: ignore[no-untyped-def]
    """Dropped bytes and random stalls: each request either gets its
    certificate or fails with a LinkError within the link timeouts (never
    hangs), and the line keeps serving afterwards."""
    short = test_signer / "signer-server-short.toml"
    if not short.exists():
        short.write_text(
            (test_signer / "signer-server.toml").read_text()
            + "\n[link]\nstart_timeout = 1\nack_timeout = 1\nframe_timeout = 0.5\n"
        )
    sim = linksim_factory(
        "--baud", "921600", "--drop-rate", "1e-4", "--flip-rate", "2e-4",
        "--stall-rate", "1", "--stall-ms", "150", "--seed", "8", "--json",
    )
    server = Server(test_signer, sim.a, tmp_path, config=short.name)
    # Short timeouts keep the test quick. (A request frame that lost a byte
    # leaves the server waiting for one more; the frame deadline and the
    # legacy trailer rule end that wait, so retry timing no longer matters.)
    client = ClientLinkProtocol(
        reactor, LinkTimeouts(start_ack=1.5, frame_ack=1.5, response_start=5.0, frame_byte=1.0)
    )
    open_serial(client, SerialConfig(sim.b), reactor)
    outcomes = []
    try:
        for index in range(12):
            started = time.monotonic()
            try:
                response = yield client.request(x509_request(200 + index)).addTimeout(30, reactor)
                # an empty answer: the request arrived damaged in a way the
                # frame's XOR byte cannot see (two flips of the same bit) and
                # the server refused it (the CSR's signature did not verify)
                signed = response.certificate.startswith(b"-----BEGIN CERTIFICATE-----")
                outcomes.append("signed" if signed else "refused")
            except LinkError as error:
                outcomes.append(type(error).__name__)
            assert time.monotonic() - started < 12  # bounded by the link timeouts
        # the line still serves: of a few NULs at least one goes through
        for attempt in range(5):
            try:
                yield client.request(NUL).addTimeout(30, reactor)
                break
            except LinkError:
                assert attempt < 4
    finally:
        yield client.close()
        server.stop()
    counters = json.loads(sim.stop().strip().splitlines()[-1])
    dropped = counters["a_to_b"]["dropped"] + counters["b_to_a"]["dropped"]
    stalls = counters["a_to_b"]["stalls"] + counters["b_to_a"]["stalls"]
    assert dropped > 0 and stalls > 0, counters
    assert outcomes.count("signed") >= 6, (outcomes, counters)
    assert "Unhandled" not in server.log.read_text()


@pytest_twisted.inlineCallbacks
def test_unplug_and_daemon_restart_are_recovered(test_signer: Path, tmp_path: Path, linksim_factory):  # type: ignore[no-untyped-def]
    """While the cable is pulled (SIGUSR1) a request fails with a LinkError;
    plugged back in, requests succeed again, also after the server was killed
    with SIGKILL and started again on the same device."""
    sim = linksim_factory("--baud", "115200")
    server = Server(test_signer, sim.a, tmp_path)
    client = ClientLinkProtocol(reactor, SHORT)
    open_serial(client, SerialConfig(sim.b), reactor)
    try:
        yield client.request(NUL).addTimeout(30, reactor)
        sim.process.send_signal(signal.SIGUSR1)
        yield deferLater(reactor, 0.2, lambda: None)
        with pytest.raises(LinkError):
            yield client.request(NUL).addTimeout(30, reactor)
        sim.process.send_signal(signal.SIGUSR1)
        yield deferLater(reactor, 0.2, lambda: None)
        response = yield client.request(x509_request(50)).addTimeout(30, reactor)
        assert response.certificate.startswith(b"-----BEGIN CERTIFICATE-----")
        server.process.kill()
        server.process.wait(10)
        server = Server(test_signer, sim.a, tmp_path)
        response = yield client.request(x509_request(51)).addTimeout(30, reactor)
        assert response.certificate.startswith(b"-----BEGIN CERTIFICATE-----")
    finally:
        yield client.close()
        server.stop()
    out = sim.stop()
    assert "unplugs: 1" in out
    assert "cable unplugged (SIGUSR1)" in out and "cable plugged in (SIGUSR1)" in out
