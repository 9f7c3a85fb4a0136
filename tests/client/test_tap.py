"""`twistd signer-client`: options, makeService, health pages, log format, startup errors.

The last test runs a real ``twistd signer-client`` over a socat pty pair
against the scripted responder and reads its health pages and its JSON log.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.application.service import IServiceCollection
from twisted.internet import reactor
from twisted.python import usage

from signer import _tap_client
from signer.client.service import PollingService, WebDBService, make_client_service
from signer.health import HealthService
from signer.protocol.service import SerialLineService
from tests.client.conftest import World
from tests.support.pty import pty_pair, socat_available

BIN = Path(sys.executable).parent


def write_config(tmp_path: Path, serial: str | None) -> Path:
    (tmp_path / "webdb.sqlite").touch()
    text = '[database]\ndriver = "sqlite"\nsqlite_path = "webdb.sqlite"\n'
    if serial:
        text += f'[link]\nserial_config = "{serial}"\n'
    text += '[files]\ncsr_dir = "csr"\ncrt_dir = "crt"\n'
    path = tmp_path / "client.toml"
    path.write_text(text)
    return path


def test_config_is_required_and_must_exist(tmp_path: Path) -> None:
    """postOptions refuses a missing --config and files that do not exist."""
    with pytest.raises(usage.UsageError, match="--config FILE is required"):
        _tap_client.Options().parseOptions([])
    with pytest.raises(usage.UsageError, match="not a readable file"):
        _tap_client.Options().parseOptions(["--config", str(tmp_path / "nope.toml")])


def test_config_errors_become_usage_errors(tmp_path: Path) -> None:
    """A bad configuration stops startup with the file and key named."""
    path = tmp_path / "bad.toml"
    path.write_text('[database]\ndriver = "oracle"\n[files]\ncsr_dir="a"\ncrt_dir="b"\n')
    options = _tap_client.Options()
    options.parseOptions(["--config", str(path)])
    with pytest.raises(usage.UsageError, match="database.driver"):
        _tap_client.makeService(options)
    options = _tap_client.Options()
    options.parseOptions(["--config", str(write_config(tmp_path, None))])
    with pytest.raises(usage.UsageError, match="serial_config"):
        _tap_client.makeService(options)


def test_make_service_wires_the_services(tmp_path: Path) -> None:
    """makeService returns the MultiService: WebDB, serial line, polling (in stop order reversed)."""
    serial = tmp_path / "serial.conf"
    serial.write_text('[serial]\ndevice = "/dev/ttyS99"\nbaudrate = 9600\n')
    options = _tap_client.Options()
    options.parseOptions(["--config", str(write_config(tmp_path, str(serial)))])
    service = _tap_client.makeService(options)
    assert IServiceCollection.providedBy(service)
    kinds = [type(child) for child in service]  # type: ignore[attr-defined]
    assert kinds == [WebDBService, SerialLineService, PollingService]
    line = list(service)[1]  # type: ignore[call-overload]
    assert line.serial.device == "/dev/ttyS99" and line.protocol is service.parts.protocol  # type: ignore[attr-defined]
    service.parts.webdb.close()  # type: ignore[attr-defined]


def test_twistd_lists_the_plugin() -> None:
    """`twistd signer-client --help` works through the plugin line."""
    result = subprocess.run([str(BIN / "twistd"), "signer-client", "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout and "--serial-config" in result.stdout


@pytest.mark.filterwarnings("ignore:Using readBody with a transport:DeprecationWarning")
@pytest_twisted.inlineCallbacks
def test_health_pages(world: World) -> None:
    """[health] address serves the shared pages: /health (JSON with rounds, link,
    pending rows per table) and /metrics (Prometheus) with the pending gauge."""
    from prometheus_client.parser import text_string_to_metric_families
    from twisted.web.client import Agent, readBody

    world.db.add_cert("emailcerts", 1, 10, "/CN=pending", warning=3)  # over the threshold: not pending
    world.db.add_cert("domaincerts", 2, 10, "/CN=pending", warning=3)
    config = dataclasses.replace(world.config, health_address="tcp:0")
    service = make_client_service(config, None, reactor, requester=world.signer)
    service.startService()
    try:
        health = [child for child in service if isinstance(child, HealthService)][0]  # type: ignore[attr-defined]
        port = yield health.when_listening()
        address = port.getHost()
        assert address.host == "127.0.0.1"  # loopback unless an interface is named
        base = f"http://127.0.0.1:{address.port}"
        response = yield Agent(reactor).request(b"GET", f"{base}/health".encode())
        assert response.code == 200
        body = json.loads((yield readBody(response)))
        world.db.execute("UPDATE emailcerts SET warning = 0 WHERE id = 1")  # pending now
        response = yield Agent(reactor).request(b"GET", f"{base}/metrics".encode())
        assert response.code == 200
        text = (yield readBody(response)).decode()
    finally:
        yield service.stopService()
    assert body["role"] == "client"
    assert body["pending"]["emailcerts"] == 0 and body["pending"]["gpg"] == 0
    assert body["link"]["state"] == "unknown"  # the fake signer stands in for the link
    assert set(body) >= {"rounds", "last_round_aborted", "crl", "wakeup", "status", "problems"}
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("signer_pending_requests", (("table", "emailcerts"),))] == 1  # read at the request
    assert samples[("signer_pending_requests", (("table", "domaincerts"),))] == 0
    assert samples[("signer_webdb_readable", ())] == 1


@pytest_twisted.inlineCallbacks
def test_service_adds_no_log_observer(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """[logging] format = "json" no longer makes the service add an observer of its
    own (that logged every event twice under twistd): while the service runs,
    an event reaches neither standard output nor standard error through it."""
    from twisted.logger import Logger

    config = dataclasses.replace(world.config, log_format="json")
    service = make_client_service(config, None, reactor, requester=world.signer)
    assert [type(child) for child in service] == [WebDBService, PollingService]  # type: ignore[attr-defined]
    service.startService()
    try:
        Logger(namespace="signer.test").info("hello {who}", who="json")
    finally:
        yield service.stopService()
    captured = capsys.readouterr()
    assert "hello" not in captured.out and "hello" not in captured.err


def test_tac_applies_the_client_log_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """etc/signer.tac with SIGNER_ROLE=client: [logging] format = "json" makes the
    application's log observer write one JSON object per event."""
    from twisted.application.service import IService, loadApplication
    from twisted.logger import ILogObserver, LogLevel, LogPublisher, Logger

    serial = tmp_path / "serial.conf"
    serial.write_text('[serial]\ndevice = "/dev/ttyS99"\n')
    config = write_config(tmp_path, str(serial))
    config.write_text(config.read_text() + '[logging]\nformat = "json"\n')
    log = tmp_path / "out.log"
    for name in ("SIGNER_SERIAL_CONFIG", "SIGNER_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SIGNER_ROLE", "client")
    monkeypatch.setenv("SIGNER_CONFIG", str(config))
    monkeypatch.setenv("SIGNER_LOG_FILE", str(log))
    application = loadApplication(str(Path(__file__).resolve().parents[2] / "etc" / "signer.tac"), "python")
    (service,) = list(IService(application))  # type: ignore[call-overload]
    try:
        assert service.parts.config.log_format == "json"
        observer = application.getComponent(ILogObserver)
        Logger(namespace="tac", observer=LogPublisher(observer)).emit(LogLevel.info, "hello {who}", who="ops")
    finally:
        service.parts.webdb.close()
    (line,) = log.read_text().splitlines()
    record = json.loads(line)
    assert record["message"] == "hello ops" and record["who"] == "ops"


