"""Loading and checking the server configuration."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from signer.protocol.codec import DEFAULT_MAX_FRAME_LENGTH
from signer.server.config import (
    STRONG_DIGESTS,
    ConfigError,
    check_keys,
    default_profiles,
    load_and_check,
    load_server_config,
)
from tests.support.testca import make_root

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "etc" / "signer-server.toml.example"

BASE = """\
data_dir = "data"

[roots.0]
certificate = "root0.crt"
key = "root0.key"
crl_url = "http://crl.example.org/root0.crl"
ocsp_url = "http://ocsp.example.org/"
"""


def _key_pem(index: int = 0, password: bytes | None = None) -> bytes:
    root = make_root(f"Config Root {index}")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return root.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _private(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, mode)
    return path


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A directory with a data dir, root 0 (certificate + 0600 key) and BASE as config."""
    (tmp_path / "data").mkdir()
    (tmp_path / "root0.crt").write_bytes(make_root("Config Root 0").certificate_pem())
    _private(tmp_path / "root0.key", _key_pem(0))
    (tmp_path / "signer-server.toml").write_text(BASE)
    return tmp_path


def _write(config_dir: Path, text: str) -> Path:
    path = config_dir / "signer-server.toml"
    path.write_text(text)
    return path


# -- loading -------------------------------------------------------------------------


def test_minimal_config_gets_every_default(config_dir: Path) -> None:
    """data_dir and one root suffice; everything else takes the documented defaults."""
    config = load_server_config(config_dir / "signer-server.toml")
    assert config.path == config_dir / "signer-server.toml"
    assert config.data_dir == config_dir / "data"
    root = config.roots[0]
    assert root.certificate == config_dir / "root0.crt"  # relative to the config file
    assert root.key == config_dir / "root0.key"
    assert root.default_digest == "sha256"
    assert (root.passphrase_file, root.passphrase_env) == (None, None)
    assert dict(config.profiles) == default_profiles()
    assert sorted(config.profiles) == list(range(12))
    assert config.x509.serial_numbers == "random"
    assert config.x509.min_rsa_bits == 2048
    assert config.x509.allow_weak_digests == frozenset()
    assert config.x509.certificate_policies is False
    assert config.crl.lifetime == datetime.timedelta(days=7)
    assert config.crl.expired_grace == datetime.timedelta(days=90)
    assert config.openpgp is None
    assert (config.time_sync.action, config.time_sync.script) == ("off", None)
    assert config.link.max_frame_length == DEFAULT_MAX_FRAME_LENGTH
    assert config.serial_config is None
    assert config.log_format == "text"
    assert config.health_listen is None
    assert config.cps_url == "http://www.cacert.org/cps.php"


def test_default_profiles_follow_server_md() -> None:
    """Profile defaults: client EKUs, codesign, server, ocsp, timestamp (critical), proxy, subca."""
    profiles = default_profiles()
    assert profiles[0].extended_key_usage == ("emailProtection", "clientAuth")
    assert profiles[2].extended_key_usage == ("emailProtection", "clientAuth", "codeSigning")
    assert profiles[7].extended_key_usage == ("clientAuth", "serverAuth")
    assert profiles[8].extended_key_usage == ("OCSPSigning",)
    assert profiles[9].extended_key_usage_critical
    assert profiles[10].extended_key_usage == ("clientAuth",)
    assert profiles[11].ca and profiles[11].path_length == 0
    assert profiles[11].key_usage == ("keyCertSign", "cRLSign")
    assert all(p.email_san_from_subject == (p.id in (0, 1, 2, 3, 4)) for p in profiles.values())
    assert all(p.allowed_digests == STRONG_DIGESTS for p in profiles.values())
    assert [p.name for p in profiles.values()][:3] == ["client", "client-org", "client-codesign"]


