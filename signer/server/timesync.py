"""NUL keep-alives: strict timestamp validation and the time-sync action.

The signing host has no network and no NTP; the client (whose clock NTP keeps
right) sends its UTC time in every NUL request as ``MMDDhhmmYYYY.SS``, the
``date`` command's set-time format. This module validates it strictly and,
when configured, hands it on:

- ``off``: validate only.
- ``script``: write the legacy server's ``timesync.sh`` for an outside job
  (root's cron or a systemd timer) to run::

      #!/bin/sh
      date -u '<MMDDhhmmYYYY.SS>'
      hwclock --systohc

  The legacy server wrote exactly the last two lines (no ``#!`` line, mode
  0666 minus the umask); the ``#!/bin/sh`` line only makes the file directly
  executable and changes nothing for ``sh timesync.sh``. The stamp in the file
  is re-formatted from the parsed datetime, never copied from the wire. The
  file is written atomically: a temporary file in the same directory, fsync,
  ``os.replace``, fsync of the directory. Mode 0755 by default (configurable).

Sanity bounds: the host clock may be arbitrarily wrong, so a stamp is never
compared with it to decide anything (the difference is only logged). A stamp
must lie between ``min_year`` (default 2020) and ``max_year`` (default 2100)
inclusive: older or later clocks are a broken client, not a time to set.

:meth:`TimeSync.handle` does a little blocking file I/O (one small file and
two fsyncs): the dispatcher runs it through its blocking runner (a thread);
it is also cheap enough to run inline.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from pathlib import Path
from typing import Callable

from twisted.logger import Logger

from signer.protocol import codec
from signer.server.errors import RequestRefused

MODES = ("off", "script")
SCRIPT_NAME = "timesync.sh"
DEFAULT_MIN_YEAR = 2020
DEFAULT_MAX_YEAR = 2100
DEFAULT_SCRIPT_MODE = 0o755


def script_text(moment: datetime.datetime) -> str:
    """The legacy-compatible ``timesync.sh`` setting the clock to ``moment`` (UTC)."""
    stamp = codec.format_nul_timestamp(moment).decode("ascii")
    return f"#!/bin/sh\ndate -u '{stamp}'\nhwclock --systohc\n"


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` by ``data`` (mode ``mode``) so that readers see the old
    or the new file, never a partial one, even across a crash."""
    directory = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


class TimeSync:
    """Validates NUL timestamps and runs the configured time-sync action.

    :param mode: ``"off"`` or ``"script"``.
    :param script_path: the ``timesync.sh`` to write (``script`` mode); its
        directory must exist.
    :param script_mode: permission bits of the script.
    :param min_year: earliest accepted year.
    :param max_year: latest accepted year.
    :param now: the host clock (seconds since the epoch), only used to log
        how far the host is off; None to not log it.
    """

    log = Logger()

    def __init__(
        self,
        mode: str = "off",
        script_path: Path | None = None,
        *,
        script_mode: int = DEFAULT_SCRIPT_MODE,
        min_year: int = DEFAULT_MIN_YEAR,
        max_year: int = DEFAULT_MAX_YEAR,
        now: Callable[[], float] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"time-sync mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == "script":
            if script_path is None:
                raise ValueError("time-sync mode 'script' needs a script path")
            if not Path(script_path).parent.is_dir():
                raise ValueError(f"time-sync script directory {Path(script_path).parent} does not exist")
        if not 0 <= script_mode <= 0o777:
            raise ValueError(f"time-sync script mode {script_mode:o} is not a permission mode")
        if not 1 <= min_year <= max_year <= 9999:
            raise ValueError(f"time-sync years {min_year}..{max_year} are not a valid range")
        self.mode = mode
        self.script_path = Path(script_path) if script_path is not None else None
        self.script_mode = script_mode
        self.min_year = min_year
        self.max_year = max_year
        self.now = now

    def validate(self, raw: bytes) -> datetime.datetime:
        """The UTC moment in ``raw``; :class:`RequestRefused` unless it is a
        real ``MMDDhhmmYYYY.SS`` date within the year bounds."""
        try:
            moment = codec.parse_nul_timestamp(raw)
        except codec.MessageError as exc:
            raise RequestRefused(str(exc)) from None
        if not self.min_year <= moment.year <= self.max_year:
            raise RequestRefused(
                f"NUL timestamp {raw.decode('ascii')} lies outside the years "
                f"{self.min_year}..{self.max_year}"
            )
        return moment

    def handle(self, request: codec.NulRequest) -> None:
        """Validate the NUL's timestamp and run the action. Blocking (tiny).

        Raises :class:`RequestRefused` for a malformed timestamp (nothing is
        written then) or when the script cannot be written.
        """
        moment = self.validate(request.timestamp)
        if self.now is not None:
            skew = self.now() - moment.timestamp()
            if abs(skew) >= 60:
                self.log.warn(
                    "Host clock differs from the client's by {skew:.0f} s", skew=skew
                )
        if self.mode == "off":
            return
        assert self.script_path is not None
        try:
            write_atomically(self.script_path, script_text(moment).encode("ascii"), self.script_mode)
        except OSError as exc:
            raise RequestRefused(
                f"cannot write time-sync script {self.script_path}: {exc.strerror or exc}"
            ) from None
