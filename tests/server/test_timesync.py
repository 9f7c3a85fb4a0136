"""NUL timestamp validation and the legacy-compatible timesync.sh."""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import pytest
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from signer.protocol import codec
from signer.server.errors import RequestRefused
from signer.server.timesync import TimeSync, script_text, write_atomically

EXPECTED = b"#!/bin/sh\ndate -u '120420182026.49'\nhwclock --systohc\n"


def nul(stamp: bytes) -> codec.NulRequest:
    return codec.NulRequest(timestamp=stamp)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    return tmp_path / "timesync.sh"


def test_valid_stamp_writes_the_legacy_script(script: Path) -> None:
    """A valid stamp gives exactly the legacy commands (plus '#!/bin/sh'),
    mode 0755, and no temporary file is left beside it."""
    TimeSync("script", script).handle(nul(b"120420182026.49"))
    assert script.read_bytes() == EXPECTED
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert sorted(p.name for p in script.parent.iterdir()) == ["timesync.sh"]


def test_legacy_vector_stamp(script: Path, vectors_dir: Path) -> None:
    """The recorded legacy NUL's field 1 is accepted and lands in the script."""
    vector = json.loads((vectors_dir / "07_nul.json").read_text())
    stamp = vector["request"]["fields"][0]["text"].encode()
    TimeSync("script", script).handle(nul(stamp))
    assert script.read_text().splitlines()[1] == f"date -u '{stamp.decode()}'"


def test_next_stamp_replaces_the_script(script: Path) -> None:
    """Each valid NUL replaces the script with the newest time."""
    sync = TimeSync("script", script)
    sync.handle(nul(b"120420182026.49"))
    sync.handle(nul(b"010100002027.00"))
    assert script.read_bytes() == b"#!/bin/sh\ndate -u '010100002027.00'\nhwclock --systohc\n"


def test_script_mode_is_configurable(script: Path) -> None:
    """script_mode sets the permission bits whatever the umask."""
    old = os.umask(0o077)
    try:
        TimeSync("script", script, script_mode=0o644).handle(nul(b"120420182026.49"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(script.stat().st_mode) == 0o644


@pytest.mark.parametrize(
    "stamp",
    [
        b"",
        b"12042018202.49",  # 14 characters
        b"1204201820266.49",  # 16 characters
        b"1204201820264900",  # missing dot
        b"120420182026,49",
        b"12042018202a.49",  # non-digit
        b"023020002026.00",  # 30 February
        b"022920002026.00",  # 29 February in a non-leap year
        b"130420182026.49",  # month 13
        b"001020002026.00",  # month 0
        b"120424002026.00",  # hour 24
        b"120420602026.00",  # minute 60
        b"120420182026.60",  # second 60
        b"1204201820'6.49",  # shell quote
        b"$(reboot)2026.4",  # command substitution
        b"120420182026.4;",  # separator
        b"1204 01820.6.49",
        b"120420182026.49\n",
        b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00.\x00\x00",
        "١٢٠٤٢٠١٨٢٠٢٦.٤٩".encode(),  # Arabic-Indic digits
        b"120420181999.00",  # before 2020
        b"120420182101.00",  # after 2100
    ],
)
def test_malformed_stamp_is_refused_and_the_script_untouched(script: Path, stamp: bytes) -> None:
    """A malformed or absurd stamp raises RequestRefused and leaves the
    previous script byte for byte (and nothing else appears)."""
    sync = TimeSync("script", script)
    sync.handle(nul(b"120420182026.49"))
    before = script.stat()
    with pytest.raises(RequestRefused):
        sync.handle(nul(stamp))
    assert script.read_bytes() == EXPECTED
    assert script.stat().st_ino == before.st_ino
    assert sorted(p.name for p in script.parent.iterdir()) == ["timesync.sh"]


def test_year_bounds_are_inclusive_and_configurable(script: Path) -> None:
    """2020 and 2100 are accepted by default; narrower bounds refuse more."""
    sync = TimeSync("script", script)
    sync.handle(nul(b"010100002020.00"))
    sync.handle(nul(b"123123592100.59"))
    narrow = TimeSync("script", script, min_year=2025, max_year=2030)
    with pytest.raises(RequestRefused, match="2025..2030"):
        narrow.handle(nul(b"010100002024.00"))


def test_off_mode_validates_but_writes_nothing(tmp_path: Path) -> None:
    """Mode off still refuses malformed stamps and never writes a file."""
    sync = TimeSync("off", tmp_path / "timesync.sh")
    sync.handle(nul(b"120420182026.49"))
    with pytest.raises(RequestRefused):
        sync.handle(nul(b"023020002026.00"))
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory_is_a_refusal(tmp_path: Path) -> None:
    """When the script cannot be written the NUL is reported, not crashed."""
    directory = tmp_path / "gone"
    directory.mkdir()
    sync = TimeSync("script", directory / "timesync.sh")
    directory.rmdir()
    with pytest.raises(RequestRefused, match="cannot write"):
        sync.handle(nul(b"120420182026.49"))


def test_large_host_clock_skew_is_logged(script: Path) -> None:
    """With a host clock, a difference of a minute or more is logged as a warning."""
    events: list[dict] = []  # type: ignore[type-arg]
    host = datetime.datetime(2026, 12, 4, 20, 0, 0, tzinfo=datetime.timezone.utc).timestamp()
    sync = TimeSync("script", script, now=lambda: host)

    def observe(event: dict) -> None:  # type: ignore[type-arg]
        if event.get("log_namespace", "").startswith("signer.server.timesync"):
            events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        sync.handle(nul(b"120420182026.49"))
        sync.handle(nul(b"120420002026.30"))
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(events) == 1
    assert events[0]["log_level"] == LogLevel.warn
    assert formatEvent(events[0]) == "Host clock differs from the client's by -1129 s"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "ntp"},
        {"mode": "script"},
        {"mode": "script", "script_path": Path("/nonexistent/dir/timesync.sh")},
        {"mode": "off", "min_year": 2100, "max_year": 2020},
        {"mode": "off", "script_mode": 0o10000},
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict[str, object]) -> None:
    """Unknown modes, a missing script path or directory and bad bounds raise ValueError."""
    with pytest.raises(ValueError):
        TimeSync(**kwargs)  # type: ignore[arg-type]


def test_script_text_round_trips_the_parsed_moment() -> None:
    """The script is formatted from the parsed datetime."""
    moment = codec.parse_nul_timestamp(b"022920002024.05")
    assert script_text(moment) == "#!/bin/sh\ndate -u '022920002024.05'\nhwclock --systohc\n"


def test_write_atomically_leaves_no_temporary_on_failure(tmp_path: Path) -> None:
    """A failing replace (target is a directory) removes the temporary file."""
    target = tmp_path / "timesync.sh"
    target.mkdir()
    with pytest.raises(OSError):
        write_atomically(target, b"x", 0o755)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["timesync.sh"]