def test_example_file_loads_and_every_section_is_read(tmp_path: Path) -> None:
    """etc/signer-server.toml.example loads (paths moved into a temp dir) and keys take effect."""
    etc, var = tmp_path / "etc", tmp_path / "var"
    etc.mkdir()
    var.mkdir()
    text = EXAMPLE.read_text().replace("/etc/signer/", f"{etc}/").replace("/var/lib/signer", str(var))
    config_path = etc / "signer-server.toml"
    config_path.write_text(text)
    (etc / "serial.conf").write_text("device = /dev/ttyUSB0\n")
    for index in (0, 1):
        (etc / f"root{index}.crt").write_bytes(make_root(f"Config Root {index}").certificate_pem())
        _private(etc / f"root{index}.key", _key_pem(index, f"pass{index}".encode()))
    _private(etc / "root0.pass", "pass0\n")

    config, roots = load_and_check(config_path, {"SIGNER_ROOT1_PASSPHRASE": "pass1"})
    assert sorted(roots) == [0, 1]
    assert config.serial_config == etc / "serial.conf"
    assert config.roots[1].crl_url == "http://crl.cacert.org/class3-revoke.crl"
    assert config.roots[0].passphrase_file == etc / "root0.pass"
    assert config.roots[1].passphrase_env == "SIGNER_ROOT1_PASSPHRASE"
    assert config.profiles[2].extended_key_usage[-2:] == ("msCodeInd", "msCodeCom")
    assert config.profiles[11].enabled is False
    assert config.openpgp is not None
    assert config.openpgp.gnupg_home == var / "gnupg"
    assert config.openpgp.key_id == "0123456789ABCDEF0123456789ABCDEF01234567"
    assert config.link.frame_timeout == 30.0
    assert config.x509.policy_oid == "1.3.6.1.4.1.18506.4.4"


def test_overrides_are_applied(config_dir: Path) -> None:
    """Non-default values of every section end up in the records."""
    (config_dir / "serial.conf").write_text("x")
    path = _write(
        config_dir,
        'serial_config = "serial.conf"\nlog_format = "json"\ncps_url = "https://ca.example.org/cps"\n'
        + BASE
        + 'default_digest = "sha512"\n'
        + '[x509]\nserial_numbers = "sequential"\nmin_rsa_bits = 3072\ncertificate_policies = true\n'
        + 'policy_oid = "1.2.3.4"\n'
        + '[crl]\nlifetime_days = 2\nexpired_grace_days = "never"\n'
        + '[time_sync]\naction = "script"\n'
        + '[link]\nmax_frame_length = 65536\nack_timeout = 2\nmax_resends = 0\n'
        + '[health]\nlisten = "tcp:8081:interface=127.0.0.1"\n'
        + '[openpgp]\ngnupg_home = "gnupg"\nkey_id = "0xabcdef0123456789"\n'
        + '[profiles.server]\nmax_days = 398\nallowed_digests = ["sha512"]\n'
        + '[profiles.0]\nextended_key_usage = ["emailProtection", "1.2.3.4.5"]\n',
    )
    config = load_server_config(path)
    assert config.serial_config == config_dir / "serial.conf"
    assert config.log_format == "json"
    assert config.x509.cps_url == config.cps_url == "https://ca.example.org/cps"
    assert config.roots[0].default_digest == "sha512"
    assert config.x509.serial_numbers == "sequential"
    assert config.x509.min_rsa_bits == 3072
    assert config.x509.certificate_policies and config.x509.policy_oid == "1.2.3.4"
    assert config.crl.lifetime == datetime.timedelta(days=2)
    assert config.crl.expired_grace is None
    assert config.time_sync.script == config_dir / "data" / "timesync.sh"
    assert (config.link.max_frame_length, config.link.ack_timeout, config.link.max_resends) == (
        65536, 2.0, 0,
    )
    assert config.health_listen == "tcp:8081:interface=127.0.0.1"
    assert config.openpgp is not None and config.openpgp.key_id == "ABCDEF0123456789"
    assert config.profiles[5].max_days == 398
    assert config.profiles[5].allowed_digests == ("sha512",)
    assert config.profiles[6].max_days == 730  # untouched neighbour
    assert config.profiles[0].extended_key_usage_oids()[1].dotted_string == "1.2.3.4.5"


def test_empty_openpgp_key_id_means_not_configured(config_dir: Path) -> None:
    """``key_id = ""`` loads as None (OpenPGP requests refused), e.g. before the key exists."""
    path = _write(config_dir, BASE + '[openpgp]\ngnupg_home = "gnupg"\nkey_id = ""\n')
    config = load_server_config(path)
    assert config.openpgp is not None and config.openpgp.key_id is None


