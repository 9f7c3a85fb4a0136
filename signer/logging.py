"""Log observers for the signer daemons: text for people, JSON lines for log shippers.

Use them with twistd's ``--logger`` (a factory called without arguments)::

    twistd -n --logger signer.logging.json_observer signer-server --config FILE
    twistd -n --logger signer.logging.text_observer signer-server --config FILE
    twistd -n --logger signer.logging.observer ...   # format from SIGNER_LOG_FORMAT

Each writes to standard output (journald under systemd), or, when the
environment names one in ``SIGNER_LOG_FILE``, appends to that file. The file
is opened in append mode (``O_APPEND``), so an outside rotation with
logrotate's ``copytruncate`` is safe (see ``etc/logrotate.d/signer``). Do not
combine ``--logfile`` with logrotate: twistd's own log file rotates itself at
1 MB into ``.1``, ``.2``, ... and, after an outside truncation, keeps writing
at its old offset.

Standard output goes to /dev/null when twistd daemonizes: use these factories with
``--nodaemon`` (as the systemd units do) or with ``SIGNER_LOG_FILE``.

The ``.tac`` file (``etc/signer.tac``) picks the format from ``log_format``
in the role's configuration through :func:`observer_for`.

One JSON object per line, flat, for Loki, Elasticsearch, Vector...::

    {"time": "2026-12-04T21:09:07.123456Z", "level": "info",
     "namespace": "signer.server.dispatcher.Dispatcher",
     "message": "nul request served: 0 bytes answered in 1.2 ms (44 bytes on the wire)",
     "kind": "nul", "outcome": "served", "size": 0, "ms": 1.2, "bytes_on_wire": 44}

The event's named fields come after the fixed keys ``time``, ``level``,
``namespace``, ``message`` (and ``traceback`` for a failure); a field whose
name clashes with a fixed key is written as ``field_<name>``. Values JSON
cannot carry are written as their ``str()``.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from typing import IO, Any, Callable, Mapping

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogLevel,
    formatEvent,
    textFileLogObserver,
)

__all__ = [
    "FORMATS",
    "event_as_line",
    "json_file_observer",
    "json_observer",
    "log_output",
    "observer",
    "observer_for",
    "text_observer",
]

FORMATS = ("text", "json")
#: Environment: the format of :func:`observer` ("text" or "json").
FORMAT_ENV = "SIGNER_LOG_FORMAT"
#: Environment: a file to append to instead of standard output.
FILE_ENV = "SIGNER_LOG_FILE"

_FIXED = ("time", "level", "namespace", "message", "traceback")
#: Keys Twisted's legacy log system puts into events; never copied as fields.
_LEGACY = frozenset({"message", "format", "isError", "system", "time", "why", "failure", "printed"})


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return str(value)
    return value


def event_as_line(event: Mapping[str, Any]) -> str:
    """One flat JSON object (no newline) for a twisted.logger event."""
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": _iso(event.get("log_time")),
        "level": level.name if isinstance(level, type(LogLevel.info)) else str(level or "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(dict(event)),
    }
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:  # a broken failure must not break logging
            record["traceback"] = repr(failure)
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY:
            continue
        name = f"field_{key}" if key in _FIXED else key
        record[name] = _json_safe(value)
    try:
        return json.dumps(record, ensure_ascii=False)
    except (TypeError, ValueError):  # e.g. a dict field holding odd keys
        return json.dumps({k: _json_safe(v) if not isinstance(v, dict) else str(v) for k, v in record.items()})


def json_file_observer(out: IO[str]) -> FileLogObserver:
    """An observer writing :func:`event_as_line` lines to ``out``."""
    return FileLogObserver(out, lambda event: event_as_line(event) + "\n")


def observer_for(log_format: str, out: IO[str] | None = None) -> ILogObserver:
    """The observer for ``log_format`` ("text" or "json") writing to ``out``
    (default: :func:`log_output`)."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")
    stream = log_output() if out is None else out
    if log_format == "json":
        return json_file_observer(stream)
    return textFileLogObserver(stream)


def log_output(environ: Mapping[str, str] | None = None) -> IO[str]:
    """Where the observers write: ``$SIGNER_LOG_FILE`` (appended) or standard output."""
    environ = os.environ if environ is None else environ
    path = environ.get(FILE_ENV)
    if path:
        return open(path, "a", encoding="utf-8", buffering=1)
    return sys.stdout


def json_observer() -> ILogObserver:
    """``--logger`` factory: JSON lines to standard output or ``$SIGNER_LOG_FILE``."""
    return observer_for("json")


def text_observer() -> ILogObserver:
    """``--logger`` factory: twistd's text lines to standard output or ``$SIGNER_LOG_FILE``."""
    return observer_for("text")


def observer() -> ILogObserver:
    """``--logger`` factory: the format named by ``$SIGNER_LOG_FORMAT`` (default text)."""
    return observer_for(os.environ.get(FORMAT_ENV, "text") or "text")


#: The factories by format, for the .tac file.
FACTORIES: dict[str, Callable[[], ILogObserver]] = {"text": text_observer, "json": json_observer}
