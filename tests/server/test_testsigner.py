"""The throw-away test signer."""

from __future__ import annotations

import datetime
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.x509.oid import NameOID

from signer.server.config import ConfigError, load_and_check, load_server_config
from signer.server.testsigner import (
    CONFIG_NAME,
    ROOT_NAMES,
    create_test_signer,
    set_openpgp_key_id,
)
from signer.server.x509ca import X509Authority
from tests.support.testca import make_csr
from tests.support.x509_requests import sign_request


@pytest.fixture(scope="module")
def signer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One throw-away signer shared by the read-only tests of this module."""
    directory = tmp_path_factory.mktemp("signer")
    create_test_signer(directory)
    return directory


def test_layout_and_key_modes(signer_dir: Path) -> None:
    """Roots 0 and 1 with 0600 keys, a data dir and a 0700 gnupg home inside DIR."""
    for index in ROOT_NAMES:
        key = signer_dir / "roots" / f"root{index}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert (signer_dir / "roots" / f"root{index}.crt").is_file()
    assert (signer_dir / "data").is_dir()
    assert stat.S_IMODE((signer_dir / "gnupg").stat().st_mode) == 0o700


def test_config_loads_and_keys_check(signer_dir: Path) -> None:
    """The written configuration passes load_server_config and check_keys."""
    config, roots = load_and_check(signer_dir / CONFIG_NAME)
    assert sorted(roots) == [0, 1]
    assert roots[0].certificate != roots[1].certificate
    for index, name in ROOT_NAMES.items():
        common_name = roots[index].certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert common_name[0].value == name
    assert sorted(config.profiles) == list(range(12))
    assert config.data_dir == signer_dir / "data"
    assert config.time_sync.action == "script"
    assert config.time_sync.script is not None
    assert config.time_sync.script.is_relative_to(signer_dir)
    assert config.openpgp is not None
    assert config.openpgp.gnupg_home == signer_dir / "gnupg"
    assert config.openpgp.key_id is None
    assert config.serial_config is None
    assert config.roots[1].crl_url == "http://crl.signer.test/root1.crl"


def test_issues_certificates_that_openssl_verifies(signer_dir: Path) -> None:
    """A CA built from the test signer issues a server cert openssl verifies against root 1."""
    config, roots = load_and_check(signer_dir / CONFIG_NAME)
    authority = X509Authority.from_config(
        config, roots, lambda: datetime.datetime.now(datetime.timezone.utc)
    )
    issued = authority.issue(sign_request(make_csr(), root=1, san=b"DNS:www.example.org"))
    leaf = signer_dir / "data" / "leaf.pem"
    leaf.write_bytes(issued.pem)
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile",
         str(signer_dir / "roots" / "root1.crt"), str(leaf)],
        capture_output=True, text=True, check=False,
    )
    leaf.unlink()
    assert result.returncode == 0, result.stdout + result.stderr


def test_refuses_to_overwrite(signer_dir: Path) -> None:
    """A directory that already holds a configuration is not overwritten."""
    before = (signer_dir / CONFIG_NAME).read_bytes()
    with pytest.raises(FileExistsError):
        create_test_signer(signer_dir)
    assert (signer_dir / CONFIG_NAME).read_bytes() == before


def test_serial_config_is_written(tmp_path: Path) -> None:
    """serial_config, when given, ends up in the configuration as an absolute path."""
    serial = tmp_path / "serial.conf"
    serial.write_text("device = /dev/null\n")
    config = load_server_config(create_test_signer(tmp_path / "s", serial))
    assert config.serial_config == serial


def test_openpgp_key_id_given_or_filled_later(tmp_path: Path) -> None:
    """The key id can be passed directly or filled once; bad ids leave the file untouched."""
    direct = load_server_config(
        create_test_signer(tmp_path / "a", openpgp_key_id="0123456789ABCDEF" * 2 + "01234567")
    )
    assert direct.openpgp is not None
    assert direct.openpgp.key_id == "0123456789ABCDEF0123456789ABCDEF01234567"

    path = create_test_signer(tmp_path / "b")
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="openpgp.key_id"):
        set_openpgp_key_id(path, "not hex")
    with pytest.raises(ConfigError, match="openpgp.key_id"):
        set_openpgp_key_id(path, "ABC")  # hex, but no valid length
    assert path.read_bytes() == before
    assert not path.with_suffix(".toml.tmp").exists()
    set_openpgp_key_id(path, "fedcba9876543210fedcba9876543210fedcba98")
    config = load_server_config(path)
    assert config.openpgp is not None
    assert config.openpgp.key_id == "FEDCBA9876543210FEDCBA9876543210FEDCBA98"
    with pytest.raises(ConfigError, match="no placeholder"):
        set_openpgp_key_id(path, "ABCDEF0123456789")
