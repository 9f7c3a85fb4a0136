"""Everything shipped under etc/ loads: systemd units, logrotate, the .tac file, example configs.

The unit files are always parsed and checked here; ``systemd-analyze verify``
and ``logrotate`` runs are added when those programs are installed (apt
packages ``systemd`` and ``logrotate``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IService, loadApplication
from twisted.logger import ILogObserver, Logger, LogLevel, LogPublisher

from signer.client.config import load_client_config
from signer.protocol.serialconfig import load_serial_config
from signer.server.config import load_server_config
from signer.server.testsigner import create_test_signer
from tests.support.gpg import KeyMaker, short_tempdir
from tests.support.pty import pty_pair, socat_available
from tests.support.testca import make_csr, make_root
from tests.test_health import running_server

REPO = Path(__file__).resolve().parents[1]
ETC = REPO / "etc"
UNITS = {"server": ETC / "systemd" / "signer-server.service", "client": ETC / "systemd" / "signer-client.service"}
LOGROTATE = ETC / "logrotate.d" / "signer"
TAC = ETC / "signer.tac"
BIN = Path(sys.executable).parent


# -- systemd units ------------------------------------------------------------------------


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}:{number}: key outside a section"
        assert "=" in line, f"{path}:{number}: not a key=value line: {raw!r}"
        key, value = (part.strip() for part in line.split("=", 1))
        current.setdefault(key, []).append(value)
    return sections


#: Hardening options every unit must set, with their value.
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "PrivateTmp": "yes",
    "ProtectHome": "yes",
    "PrivateDevices": "no",
    "DevicePolicy": "closed",
    "ProtectKernelTunables": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallFilter": "@system-service",
    "UMask": "0077",
    "KillSignal": "SIGTERM",
}


@pytest.mark.parametrize("role", ["server", "client"])
def test_unit_runs_the_plugin_as_an_unprivileged_user(role: str) -> None:
    """Each unit starts `twistd --nodaemon --pidfile= signer-<role> --config ...` as user
    signer with the serial group, restarts on failure and is enabled for multi-user."""
    unit = parse_unit(UNITS[role])
    service = unit["Service"]
    assert unit["Unit"]["Description"][0]
    assert service["Type"] == ["simple"]
    assert service["ExecStart"] == [
        f"/usr/bin/twistd --nodaemon --pidfile= signer-{role} --config /etc/signer/signer-{role}.toml"
    ]
    assert service["Restart"] == ["on-failure"]
    assert service["User"] == ["signer"] and service["Group"] == ["signer"]
    assert service["SupplementaryGroups"] == ["dialout"]
    assert re.fullmatch(r"\d+s?", service["TimeoutStopSec"][0])
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize("role", ["server", "client"])
def test_unit_hardening(role: str) -> None:
    """The hardening options are set; the serial devices are the only devices allowed."""
    service = parse_unit(UNITS[role])["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == [value], f"{UNITS[role].name}: {key}"
    assert "char-ttyUSB rw" in service["DeviceAllow"]
    assert all(entry.startswith("char-tty") for entry in service["DeviceAllow"])
    assert service["CapabilityBoundingSet"] == [""]


def _writable(service: dict[str, list[str]]) -> list[Path]:
    paths = [Path(p.lstrip("-")) for line in service["ReadWritePaths"] for p in line.split()]
    return paths + [Path("/var/lib") / name for name in service.get("StateDirectory", [])]


def _covered(path: Path, writable: list[Path]) -> bool:
    return any(path == allowed or allowed in path.parents for allowed in writable)


def test_units_let_the_daemons_write_what_the_examples_name() -> None:
    """Under ProtectSystem=strict the example configs' data, state, certificate and
    CRL directories must be writable: each lies under the unit's ReadWritePaths."""
    server = tomllib.loads((ETC / "signer-server.toml.example").read_text())
    assert _covered(Path(server["data_dir"]), _writable(parse_unit(UNITS["server"])["Service"]))
    client = tomllib.loads((ETC / "signer-client.toml.example").read_text())
    writable = _writable(parse_unit(UNITS["client"])["Service"])
    needed = [Path(client["files"]["crt_dir"]), Path(client["files"]["state_dir"])]
    needed += [Path(root["crl"]).parent for root in client["roots"]]
    for path in needed:
        assert _covered(path, writable), f"{path} is not writable under signer-client.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt: systemd)")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd-analyze verify accepts both units without a single warning (twistd
    pointed at this venv's, since /usr/bin/twistd need not exist here)."""
    copies = []
    for path in UNITS.values():
        copy = tmp_path / path.name
        copy.write_text(path.read_text().replace("/usr/bin/twistd", str(BIN / "twistd")))
        copies.append(str(copy))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *copies], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


