"""`twistd signer-client`: options, makeService, health page, startup errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.application.service import IServiceCollection
from twisted.internet import reactor
from twisted.python import usage

from signer import _tap_client
from signer.client.service import HealthService, PollingService, SerialLinkService, WebDBService, make_client_service
from tests.client.conftest import World

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
    assert kinds == [WebDBService, SerialLinkService, PollingService]
    service.parts.webdb.close()  # type: ignore[attr-defined]


def test_twistd_lists_the_plugin() -> None:
    """`twistd signer-client --help` works through the plugin line."""
    result = subprocess.run([str(BIN / "twistd"), "signer-client", "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout and "--serial-config" in result.stdout


@pytest_twisted.inlineCallbacks
def test_health_page(world: World) -> None:
    """The health page answers JSON with rounds, link state and pending rows per table."""
    from twisted.web.client import Agent, readBody

    world.db.add_cert("emailcerts", 1, 10, "/CN=pending")
    config = dataclasses.replace(world.config, health_address="tcp:0:interface=127.0.0.1")
    service = make_client_service(config, None, reactor, requester=world.signer)
    service.startService()
    try:
        health = [child for child in service if isinstance(child, HealthService)][0]  # type: ignore[attr-defined]
        from tests.client.test_service import wait_until

        yield wait_until(lambda: health._listening is not None)
        port = health._listening.getHost().port
        response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}/".encode())
        body = json.loads((yield readBody(response)))
    finally:
        yield service.stopService()
    assert body["pending"]["emailcerts"] in (0, 1)
    assert set(body) >= {"link_state", "rounds", "seconds_since_last_round_trip", "crl_age_seconds", "pending"}


def test_json_log_format_writes_json_lines(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """log_format = "json" adds a JSON-lines observer on stderr while the service runs."""
    from twisted.logger import Logger

    from signer.client.service import _JsonLogService

    config = dataclasses.replace(world.config, log_format="json")
    service = make_client_service(config, None, reactor, requester=world.signer)
    json_services = [child for child in service if isinstance(child, _JsonLogService)]  # type: ignore[attr-defined]
    assert len(json_services) == 1
    json_services[0].startService()
    try:
        Logger(namespace="signer.test").info("hello {who}", who="json")
    finally:
        json_services[0].stopService()
        service.parts.webdb.close()  # type: ignore[attr-defined]
    lines = [line.strip("\x1e") for line in capsys.readouterr().err.splitlines() if "hello" in line]
    assert lines and json.loads(lines[-1])["who"] == "json"


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
