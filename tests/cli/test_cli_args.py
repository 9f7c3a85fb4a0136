"""``signer`` argument parsing: help texts, clear usage errors, option mapping."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from signer import cli
from signer.cli import connection, requests
from signer.cli.errors import EXIT_USAGE, CommandError
from signer.protocol import codec

CONNECTION_OPTIONS = ["--serial-config", "--device", "--baud", "--parity", "--timeout"]

HELP_MENTIONS = {
    "ping": ["--count", *CONNECTION_OPTIONS],
    "sign-x509": [
        "--csr", "--subject", "--san", "--root", "--profile", "--digest", "--days", "--out",
        "sha256", "server-jabber", *CONNECTION_OPTIONS,
    ],
    "sign-openpgp": ["--key", "--days", "--out", *CONNECTION_OPTIONS],
    "revoke": ["--root", "--crl", "--cert", "--out", "--apply", "--ca-cert", *CONNECTION_OPTIONS],
    "decode": ["FILE", "--vector", "--format", "--preview", "hex"],
    "init-test-signer": ["DIR", "--serial-config", "--key-size", "--no-openpgp"],
    "import-openssl-ca": ["--config", "--root", "--index", "--serial", "--crlnumber", "--certs"],
}


def test_every_subcommand_is_registered() -> None:
    """The discovered subcommands are exactly the documented ones, in help order."""
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(action.choices) == [
        "ping",
        "sign-x509",
        "sign-openpgp",
        "revoke",
        "decode",
        "import-openssl-ca",
        "linksim",
        "notify",
        "init-test-signer",
    ]


@pytest.mark.parametrize("command", sorted(HELP_MENTIONS))
def test_help_exits_zero_and_names_the_options(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`signer COMMAND --help` exits 0 and documents every option of the command."""
    assert cli.main([command, "--help"]) == 0
    text = capsys.readouterr().out
    for mention in HELP_MENTIONS[command]:
        assert mention in text, f"{command} --help does not mention {mention}"


def test_top_level_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    """`signer --help` lists every subcommand and the exit codes."""
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in HELP_MENTIONS:
        assert command in text
    assert "empty answer" in text and "link failure" in text


