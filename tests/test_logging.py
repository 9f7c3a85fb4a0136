"""Log observers of signer.logging: flat JSON lines, text, files safe for copytruncate."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.failure import Failure

from signer.logging import (
    event_as_line,
    json_file_observer,
    json_observer,
    log_output,
    observer,
    observer_for,
    text_observer,
)

T = 1796385600.123456  # 2026-12-04T12:00:00.123456Z


def emit(observer_: object, level: LogLevel, fmt: str, **fields: object) -> None:
    """Send one event through a real Logger to ``observer_``."""
    publisher = LogPublisher(observer_)  # type: ignore[arg-type]
    Logger(namespace="signer.test", observer=publisher).emit(level, fmt, **fields)


def test_event_is_one_flat_json_object() -> None:
    """Fixed keys first (time, level, namespace, message), then the named fields as they are."""
    event = {
        "log_format": "{kind} request {outcome} in {ms:.1f} ms",
        "log_level": LogLevel.info,
        "log_namespace": "signer.server.dispatcher.Dispatcher",
        "log_time": T,
        "log_logger": object(),
        "kind": "sign-x509",
        "outcome": "served",
        "ms": 12.345,
        "bytes_on_wire": 2385,
    }
    line = event_as_line(event)
    assert "\n" not in line
    record = json.loads(line)
    assert list(record)[:4] == ["time", "level", "namespace", "message"]
    assert record == {
        "time": "2026-12-04T12:00:00.123456Z",
        "level": "info",
        "namespace": "signer.server.dispatcher.Dispatcher",
        "message": "sign-x509 request served in 12.3 ms",
        "kind": "sign-x509",
        "outcome": "served",
        "ms": 12.345,
        "bytes_on_wire": 2385,
    }


def test_odd_values_clashing_names_and_failures() -> None:
    """bytes and objects become text, a field named like a fixed key is renamed,
    a failure's traceback goes into "traceback"."""
    try:
        raise ValueError("bad CSR")
    except ValueError:
        failure = Failure()
    record = json.loads(
        event_as_line(
            {
                "log_format": "oops {path}",
                "log_level": LogLevel.error,
                "log_namespace": "x",
                "log_time": T,
                "log_failure": failure,
                "path": Path("/tmp/a"),
                "raw": b"\xffab",
                "level": "mine",
            }
        )
    )
    assert record["level"] == "error"
    assert record["field_level"] == "mine"
    assert record["path"] == "/tmp/a"
    assert record["raw"] == "\ufffdab"
    assert record["message"] == "oops /tmp/a"
    assert "ValueError: bad CSR" in record["traceback"]


def test_json_observer_writes_one_line_per_event() -> None:
    """Events through a Logger come out as one parseable JSON line each."""
    out = io.StringIO()
    observer_ = json_file_observer(out)
    emit(observer_, LogLevel.warn, "NAK {count}", count=2)
    emit(observer_, LogLevel.info, "second")
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["NAK 2", "second"]
    assert json.loads(lines[0])["level"] == "warn" and json.loads(lines[0])["count"] == 2


def test_text_format_is_twisteds_text() -> None:
    """The text observer writes twistd's usual "time [namespace#level] message" lines."""
    out = io.StringIO()
    emit(observer_for("text", out), LogLevel.info, "serving on {device}", device="/dev/ttyUSB0")
    assert out.getvalue().rstrip().endswith("[signer.test#info] serving on /dev/ttyUSB0")


def test_unknown_format_refused() -> None:
    """A format other than text/json is a ValueError naming the choices."""
    with pytest.raises(ValueError, match="text, json"):
        observer_for("xml", io.StringIO())


def test_factories_follow_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--logger factories: SIGNER_LOG_FILE is appended to (old lines kept),
    SIGNER_LOG_FORMAT picks the format of signer.logging.observer."""
    target = tmp_path / "signer.log"
    target.write_text("old line\n")
    monkeypatch.setenv("SIGNER_LOG_FILE", str(target))
    monkeypatch.setenv("SIGNER_LOG_FORMAT", "json")
    emit(observer(), LogLevel.info, "from observer")
    emit(json_observer(), LogLevel.info, "from json_observer")
    emit(text_observer(), LogLevel.info, "from text_observer")
    lines = target.read_text().splitlines()
    assert lines[0] == "old line"
    assert json.loads(lines[1])["message"] == "from observer"
    assert json.loads(lines[2])["message"] == "from json_observer"
    assert lines[3].endswith("from text_observer")
    monkeypatch.delenv("SIGNER_LOG_FILE")
    assert log_output() is __import__("sys").stdout


def test_log_file_survives_copytruncate(tmp_path: Path) -> None:
    """The log file is opened O_APPEND: after an outside truncation (logrotate's
    copytruncate) the next line lands at the start, with no hole of NUL bytes."""
    target = tmp_path / "signer.log"
    stream = log_output({"SIGNER_LOG_FILE": str(target)})
    try:
        assert stream.mode == "a"
        observer_ = observer_for("json", stream)
        emit(observer_, LogLevel.info, "before rotation " + "x" * 500)
        os.truncate(target, 0)  # what copytruncate does after copying
        emit(observer_, LogLevel.info, "after rotation")
    finally:
        stream.close()
    data = target.read_bytes()
    assert b"\x00" not in data
    assert json.loads(data)["message"] == "after rotation"