def test_wakeup_table_switches_polling_to_the_trigger(world: World) -> None:
    """[wakeup] source = "redis" wires a WakeupService and polls the trigger at the fallback interval."""
    from signer.client.wakeup_config import parse_wakeup_table
    from signer.client.wakeup_trigger import WakeupService, WakeupTrigger

    wakeup = parse_wakeup_table({"source": "redis", "fallback_interval": 42.0}, "<test>", world.tmp)
    config = dataclasses.replace(world.config, wakeup=wakeup)
    service = make_client_service(config, None, reactor, requester=world.signer)
    try:
        polling = [c for c in service if isinstance(c, PollingService)][0]  # type: ignore[attr-defined]
        assert isinstance(polling.jobs, WakeupTrigger) and polling.interval == 42.0
        assert [c for c in service if isinstance(c, WakeupService)]  # type: ignore[attr-defined]
    finally:
        service.parts.webdb.close()  # type: ignore[attr-defined]
    off = make_client_service(dataclasses.replace(world.config, wakeup=parse_wakeup_table({}, "<t>", world.tmp)),
                              None, reactor, requester=world.signer)
    try:
        polling = [c for c in off if isinstance(c, PollingService)][0]  # type: ignore[attr-defined]
        assert polling.interval == world.config.polling.interval
        assert not isinstance(polling.jobs, WakeupTrigger)
    finally:
        off.parts.webdb.close()  # type: ignore[attr-defined]