# Each case: how to change BASE, the key the error must name, a fragment of the problem.
ERRORS = [
    (("replace", 'data_dir = "data"\n', ""), "data_dir", "missing"),
    (("replace", '"data"', '"nowhere"'), "data_dir", "does not exist"),
    (("prepend", "colour = 1\n"), "colour", "unknown key"),
    (("prepend", "serial_config = \"missing.conf\"\n"), "serial_config", "does not exist"),
    (("prepend", 'log_format = "xml"\n'), "log_format", "one of text, json"),
    (("prepend", 'cps_url = "ftp://x"\n'), "cps_url", "http"),
    (("replace", "[roots.0]", "[roots.x]"), "roots.x", "wire index"),
    (("replace", "[roots.0]", "[roots.256]"), "roots.256", "wire index"),
    (("replace", 'certificate = "root0.crt"\n', ""), "roots.0.certificate", "missing"),
    (("replace", '"root0.crt"', '"nope.crt"'), "roots.0.certificate", "does not exist"),
    (("replace", 'key = "root0.key"', 'keyfile = "root0.key"'), "roots.0.key", "missing"),
    (("append", 'keyfile = "x"\n'), "roots.0.keyfile", "unknown key"),
    (("replace", '"http://crl.example.org/root0.crl"', '"crl.example.org"'), "roots.0.crl_url", "URL"),
    (("replace", 'ocsp_url = "http://ocsp.example.org/"\n', ""), "roots.0.ocsp_url", "missing"),
    (("append", 'default_digest = "md5"\n'), "roots.0.default_digest", "weak"),
    (("append", 'default_digest = "sha3"\n'), "roots.0.default_digest", "unknown digest"),
    (("append", 'default_digest = 8\n'), "roots.0.default_digest", "expected a string"),
    (("append", 'passphrase_env = "A"\npassphrase_file = "root0.crt"\n'), "roots.0.passphrase_env",
     "not both"),
    (("append", 'passphrase_env = ""\n'), "roots.0.passphrase_env", "empty"),
    (("append", '[x509]\nserial_numbers = "counting"\n'), "x509.serial_numbers", "random, sequential"),
    (("append", '[x509]\nmin_rsa_bits = "2048"\n'), "x509.min_rsa_bits", "an integer"),
    (("append", "[x509]\nmin_rsa_bits = true\n"), "x509.min_rsa_bits", "an integer"),
    (("append", "[x509]\nmin_rsa_bits = 512\n"), "x509.min_rsa_bits", "at least 1024"),
    (("append", '[x509]\nallow_weak_digests = ["sha256"]\n'), "x509.allow_weak_digests",
     "not a weak digest"),
    (("append", '[x509]\nallow_weak_digests = ["sha1"]\n'), "x509.allow_weak_digests",
     "refuses to sign"),
    (("append", '[x509]\nallow_weak_digests = ["ripemd160"]\n'), "x509.allow_weak_digests",
     "no such signature digest"),
    (("append", '[x509]\npolicy_oid = "cacert"\n'), "x509.policy_oid", "dotted OID"),
    (("append", "[profiles.bogus]\nmax_days = 1\n"), "profiles.bogus", "unknown profile"),
    (("append", "[profiles.12]\nmax_days = 1\n"), "profiles.12", "unknown profile"),
    (("append", "[profiles.5]\nmax_days = 0\n"), "profiles.5.max_days", "at least 1"),
    (("append", '[profiles.server]\nextended_key_usage = ["fooAuth"]\n'),
     "profiles.server.extended_key_usage", "unknown purpose 'fooAuth'"),
    (("append", '[profiles.server]\nkey_usage = ["signEverything"]\n'),
     "profiles.server.key_usage", "unknown key usage"),
    (("append", '[profiles.subca]\nkey_usage = ["digitalSignature"]\n'),
     "profiles.subca.key_usage", "keyCertSign"),
    (("append", "[profiles.server]\npath_length = 1\n"), "profiles.server.path_length", "ca = true"),
    (("append", "[profiles.server]\nallowed_digests = []\n"), "profiles.server.allowed_digests",
     "empty"),
    (("append", '[profiles.server]\nallowed_digests = ["sha1"]\n'),
     "profiles.server.allowed_digests", "weak"),
    (("append", "[profiles.5]\nmax_days = 1\n[profiles.server]\nmax_days = 2\n"),
     "profiles.server", "configured twice"),
    (("append", "[profiles.server]\nenabled = 1\n"), "profiles.server.enabled", "true or false"),
    (("append", "[crl]\nlifetime_days = 0\n"), "crl.lifetime_days", "at least 1"),
    (("append", '[crl]\nexpired_grace_days = "sometimes"\n'), "crl.expired_grace_days", "never"),
    (("append", "[crl]\nexpired_grace_days = -1\n"), "crl.expired_grace_days", "at least 0"),
    (("append", '[openpgp]\nkey_id = "ABCD1234"\n'), "openpgp.gnupg_home", "missing"),
    (("append", '[openpgp]\ngnupg_home = "g"\nkey_id = "xyz"\n'), "openpgp.key_id", "hex"),
    (("append", '[openpgp]\ngnupg_home = "g"\nkey_id = ""\ndigest = "MD5"\n'), "openpgp.digest",
     "SHA256"),
    (("append", '[time_sync]\naction = "ntp"\n'), "time_sync.action", "off, script"),
    (("append", '[time_sync]\naction = "script"\nscript = "no/such/dir/t.sh"\n'),
     "time_sync.script", "does not exist"),
    (("append", "[link]\nack_timeout = -1\n"), "link.ack_timeout", "positive"),
    (("append", "[link]\nmax_frame_length = 1073741824\n"), "link.max_frame_length", "at most"),
    (("append", "[link]\nspeed = 9600\n"), "link.speed", "unknown key"),
    (("append", '[health]\nlisten = ""\n'), "health.listen", "empty"),
    (("append", "[health]\nlisten = 8080\n"), "health.listen", "a string"),
    (("append", "x509 = 5\n"), "roots.0.x509", "unknown key"),
]


