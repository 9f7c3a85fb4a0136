"""Fixtures of the server tests: a running `twistd signer-server` over a pty pair."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.pty import pty_pair

BIN = Path(sys.executable).parent


class Signer:
    """A running test signer and the device the CLI talks to."""

    def __init__(self, directory: Path, device: str, log: Path) -> None:
        self.directory = directory
        self.device = device
        self.log = log

    def cli(self, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / "signer"), args[0], "--device", self.device, "--timeout", "30"]
        command += [str(arg) for arg in args[1:]]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signer]:
    base = tmp_path_factory.mktemp("e2e")
    directory = base / "signer"
    created = subprocess.run(
        [str(BIN / "signer"), "init-test-signer", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    with pty_pair() as pair:
        serial = directory / "serial.conf"
        serial.write_text(f'[serial]\ndevice = "{pair.a}"\nbaudrate = 115200\n')
        log = base / "server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [
                    str(BIN / "twistd"),
                    "-n",
                    "--pidfile=",
                    "--logfile",
                    "-",
                    "signer-server",
                    "--config",
                    str(directory / "signer-server.toml"),
                    "--serial-config",
                    str(serial),
                ],
                cwd=base,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 30
            while "serving on" not in log.read_text():
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            yield Signer(directory, pair.b, log)
        finally:
            server.terminate()
            server.wait(timeout=10)