@pytest.mark.parametrize(
    "argv, complaint",
    [
        ([], "required: SUBCOMMAND"),
        (["frobnicate"], "invalid choice"),
        (["ping"], "one of the arguments --serial-config --device is required"),
        (["ping", "--device", "/dev/x", "--serial-config", "f"], "not allowed with"),
        (["ping", "--device", "/dev/x", "--count", "0"], "--count: must be at least 1"),
        (["ping", "--device", "/dev/x", "--timeout", "-1"], "--timeout: must be greater than 0"),
        (["ping", "--device", "/dev/x", "--parity", "X"], "--parity: invalid choice"),
        (["sign-x509", "--device", "/dev/x"], "the following arguments are required: --csr"),
        (
            ["sign-x509", "--device", "d", "--csr", "c", "--subject", "/CN=x", "--root", "0",
             "--profile", "nosuch", "--days", "1"],
            "unknown profile 'nosuch'",
        ),
        (
            ["sign-x509", "--device", "d", "--csr", "c", "--subject", "/CN=x", "--root", "0",
             "--profile", "0", "--digest", "sha3", "--days", "1"],
            "unknown digest 'sha3'",
        ),
        (
            ["sign-x509", "--device", "d", "--csr", "c", "--subject", "/CN=x", "--root", "256",
             "--profile", "0", "--days", "1"],
            "--root: must be 0..255",
        ),
        (
            ["sign-x509", "--device", "d", "--csr", "c", "--subject", "/CN=x", "--root", "0",
             "--profile", "0", "--days", "70000"],
            "--days: must be 0..65535",
        ),
        (["revoke", "--device", "d", "--crl", "f"], "required: --root"),
        (["decode", "--format", "octal"], "invalid choice"),
    ],
)
def test_bad_arguments_give_a_clear_usage_error(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad arguments exit 2 with argparse's usage line and a message naming the problem."""
    assert cli.main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "usage: signer" in err
    assert complaint in err


def test_profile_and_digest_by_name_or_number() -> None:
    """Profiles and digests map by name (codec tables) or by wire number."""
    assert requests.profile_id("server") == 5
    assert requests.profile_id("Client-Org") == 1
    assert requests.profile_id("11") == 11
    assert requests.digest_id("sha256") == 8
    assert requests.digest_id("default") == 0
    assert requests.digest_id("10") == 10
    for name, number in codec.DIGEST_IDS.items():
        assert requests.digest_id(name) == number


def parse(argv: list[str]) -> argparse.Namespace:
    return cli.build_parser().parse_args(argv)


def test_device_options_build_the_serial_config() -> None:
    """--device with line settings gives the matching SerialConfig; defaults are 115200 8N1."""
    config = connection.serial_config_from_args(parse(["ping", "--device", "/dev/ttyS9"]))
    assert (config.device, config.baudrate, config.bytesize, config.parity, config.stopbits) == (
        "/dev/ttyS9", 115200, 8, "N", 1,
    )
    config = connection.serial_config_from_args(
        parse(["ping", "--device", "/dev/ttyS9", "--baud", "9600", "--bytesize", "7",
               "--parity", "e", "--stopbits", "2", "--rtscts"])
    )
    assert (config.baudrate, config.bytesize, config.parity, config.stopbits, config.rtscts) == (
        9600, 7, "E", 2, True,
    )


def test_nonstandard_baud_rate_is_a_usage_error() -> None:
    """A baud rate termios does not know is refused before opening anything."""
    with pytest.raises(CommandError) as caught:
        connection.serial_config_from_args(parse(["ping", "--device", "d", "--baud", "12345"]))
    assert caught.value.exit_code == EXIT_USAGE and "baudrate" in str(caught.value)


def test_serial_config_file(tmp_path: Path) -> None:
    """--serial-config reads the TOML file; a bad file and line options beside it are clear errors."""
    good = tmp_path / "serial.conf"
    good.write_text('[serial]\ndevice = "/dev/ttyUSB7"\nbaudrate = 57600\n')
    config = connection.serial_config_from_args(parse(["ping", "--serial-config", str(good)]))
    assert (config.device, config.baudrate) == ("/dev/ttyUSB7", 57600)

    bad = tmp_path / "bad.conf"
    bad.write_text('[serial]\ndevice = "/dev/x"\nbaudrate = "fast"\n')
    with pytest.raises(CommandError) as caught:
        connection.serial_config_from_args(parse(["ping", "--serial-config", str(bad)]))
    assert "baudrate" in str(caught.value)

    with pytest.raises(CommandError) as caught:
        connection.serial_config_from_args(parse(["ping", "--serial-config", str(tmp_path / "none")]))
    assert "none" in str(caught.value)

    with pytest.raises(CommandError) as caught:
        connection.serial_config_from_args(
            parse(["ping", "--serial-config", str(good), "--baud", "9600"])
        )
    assert caught.value.exit_code == EXIT_USAGE and "--baud" in str(caught.value)


def test_link_timeout_overrides() -> None:
    """The link timeout options override only the named LinkTimeouts fields."""
    from signer.protocol.link import LinkTimeouts

    args = parse(["ping", "--device", "d", "--start-ack-timeout", "0.5", "--max-resends", "0"])
    timeouts = connection.link_timeouts(args)
    assert timeouts == LinkTimeouts(start_ack=0.5, max_resends=0)
    assert connection.link_timeouts(parse(["ping", "--device", "d"])) == LinkTimeouts()


def test_cli_runs_as_a_module_and_reports_local_errors(tmp_path: Path) -> None:
    """`python -m signer.cli` works; a missing CSR file is a one-line error with exit 1."""
    done = subprocess.run(
        [sys.executable, "-m", "signer.cli", "sign-x509", "--device", str(tmp_path / "tty"),
         "--csr", str(tmp_path / "missing.csr"), "--subject", "/CN=x", "--root", "0",
         "--profile", "client", "--days", "30"],
        capture_output=True, timeout=60, check=False,
    )
    assert done.returncode == 1
    assert b"cannot read the CSR" in done.stderr and b"Traceback" not in done.stderr
