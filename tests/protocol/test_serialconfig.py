"""The read-only serial configuration file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from signer.protocol.serialconfig import (
    SerialConfig,
    SerialConfigError,
    load_serial_config,
    serial_config_from_table,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "serial.conf"
    path.write_text(text)
    return path


def test_example_file_loads_with_legacy_defaults() -> None:
    """etc/serial.conf.example is valid and spells out the legacy 115200 8N1."""
    config = load_serial_config(REPO / "etc" / "serial.conf.example")
    assert config == SerialConfig(device="/dev/ttyUSB0")
    assert config.describe() == "/dev/ttyUSB0 115200 8N1, no flow control"


def test_example_file_documents_every_key() -> None:
    """Every SerialConfig field appears as a key in the example file."""
    text = (REPO / "etc" / "serial.conf.example").read_text()
    for key in ("device", "baudrate", "bytesize", "parity", "stopbits", "xonxoff", "rtscts"):
        assert f"\n{key} = " in text


def test_only_device_is_required(tmp_path: Path) -> None:
    """Missing keys take the defaults."""
    config = load_serial_config(write(tmp_path, '[serial]\ndevice = "/dev/ttyS1"\n'))
    assert config == SerialConfig("/dev/ttyS1", 115200, 8, "N", 1, False, False)


def test_all_keys(tmp_path: Path) -> None:
    """Every key is read; parity accepts words, stop bits 1.5."""
    config = load_serial_config(
        write(
            tmp_path,
            "# comment\n[serial]\n"
            'device = "/dev/ttyUSB1"\nbaudrate = 9600\nbytesize = 7\n'
            'parity = "even"\nstopbits = 1.5\nxonxoff = true\nrtscts = true\n',
        )
    )
    assert config == SerialConfig("/dev/ttyUSB1", 9600, 7, "E", 1.5, True, True)
    assert config.describe() == "/dev/ttyUSB1 9600 7E1.5, xon/xoff, rts/cts"


def test_file_is_never_rewritten(tmp_path: Path) -> None:
    """Loading leaves the file byte for byte and mtime unchanged."""
    path = write(tmp_path, '[serial]\ndevice = "/dev/ttyS0"\n')
    os.utime(path, (1_000_000, 1_000_000))
    before = path.read_bytes()
    load_serial_config(path)
    assert path.read_bytes() == before and path.stat().st_mtime == 1_000_000


@pytest.mark.parametrize(
    "body, key, expected",
    [
        ('baudrate = 115201', "baudrate", "standard rates"),
        ('baudrate = "fast"', "baudrate", "standard rates"),
        ("bytesize = 9", "bytesize", "5, 6, 7 or 8"),
        ('parity = "Z"', "parity", '"N", "E", "O"'),
        ("parity = 1", "parity", '"N", "E", "O"'),
        ("stopbits = 3", "stopbits", "1, 1.5 or 2"),
        ("xonxoff = 1", "xonxoff", "true or false"),
        ('rtscts = "yes"', "rtscts", "true or false"),
        ('speed = 9600', "speed", "unknown key"),
    ],
)
def test_bad_values_name_file_key_and_expectation(
    tmp_path: Path, body: str, key: str, expected: str
) -> None:
    """Each bad value raises SerialConfigError naming file, key and expectation."""
    path = write(tmp_path, f'[serial]\ndevice = "/dev/ttyS0"\n{body}\n')
    with pytest.raises(SerialConfigError) as info:
        load_serial_config(path)
    message = str(info.value)
    assert str(path) in message and key in message and expected in message
    assert info.value.key == key


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("[serial]\nbaudrate = 9600\n", "device", "missing"),
        ('[serial]\ndevice = ""\n', "device", "non-empty"),
        ('device = "/dev/ttyS0"\n', "device", "unknown key or table"),
        ("", "serial", "missing [serial] table"),
        ('[serial]\ndevice = "/dev/x"\n[other]\n', "other", "unknown key or table"),
        ("[serial\n", None, "not valid TOML"),
    ],
)
def test_structure_errors(tmp_path: Path, text: str, key, expected: str) -> None:
    """Missing device, missing table, stray tables and broken TOML are refused."""
    path = write(tmp_path, text)
    with pytest.raises(SerialConfigError) as info:
        load_serial_config(path)
    assert expected in str(info.value) and str(path) in str(info.value)
    assert info.value.key == key


def test_missing_file(tmp_path: Path) -> None:
    """An unreadable file is a SerialConfigError naming it."""
    with pytest.raises(SerialConfigError, match="cannot read"):
        load_serial_config(tmp_path / "nope.conf")


def test_table_embedded_in_another_file() -> None:
    """serial_config_from_table reads a [serial] table parsed elsewhere."""
    config = serial_config_from_table({"device": "/dev/ttyS2", "parity": "o"}, "server.toml [serial]")
    assert config.parity == "O"
    with pytest.raises(SerialConfigError, match=r"server.toml \[serial\]: bytesize"):
        serial_config_from_table({"device": "/dev/ttyS2", "bytesize": True}, "server.toml [serial]")


def test_direct_construction_is_validated() -> None:
    """SerialConfig(...) itself refuses bad values."""
    with pytest.raises(SerialConfigError, match="stopbits"):
        SerialConfig("/dev/ttyS0", stopbits=4)