# -- MemoryDenyWriteExecute ------------------------------------------------------------------


MDWE_WRAPPER = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(65, 1, 0, 0, 0) != 0:\n"
    "    raise SystemExit('PR_SET_MDWE: ' + os.strerror(ctypes.get_errno()))\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


#: Exits 0 only when a writable and executable mapping is refused.
WX_PROBE = (
    "import mmap, sys\n"
    "try:\n"
    "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
    "except OSError:\n"
    "    sys.exit(0)\n"
    "sys.exit(1)\n"
)


def _mdwe_supported() -> bool:
    """Whether the wrapper works here (PR_SET_MDWE, Linux 6.3+): a program it
    starts is refused W+X memory even after exec."""
    probe = subprocess.run(
        [sys.executable, "-c", MDWE_WRAPPER, sys.executable, "-c", WX_PROBE], capture_output=True
    )
    return probe.returncode == 0


@pytest.mark.skipif(not socat_available(), reason="socat is not installed")
def test_server_works_with_write_execute_memory_refused(tmp_path: Path) -> None:
    """The units set MemoryDenyWriteExecute=yes: the server (CPython, cryptography) and
    its children (xdelta, gpg) must work when W+X memory is refused. The kernel's
    PR_SET_MDWE gives the same restriction without systemd: sign, CRL, delta,
    OpenPGP certification, ping."""
    if not _mdwe_supported():
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    with running_server(tmp_path, wrapper=(sys.executable, "-c", MDWE_WRAPPER), openpgp=True) as server:
        csr = tmp_path / "a.csr"
        csr.write_bytes(make_csr("MDWE Test", email="mdwe@example.org", index=21))
        signed = server.cli(
            "sign-x509", "--csr", str(csr), "--subject", "/CN=MDWE Test", "--root", "0",
            "--profile", "client", "--digest", "sha256", "--days", "30", "--out", str(tmp_path / "a.crt"),
        )
        assert signed.returncode == 0, signed.stderr + server.log_text()
        crl = tmp_path / "r0.crl"
        ca = server.directory / "roots" / "root0.crt"
        first = server.cli("revoke", "--root", "0", "--crl", str(crl), "--apply", "--ca-cert", str(ca))
        assert first.returncode == 0, first.stderr
        second = server.cli(
            "revoke", "--root", "0", "--crl", str(crl), "--cert", str(tmp_path / "a.crt"),
            "--apply", "--ca-cert", str(ca),
        )
        assert second.returncode == 0, second.stderr + server.log_text()
        assert "delta of" in server.log_text()  # xdelta ran under the restriction
        home = short_tempdir()
        maker = KeyMaker(home)
        try:
            (home / "user.asc").write_bytes(maker.make("MDWE User <mdwe@example.org>").armored)
            certified = server.cli("sign-openpgp", "--key", str(home / "user.asc"), "--out", str(home / "out.asc"))
            assert certified.returncode == 0, certified.stderr + server.log_text()  # gpg ran too
        finally:
            maker.close()
            shutil.rmtree(home, ignore_errors=True)
        assert server.cli("ping").returncode == 0
        assert "Traceback" not in server.log_text()