@pytest.mark.parametrize("change, key, problem", ERRORS, ids=[case[1] + "-" + case[2] for case in ERRORS])
def test_errors_name_file_key_and_problem(
    config_dir: Path, change: tuple[str, ...], key: str, problem: str
) -> None:
    """Every invalid value raises ConfigError naming the file, the key and the problem."""
    if change[0] == "replace":
        assert change[1] in BASE
        text = BASE.replace(change[1], change[2])
    elif change[0] == "prepend":
        text = change[1] + BASE
    else:
        text = BASE + change[1]
    path = _write(config_dir, text)
    with pytest.raises(ConfigError) as caught:
        load_server_config(path)
    error = caught.value
    assert error.path == path
    assert error.key == key
    assert problem in error.problem
    assert str(error).startswith(f"{path}: {key}: ")


def test_no_roots(config_dir: Path) -> None:
    """A config without any root table is refused, naming ``roots``."""
    path = _write(config_dir, 'data_dir = "data"\n')
    with pytest.raises(ConfigError, match="roots: missing table") as caught:
        load_server_config(path)
    assert caught.value.key == "roots"
    path = _write(config_dir, 'data_dir = "data"\n[roots]\n')
    with pytest.raises(ConfigError, match="no root configured"):
        load_server_config(path)


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    """A TOML syntax error and an unreadable file name the file and the problem."""
    path = tmp_path / "bad.toml"
    path.write_text("data_dir = \n")
    with pytest.raises(ConfigError, match=f"^{path}: TOML syntax error"):
        load_server_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_server_config(tmp_path / "absent.toml")
    path.write_bytes(b"data_dir = \"\xff\"\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_server_config(path)


# -- keys ------------------------------------------------------------------------------


def test_check_keys_returns_loaded_roots(config_dir: Path) -> None:
    """check_keys loads certificate and key; they belong together."""
    config, roots = load_and_check(config_dir / "signer-server.toml")
    loaded = roots[0]
    assert loaded.index == 0 and loaded.config == config.roots[0]
    assert loaded.certificate == make_root("Config Root 0").certificate
    assert loaded.key.public_key() == loaded.certificate.public_key()


def test_key_not_matching_certificate_is_refused(config_dir: Path) -> None:
    """A key from another root is refused, naming roots.0.key and both files."""
    _private(config_dir / "root0.key", _key_pem(1))
    config = load_server_config(config_dir / "signer-server.toml")
    with pytest.raises(ConfigError, match="does not match the certificate") as caught:
        check_keys(config)
    assert caught.value.key == "roots.0.key"
    assert caught.value.path == config.path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_readable_by_others_is_refused(config_dir: Path, mode: int) -> None:
    """A key file with any group/other permission bit is refused."""
    os.chmod(config_dir / "root0.key", mode)
    config = load_server_config(config_dir / "signer-server.toml")
    with pytest.raises(ConfigError, match="accessible by group or others") as caught:
        check_keys(config)
    assert caught.value.key == "roots.0.key"
    assert f"{mode:04o}" in caught.value.problem


def test_encrypted_key_with_passphrase_file(config_dir: Path) -> None:
    """An encrypted key opens with the first line of a 0600 passphrase file."""
    _private(config_dir / "root0.key", _key_pem(0, b"s3cret phrase"))
    _private(config_dir / "root0.pass", "s3cret phrase\nignored second line\n")
    path = _write(config_dir, BASE + 'passphrase_file = "root0.pass"\n')
    _, roots = load_and_check(path)
    assert roots[0].key.public_key() == roots[0].certificate.public_key()


def test_encrypted_key_with_passphrase_from_environment(config_dir: Path) -> None:
    """An encrypted key opens with the passphrase from the named environment variable."""
    _private(config_dir / "root0.key", _key_pem(0, b"from-env"))
    path = _write(config_dir, BASE + 'passphrase_env = "ROOT0_PASS"\n')
    _, roots = load_and_check(path, {"ROOT0_PASS": "from-env"})
    assert roots[0].key.public_key() == roots[0].certificate.public_key()


def test_real_environment_is_the_default(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping the process environment is read."""
    _private(config_dir / "root0.key", _key_pem(0, b"process-env"))
    monkeypatch.setenv("SIGNER_TEST_ROOT0_PASS", "process-env")
    path = _write(config_dir, BASE + 'passphrase_env = "SIGNER_TEST_ROOT0_PASS"\n')
    assert 0 in load_and_check(path)[1]


@pytest.mark.parametrize(
    "key_password, extra, environ, key, problem",
    [
        (b"right", 'passphrase_env = "P"\n', {"P": "wrong"}, "roots.0.key", "wrong passphrase"),
        (b"right", 'passphrase_env = "P"\n', {}, "roots.0.passphrase_env", "not set"),
        (b"right", "", {}, "roots.0.key", "encrypted"),
        (None, 'passphrase_env = "P"\n', {"P": "x"}, "roots.0.key", "not encrypted"),
        (b"right", 'passphrase_file = "empty.pass"\n', {}, "roots.0.passphrase_file", "empty"),
        (b"right", 'passphrase_file = "open.pass"\n', {}, "roots.0.passphrase_file",
         "accessible by group or others"),
    ],
)
def test_passphrase_problems(
    config_dir: Path, key_password: bytes | None, extra: str, environ: dict[str, str], key: str,
    problem: str,
) -> None:
    """Wrong, missing, superfluous, empty or exposed passphrases are refused by name."""
    _private(config_dir / "root0.key", _key_pem(0, key_password))
    _private(config_dir / "empty.pass", "")
    _private(config_dir / "open.pass", "right\n", 0o644)
    path = _write(config_dir, BASE + extra)
    config = load_server_config(path)
    with pytest.raises(ConfigError) as caught:
        check_keys(config, environ)
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_certificate_problems(config_dir: Path) -> None:
    """A garbage certificate file and a non-CA certificate are refused."""
    config_path = config_dir / "signer-server.toml"
    (config_dir / "root0.crt").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="not an X.509 certificate") as caught:
        check_keys(load_server_config(config_path))
    assert caught.value.key == "roots.0.certificate"

    key = make_root("Config Root 0").key
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not a CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    leaf = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (config_dir / "root0.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigError, match="not a CA certificate"):
        check_keys(load_server_config(config_path))


def test_der_certificate_and_key_are_accepted(config_dir: Path) -> None:
    """Certificate and key may be DER instead of PEM."""
    root = make_root("Config Root 0")
    (config_dir / "root0.crt").write_bytes(root.certificate.public_bytes(serialization.Encoding.DER))
    _private(
        config_dir / "root0.key",
        root.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _, roots = load_and_check(config_dir / "signer-server.toml")
    assert roots[0].certificate == root.certificate


def test_garbage_key_file_is_refused(config_dir: Path) -> None:
    """A key file that holds no private key is refused, naming roots.0.key."""
    _private(config_dir / "root0.key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="not a private key") as caught:
        check_keys(load_server_config(config_dir / "signer-server.toml"))
    assert caught.value.key == "roots.0.key"
