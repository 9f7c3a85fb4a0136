"""Loading the client configuration: the documented example, defaults, and every error naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from signer.client.config import ConfigError, load_client_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "etc" / "signer-client.toml.example"

MINIMAL = """
[database]
driver = "sqlite"
sqlite_path = "webdb.sqlite"

[files]
csr_dir = "csr"
crt_dir = "crt"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "client.toml"
    path.write_text(text)
    return path


def test_example_loads_with_every_section(tmp_path: Path) -> None:
    """The shipped example is valid and says what it documents."""
    password = Path("/etc/signer/webdb.password")
    text = EXAMPLE.read_text().replace(str(password), str(tmp_path / "pw"))
    (tmp_path / "pw").write_text("s3cret\n")
    config = load_client_config(write(tmp_path, text))
    assert config.database.driver == "mysql"
    assert config.database.password == "s3cret"
    assert config.files.crt_name_prefix == "../crt"
    assert [root.rootcert for root in config.roots] == [1, 2]
    assert config.root(2).crl == Path("/var/www/cacert/www/class3-revoke.crl")  # type: ignore[union-attr]
    assert config.polling.interval == 2.7
    assert config.polling.crl_check_every == 100
    assert config.polling.warning_threshold == 3
    assert config.validity.personal_assured == 366
    assert config.link.response_start == 120.0
    assert config.mail.client_cert_url.format(id=5).endswith("id=6&cert=5")
    assert config.openpgp.ca_key_id.endswith("65D0FD58")


def test_minimal_file_gets_defaults_and_resolves_paths(tmp_path: Path) -> None:
    """Relative paths are relative to the file; defaults are the legacy values."""
    config = load_client_config(write(tmp_path, MINIMAL))
    assert config.database.sqlite_path == tmp_path / "webdb.sqlite"
    assert config.files.csr_dir == tmp_path / "csr"
    assert config.polling.interval == 2.7
    assert config.roots == ()
    assert config.mail.sender == "support@cacert.org"


def test_password_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """password_env names the variable holding the database password."""
    monkeypatch.setenv("WEBDB_PW", "from-env")
    text = MINIMAL.replace('driver = "sqlite"\nsqlite_path = "webdb.sqlite"',
                           'driver = "mysql"\nuser = "u"\ndatabase = "d"\npassword_env = "WEBDB_PW"')
    config = load_client_config(write(tmp_path, text))
    assert config.database.password == "from-env"
    assert "from-env" not in repr(config.database)


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (("[files]", "[files]\ncrt_name_prefx = 'x'"), "files.crt_name_prefx", "unknown key"),
        (('driver = "sqlite"', 'driver = "oracle"'), "database.driver", "mysql"),
        (("[files]", "[polling]\ninterval = -1\n[files]"), "polling.interval", "greater than zero"),
        (("[files]", "[polling]\ninterval = 'fast'\n[files]"), "polling.interval", "a number"),
        (("[files]", "[validity]\norg_server = 70000\n[files]"), "validity.org_server", "16-bit"),
        (("[files]", "[mail]\nclient_cert_url = 'https://x/{cert}'\n[files]"), "mail.client_cert_url", "placeholder"),
        (("[files]", "[logging]\nformat = 'xml'\n[files]"), "logging.format", "text"),
        (('csr_dir = "csr"\n', ""), "files.csr_dir", "required"),
        (("[files]", "[[roots]]\nrootcert = 1\ncrl = 'a'\n[files]"), "roots[0].ca_certificate", "required"),
        (
            ("[files]", "[[roots]]\nrootcert = 1\ncrl = 'a'\nca_certificate = 'b'\n"
                        "[[roots]]\nrootcert = 1\ncrl = 'c'\nca_certificate = 'd'\n[files]"),
            "roots[1].rootcert", "twice",
        ),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, change: tuple[str, str], key: str, words: str) -> None:
    """Each mistake raises ConfigError with the file, the dotted key and the problem."""
    path = write(tmp_path, MINIMAL.replace(*change, 1))
    with pytest.raises(ConfigError) as caught:
        load_client_config(path)
    assert caught.value.key == key
    assert words in caught.value.problem
    assert str(path) in str(caught.value)


def test_missing_password_file_and_unset_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreadable password file or an unset variable is a ConfigError, not a crash."""
    monkeypatch.delenv("NOPE_PW", raising=False)
    base = MINIMAL.replace('driver = "sqlite"\nsqlite_path = "webdb.sqlite"', 'driver = "mysql"\nuser = "u"\ndatabase = "d"\n{}')
    with pytest.raises(ConfigError, match="password_file: cannot read"):
        load_client_config(write(tmp_path, base.format('password_file = "missing"')))
    with pytest.raises(ConfigError, match="NOPE_PW is not set"):
        load_client_config(write(tmp_path, base.format('password_env = "NOPE_PW"')))


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    """Syntax errors and unreadable files are reported with the file name."""
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_client_config(write(tmp_path, "[database\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_client_config(tmp_path / "absent.toml")


def test_wakeup_table_is_parsed(tmp_path: Path) -> None:
    """An optional [wakeup] table is validated by the wake-up module and kept on the config."""
    config = load_client_config(write(tmp_path, MINIMAL + '\n[wakeup]\nsource = "redis"\nfallback_interval = 30\n'))
    assert config.wakeup is not None and config.wakeup.source == "redis"
    assert config.wakeup.fallback_interval == 30.0
    assert load_client_config(write(tmp_path, MINIMAL)).wakeup is None
    with pytest.raises(ConfigError) as caught:
        load_client_config(write(tmp_path, MINIMAL + '\n[wakeup]\nsource = "carrier-pigeon"\n'))
    assert caught.value.key == "wakeup.source"
