"""A complete throw-away signer for rehearsals, the demo and tests.

:func:`create_test_signer` writes into a directory::

    DIR/signer-server.toml     the configuration (load_server_config accepts it)
    DIR/roots/root0.crt|.key   root 0 ("class 1"), self-signed, key mode 0600
    DIR/roots/root1.crt|.key   root 1 ("class 3"), self-signed, key mode 0600
    DIR/data/                  data directory (CA database, CRLs, timesync.sh)
    DIR/gnupg/                 GnuPG home for the OpenPGP CA key (mode 0700)

Every profile keeps its default. Time sync writes ``DIR/data/timesync.sh``
(never run by anyone). The ``[openpgp]`` table names ``DIR/gnupg`` with an
empty ``key_id`` (OpenPGP requests refused) until the CA key exists: pass
``openpgp_key_id`` when it is already known, or call
:func:`set_openpgp_key_id` after generating it
(:mod:`signer.server.openpgp`).

The material is for tests only: unencrypted keys, ``.test`` URLs.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from signer.server.config import ConfigError, load_server_config

__all__ = ["CONFIG_NAME", "ROOT_NAMES", "create_test_signer", "set_openpgp_key_id"]

CONFIG_NAME = "signer-server.toml"
#: Common names of the throw-away roots, by index.
ROOT_NAMES = {0: "Signer Test Root 0 (class 1)", 1: "Signer Test Root 1 (class 3)"}
_ROOT_VALIDITY = datetime.timedelta(days=3650)
_PLACEHOLDER_LINE = 'key_id = ""  # placeholder: set by set_openpgp_key_id()'


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file created with mode 0600."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.chmod(path, 0o600)


def self_signed_root(
    key: rsa.RSAPrivateKey, name: x509.Name, not_before: datetime.datetime, validity: datetime.timedelta
) -> x509.Certificate:
    """A self-signed CA certificate (keyCertSign, cRLSign, SKI) for throw-away CAs."""
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _make_root(common_name: str, key_size: int, now: datetime.datetime) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Signer Test CA"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Throw-away, not for production"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    start = now.replace(microsecond=0) - datetime.timedelta(days=1)
    certificate = self_signed_root(key, name, start, _ROOT_VALIDITY)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def _toml_string(value: str | Path) -> str:
    # A JSON string is a valid TOML basic string.
    return json.dumps(str(value))


def _config_text(directory: Path, serial_config: Path | None, openpgp_key_id: str | None) -> str:
    lines = [
        "# Throw-away test signer written by create_test_signer(); not for production.",
        "# Every key is documented in etc/signer-server.toml.example.",
        f"data_dir = {_toml_string(directory / 'data')}",
    ]
    if serial_config is not None:
        lines.append(f"serial_config = {_toml_string(serial_config)}")
    lines += [
        'cps_url = "http://www.cacert.org/cps.php"',
        'log_format = "text"',
        "",
        "[time_sync]",
        'action = "script"',
        f"script = {_toml_string(directory / 'data' / 'timesync.sh')}",
        "",
        "[x509]",
        'serial_numbers = "random"',
        "min_rsa_bits = 2048",
        "",
        "[crl]",
        "lifetime_days = 7",
        "expired_grace_days = 90",
        "",
        "[openpgp]",
        f"gnupg_home = {_toml_string(directory / 'gnupg')}",
        (f"key_id = {_toml_string(openpgp_key_id)}" if openpgp_key_id else _PLACEHOLDER_LINE),
        'digest = "SHA256"',
    ]
    for index in ROOT_NAMES:
        lines += [
            "",
            f"[roots.{index}]",
            f"certificate = {_toml_string(directory / 'roots' / f'root{index}.crt')}",
            f"key = {_toml_string(directory / 'roots' / f'root{index}.key')}",
            f'crl_url = "http://crl.signer.test/root{index}.crl"',
            'ocsp_url = "http://ocsp.signer.test/"',
            'default_digest = "sha256"',
        ]
    return "\n".join(lines) + "\n"


def create_test_signer(
    directory: Path,
    serial_config: Path | None = None,
    *,
    key_size: int = 2048,
    openpgp_key_id: str | None = None,
    now: datetime.datetime | None = None,
) -> Path:
    """Create a throw-away signer in ``directory``; return its configuration path.

    ``directory`` may exist but must not hold a configuration yet
    (:class:`FileExistsError`). ``serial_config`` (an existing file) is
    written into the configuration when given. The result is loaded with
    :func:`~signer.server.config.load_server_config` before returning.
    """
    directory = Path(directory).absolute()
    config_path = directory / CONFIG_NAME
    if config_path.exists():
        raise FileExistsError(f"{config_path} already exists; choose an empty directory")
    if serial_config is not None:
        serial_config = Path(serial_config).absolute()
    when = now or datetime.datetime.now(datetime.timezone.utc)
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("roots", "data", "gnupg"):
        (directory / name).mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory / name, 0o700)
    for index, common_name in ROOT_NAMES.items():
        certificate_pem, key_pem = _make_root(common_name, key_size, when)
        (directory / "roots" / f"root{index}.crt").write_bytes(certificate_pem)
        _write_private(directory / "roots" / f"root{index}.key", key_pem)
    temporary = config_path.with_suffix(".toml.tmp")
    temporary.write_text(_config_text(directory, serial_config, openpgp_key_id), encoding="utf-8")
    os.replace(temporary, config_path)
    load_server_config(config_path)
    return config_path


def set_openpgp_key_id(config_path: Path, key_id: str) -> None:
    """Fill the placeholder ``key_id`` written by :func:`create_test_signer`.

    The file is replaced atomically and validated; :class:`ConfigError` when
    there is no placeholder or ``key_id`` is not a valid id or fingerprint.
    """
    config_path = Path(config_path)
    text = config_path.read_text(encoding="utf-8")
    if _PLACEHOLDER_LINE not in text:
        raise ConfigError(config_path, "openpgp.key_id", "no placeholder to fill (already set?)")
    if not re.fullmatch(r"(0x)?[0-9A-Fa-f]+", key_id):
        raise ConfigError(config_path, "openpgp.key_id", f"{key_id!r} is not a hex key id")
    updated = text.replace(_PLACEHOLDER_LINE, f"key_id = {_toml_string(key_id)}")
    temporary = config_path.with_suffix(".toml.tmp")
    temporary.write_text(updated, encoding="utf-8")
    try:
        load_server_config(temporary)
    except ConfigError as error:
        temporary.unlink()
        raise ConfigError(config_path, error.key, error.problem) from None
    os.replace(temporary, config_path)
