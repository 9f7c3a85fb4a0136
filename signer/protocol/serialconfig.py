"""The serial line configuration: a small, read-only TOML file.

The legacy daemons dumped and rewrote a ``Device::SerialPort`` file; ours is
written by the operator and only ever read. Format (see
``etc/serial.conf.example``)::

    [serial]
    device = "/dev/ttyUSB0"
    baudrate = 115200
    bytesize = 8
    parity = "N"
    stopbits = 1
    xonxoff = false
    rtscts = false

Only ``device`` is required. The same ``[serial]`` table may be embedded in a
role's main configuration and read with :func:`serial_config_from_table`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Union

#: Baud rates termios knows (pyserial accepts these on every POSIX system).
STANDARD_BAUDRATES = (
    50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200,
    38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000,
    1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000,
)
BYTESIZES = (5, 6, 7, 8)
PARITIES = {"N": "none", "E": "even", "O": "odd", "M": "mark", "S": "space"}
STOPBITS = (1, 1.5, 2)


class SerialConfigError(Exception):
    """The serial configuration is unreadable or has a bad value.

    The message names the file, the key and what was expected.
    """

    def __init__(self, source: str, key: str | None, problem: str) -> None:
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class SerialConfig:
    """How to open the serial line (defaults: 115200 8N1, no flow control)."""

    device: str
    baudrate: int = 115200
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1
    xonxoff: bool = False
    rtscts: bool = False

    def __post_init__(self) -> None:
        problem = _check(self)
        if problem is not None:
            key, text = problem
            raise SerialConfigError("SerialConfig", key, text)

    def describe(self) -> str:
        """Human summary for startup logs, e.g. ``/dev/ttyUSB0 115200 8N1``."""
        stop = f"{self.stopbits:g}"
        flow = ", ".join(
            name for name, on in (("xon/xoff", self.xonxoff), ("rts/cts", self.rtscts)) if on
        ) or "no flow control"
        return f"{self.device} {self.baudrate} {self.bytesize}{self.parity}{stop}, {flow}"


def _check(config: SerialConfig) -> tuple[str, str] | None:
    """The first bad field of ``config`` as ``(key, expectation)``, or None."""
    if not isinstance(config.device, str) or not config.device.strip():
        return "device", f"expected a non-empty device path, got {config.device!r}"
    if (
        isinstance(config.baudrate, bool)
        or not isinstance(config.baudrate, int)
        or config.baudrate not in STANDARD_BAUDRATES
    ):
        return "baudrate", (
            f"expected one of the standard rates ({', '.join(map(str, STANDARD_BAUDRATES))}), "
            f"got {config.baudrate!r}"
        )
    if isinstance(config.bytesize, bool) or config.bytesize not in BYTESIZES:
        return "bytesize", f"expected 5, 6, 7 or 8, got {config.bytesize!r}"
    if config.parity not in PARITIES:
        return "parity", (
            'expected "N", "E", "O", "M" or "S" (or none, even, odd, mark, space), '
            f"got {config.parity!r}"
        )
    if isinstance(config.stopbits, bool) or config.stopbits not in STOPBITS:
        return "stopbits", f"expected 1, 1.5 or 2, got {config.stopbits!r}"
    for name in ("xonxoff", "rtscts"):
        if not isinstance(getattr(config, name), bool):
            return name, f"expected true or false, got {getattr(config, name)!r}"
    return None


_KEYS = {f.name for f in fields(SerialConfig)}


def serial_config_from_table(table: Mapping[str, Any], source: str) -> SerialConfig:
    """Build a :class:`SerialConfig` from a parsed ``[serial]`` table.

    :param source: names the file (and table) in error messages.
    :raises SerialConfigError: on unknown keys, a missing device or bad values.
    """
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise SerialConfigError(
            source, unknown[0], f"unknown key; expected one of {', '.join(sorted(_KEYS))}"
        )
    if "device" not in table:
        raise SerialConfigError(source, "device", "missing; expected the serial device path")
    values = dict(table)
    parity = values.get("parity")
    if isinstance(parity, str):
        by_name = {name: letter for letter, name in PARITIES.items()}
        letter = by_name.get(parity.lower(), parity.upper())
        values["parity"] = letter if letter in PARITIES else parity
    candidate = object.__new__(SerialConfig)
    for name in _KEYS:
        default = getattr(SerialConfig, name, None)
        object.__setattr__(candidate, name, values.get(name, default))
    problem = _check(candidate)
    if problem is not None:
        key, text = problem
        raise SerialConfigError(source, key, text)
    return SerialConfig(**{name: getattr(candidate, name) for name in _KEYS})


def load_serial_config(path: Union[str, Path]) -> SerialConfig:
    """Read the serial configuration file at ``path`` (never writes it).

    The keys live in a ``[serial]`` table.

    :raises SerialConfigError: when the file cannot be read, is not TOML, has
        no ``[serial]`` table, or has a bad key or value.
    """
    source = str(path)
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise SerialConfigError(source, None, f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SerialConfigError(source, None, f"not valid TOML: {exc}") from None
    extra = sorted(set(document) - {"serial"})
    if extra:
        raise SerialConfigError(source, extra[0], "unknown key or table; expected only [serial]")
    table = document.get("serial")
    if not isinstance(table, dict):
        raise SerialConfigError(source, "serial", "missing [serial] table")
    return serial_config_from_table(table, f"{source} [serial]")