@pytest.mark.skipif(not socat_available(), reason="socat is not installed")
def test_twistd_client_serves_health_and_logs_each_event_once(tmp_path: Path) -> None:
    """A real `twistd --logger signer.logging.json_observer signer-client` with
    [logging] format = "json" and [health] address = "tcp:0", over a pty pair to the
    scripted responder: /health and /metrics answer on loopback with the round trip
    and the pending rows read live from the WebDB; every log line is one JSON object
    and no event is logged twice; SIGTERM closes the line."""
    import os
    import re
    import signal
    import time
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from tests.support.webdb import sqlite_webdb

    repo = Path(__file__).resolve().parents[2]
    db = sqlite_webdb(tmp_path / "webdb.sqlite")
    log = tmp_path / "client.log"

    def wait_for(condition: Any, what: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = condition()
            if found:
                return found
            assert client.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, f"{what}\n{log.read_text()[-4000:]}"
            time.sleep(0.05)

    def fetch(url: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()

    with pty_pair() as pair:
        responder = subprocess.Popen(
            [sys.executable, "-m", "tests.support.responder", "--device", pair.b],
            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            assert responder.stdout is not None and responder.stdout.readline().startswith("READY")
            serial = tmp_path / "serial.conf"
            serial.write_text(f'[serial]\ndevice = "{pair.a}"\n')
            config = write_config(tmp_path, str(serial))  # no [[roots]]: no CRL requests
            config.write_text(
                config.read_text()
                + '[polling]\ninterval = 3600.0\n[logging]\nformat = "json"\n[health]\naddress = "tcp:0"\n'
            )
            environ = {k: v for k, v in os.environ.items() if k not in ("SIGNER_LOG_FILE", "SIGNER_LOG_FORMAT")}
            with log.open("wb") as out:
                client = subprocess.Popen(
                    [sys.executable, str(BIN / "twistd"), "-n", "--pidfile=",
                     "--logger", "signer.logging.json_observer", "signer-client", "--config", str(config)],
                    cwd=tmp_path, env=environ, stdout=out, stderr=subprocess.STDOUT,
                )
            try:
                found = wait_for(lambda: re.search(r"health pages on http://127\.0\.0\.1:(\d+)", log.read_text()),
                                 "health pages")
                base = f"http://127.0.0.1:{found.group(1)}"
                wait_for(lambda: json.loads(fetch(f"{base}/health")[1])["rounds"] >= 1, "the first round")
                status, raw = fetch(f"{base}/health")
                report = json.loads(raw)
                db.add_cert("emailcerts", 1, 10, "/CN=waiting")  # pending from now on
                status_metrics, metrics = fetch(f"{base}/metrics")
            finally:
                client.send_signal(signal.SIGTERM)
                client.wait(timeout=30)
        finally:
            responder.terminate()
            responder.wait(timeout=10)
            db.close()

    assert status == 200 and report["role"] == "client" and report["status"] == "ok"
    assert report["link"]["state"] == "idle" and report["link"]["last_success"] is not None
    assert report["link"]["counters"]["frames_in"] == 1  # the keep-alive NUL's answer
    assert report["pending"]["emailcerts"] == 0 and report["crl"] == {}
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.decode())
        for sample in family.samples
    }
    assert status_metrics == 200
    assert samples[("signer_pending_requests", (("table", "emailcerts"),))] == 1
    assert samples[("signer_polling_rounds_total", ())] == 1
    assert samples[("signer_link_frames_out_total", ())] == 1

    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON
    opened = [r for r in records if r["message"].startswith("Serial line open")]
    assert len(opened) == 1 and opened[0]["device"] == pair.a
    assert len([r for r in records if r["message"].startswith("health pages on")]) == 1
    assert len(records) == len({(r["time"], r["namespace"], r["message"]) for r in records})  # none twice
    assert any(r["message"] == f"Serial line closed: {pair.a}" for r in records)
    assert not any("traceback" in r for r in records)