# -- logrotate ---------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate not installed (apt: logrotate)")
def test_logrotate_accepts_the_file(tmp_path: Path) -> None:
    """logrotate --debug (a dry run) reads etc/logrotate.d/signer without an error."""
    result = subprocess.run(
        ["logrotate", "--debug", "--state", str(tmp_path / "state"), str(LOGROTATE)],
        capture_output=True, text=True, timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "error" not in output.lower(), output
    assert "rotating pattern: /var/log/signer/*.log" in output


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate not installed (apt: logrotate)")
def test_logrotate_keeps_the_legacy_retention(tmp_path: Path) -> None:
    """One real rotation in a scratch folder: today's log is copied to a dated file and
    truncated, yesterday's copy is compressed, copies older than 913 days are deleted."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "signer-server.log").write_text("today\n")
    (logs / "signer-server.log-2000-01-02").write_text("the day before\n")
    for name, days in (("signer-server.log-2000-01-01.gz", 700), ("signer-server.log-1997-01-01.gz", 1000)):
        subprocess.run(["gzip"], input=b"old\n", stdout=(logs / name).open("wb"), check=True)
        moment = time.time() - days * 86400
        os.utime(logs / name, (moment, moment))
    config = tmp_path / "signer.conf"
    config.write_text(LOGROTATE.read_text().replace("/var/log/signer/", f"{logs}/"))
    result = subprocess.run(
        ["logrotate", "--force", "--state", str(tmp_path / "state"), str(config)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    names = sorted(path.name for path in logs.iterdir())
    yesterday = time.strftime("%Y-%m-%d", time.localtime(time.time() - 86400))
    assert names == sorted(
        [
            "signer-server.log",
            f"signer-server.log-{yesterday}",  # dateyesterday: named after the day it holds
            "signer-server.log-2000-01-02.gz",  # delaycompress: compressed one rotation later
            "signer-server.log-2000-01-01.gz",  # 700 days: kept
        ]
    )  # the 1000-day-old copy is gone (maxage 913)
    assert (logs / "signer-server.log").read_text() == ""  # copytruncate
    assert (logs / f"signer-server.log-{yesterday}").read_text() == "today\n"


# -- the .tac file ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_signer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away signer (no OpenPGP key) and a serial.conf next to it; returns its folder."""
    directory = tmp_path_factory.mktemp("tac") / "signer"
    create_test_signer(directory)
    (directory / "serial.conf").write_text('[serial]\ndevice = "/dev/ttyUSB9"\n')
    return directory


def _load_tac(monkeypatch: pytest.MonkeyPatch, **environ: str) -> Any:
    for name in ("SIGNER_ROLE", "SIGNER_CONFIG", "SIGNER_SERIAL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return loadApplication(str(TAC), "python")


def test_tac_builds_the_server_application(test_signer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGNER_ROLE=server builds the plugin's service under an Application, not started,
    with the serial config from SIGNER_SERIAL_CONFIG and a text log observer."""
    application = _load_tac(
        monkeypatch,
        SIGNER_ROLE="server",
        SIGNER_CONFIG=str(test_signer / "signer-server.toml"),
        SIGNER_SERIAL_CONFIG=str(test_signer / "serial.conf"),
    )
    top = IService(application)
    (service,) = list(top)
    assert not service.running
    assert service.parts.config.path == test_signer / "signer-server.toml"
    (line,) = list(service)
    assert line.serial.device == "/dev/ttyUSB9"
    assert application.getComponent(ILogObserver) is not None


def test_tac_honours_log_format_json(
    tmp_path: Path, test_signer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """log_format = "json" in the server's TOML makes the application's observer write JSON lines."""
    config = tmp_path / "signer-server.toml"
    text = (test_signer / "signer-server.toml").read_text()
    config.write_text(text.replace('log_format = "text"', 'log_format = "json"'))
    log = tmp_path / "out.log"
    monkeypatch.setenv("SIGNER_LOG_FILE", str(log))
    application = _load_tac(
        monkeypatch, SIGNER_ROLE="server", SIGNER_CONFIG=str(config),
        SIGNER_SERIAL_CONFIG=str(test_signer / "serial.conf"),
    )
    observer = application.getComponent(ILogObserver)
    Logger(namespace="tac", observer=LogPublisher(observer)).emit(LogLevel.info, "hello {who}", who="ops")
    record = json.loads(log.read_text())
    assert record["message"] == "hello ops" and record["who"] == "ops"


@pytest.mark.parametrize(
    "environ, message",
    [
        ({}, "SIGNER_ROLE must be 'server' or 'client'"),
        ({"SIGNER_ROLE": "printer", "SIGNER_CONFIG": "x"}, "not 'printer'"),
        ({"SIGNER_ROLE": "server"}, "set SIGNER_CONFIG"),
        ({"SIGNER_ROLE": "server", "SIGNER_CONFIG": "/nonexistent/s.toml"}, "signer.tac (server): --config"),
        ({"SIGNER_ROLE": "client", "SIGNER_CONFIG": "/nonexistent/c.toml"}, "signer.tac (client): --config"),
    ],
)
def test_tac_errors_are_clear(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], message: str) -> None:
    """A missing or wrong environment stops the .tac with a message saying what to set."""
    with pytest.raises(RuntimeError) as caught:
        _load_tac(monkeypatch, **environ)
    assert message in str(caught.value)


@pytest.mark.skipif(not socat_available(), reason="socat is not installed")
def test_twistd_y_runs_the_tac(tmp_path: Path) -> None:
    """`twistd -n -y etc/signer.tac` runs the server from the environment, logs JSON
    (log_format = "json") and answers a ping over a pty pair."""
    directory = tmp_path / "signer"
    config = create_test_signer(directory)
    config.write_text(config.read_text().replace('log_format = "text"', 'log_format = "json"'))
    with pty_pair() as pair:
        serial = tmp_path / "serial.conf"
        serial.write_text(f'[serial]\ndevice = "{pair.a}"\n')
        environ = dict(os.environ, SIGNER_ROLE="server", SIGNER_CONFIG=str(config), SIGNER_SERIAL_CONFIG=str(serial))
        environ.pop("SIGNER_LOG_FILE", None)
        log = tmp_path / "twistd.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, str(BIN / "twistd"), "-n", "--pidfile=", "-y", str(TAC)],
                cwd=tmp_path, env=environ, stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 30
            while "serving on" not in log.read_text():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            ping = subprocess.run(
                [str(BIN / "signer"), "ping", "--device", pair.b, "--timeout", "30"],
                capture_output=True, text=True, timeout=60,
            )
            assert ping.returncode == 0, ping.stderr
            deadline = time.monotonic() + 10
            while '"kind": "nul"' not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        finally:
            process.terminate()
            process.wait(timeout=15)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert any(r["message"].startswith("serving on") and r["device"] == pair.a for r in records)
    assert any(r.get("kind") == "nul" and r.get("outcome") == "served" for r in records)


# -- example configurations ---------------------------------------------------------------------


def test_server_example_loads(tmp_path: Path) -> None:
    """etc/signer-server.toml.example loads once its paths point into a scratch folder."""
    etc, var = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    (var / "gnupg").mkdir(parents=True)
    text = (ETC / "signer-server.toml.example").read_text()
    text = text.replace("/etc/signer/", f"{etc}/").replace("/var/lib/signer", str(var))
    (etc / "signer-server.toml").write_text(text)
    (etc / "serial.conf").write_text((ETC / "serial.conf.example").read_text())
    for index in (0, 1):
        root = make_root(f"Example Root {index}")
        (etc / f"root{index}.crt").write_bytes(root.certificate_pem())
        (etc / f"root{index}.key").write_bytes(b"not read by load_server_config")
        os.chmod(etc / f"root{index}.key", 0o600)
    (etc / "root0.pass").write_text("x\n")
    os.chmod(etc / "root0.pass", 0o600)
    config = load_server_config(etc / "signer-server.toml")
    assert sorted(config.roots) == [0, 1]
    assert config.health_listen is None  # off by default
    assert config.log_format == "text"


def test_client_example_loads(tmp_path: Path) -> None:
    """etc/signer-client.toml.example loads (its password file moved to a scratch folder)."""
    text = (ETC / "signer-client.toml.example").read_text()
    text = text.replace("/etc/signer/webdb.password", str(tmp_path / "pw"))
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "signer-client.toml").write_text(text)
    config = load_client_config(tmp_path / "signer-client.toml")
    assert config.log_format in ("text", "json")


def test_serial_example_loads() -> None:
    """etc/serial.conf.example loads with the legacy line settings."""
    serial = load_serial_config(ETC / "serial.conf.example")
    assert (serial.device, serial.baudrate, serial.bytesize, serial.parity, serial.stopbits) == (
        "/dev/ttyUSB0", 115200, 8, "N", 1,
    )
    assert not serial.xonxoff and not serial.rtscts


def test_every_file_in_etc_is_covered() -> None:
    """No file under etc/ escapes these tests (a new one needs a check here)."""
    checked = {
        *UNITS.values(),
        LOGROTATE,
        TAC,
        ETC / "signer-server.toml.example",
        ETC / "signer-client.toml.example",
        ETC / "serial.conf.example",
    }
    present = {path for path in ETC.rglob("*") if path.is_file()}
    assert present <= checked, sorted(str(p) for p in present - checked)
