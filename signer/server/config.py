"""The signing host's configuration: one TOML file, validated into frozen records.

Two steps, both refusing to start on any problem with a :class:`ConfigError`
whose message names the file, the key and what is wrong:

1. :func:`load_server_config` reads and validates the TOML file: types, ranges,
   names, that every referenced file exists. It reads no key material.
2. :func:`check_keys` loads every root's certificate and private key (the
   passphrase from a file or an environment variable, never from the command
   line), refuses a key file readable by group or others (``mode & 0o077``),
   a key that does not match its certificate and a certificate that is not a
   CA, and returns the loaded objects as :class:`LoadedRoot` records.

:func:`load_and_check` does both. Relative paths in the file are relative to
the directory of the configuration file. Unknown keys are errors (a typo must
not silently fall back to a default).

Profiles may be omitted entirely: every profile id of the wire protocol
(0..11) gets the defaults of ``server.md``; a ``[profiles.<id or name>]``
table overrides single keys of one profile.
"""

from __future__ import annotations

import datetime
import functools
import os
import stat
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from signer.protocol.codec import DEFAULT_MAX_FRAME_LENGTH, DIGESTS, PROFILES

__all__ = [
    "ConfigError",
    "CRLConfig",
    "DIGEST_NAMES",
    "EXTENDED_KEY_USAGES",
    "KEY_USAGES",
    "LinkConfig",
    "LoadedRoot",
    "OpenPGPConfig",
    "ProfileConfig",
    "RootConfig",
    "ServerConfig",
    "STRONG_DIGESTS",
    "TimeSyncConfig",
    "WEAK_DIGESTS",
    "X509Policy",
    "check_keys",
    "default_profiles",
    "load_and_check",
    "load_server_config",
]

#: Digest names a CA may sign with (the wire ids' names without "default").
DIGEST_NAMES: tuple[str, ...] = tuple(name for name in DIGESTS.values() if name != "default")
#: Digests refused unless listed in ``[x509] allow_weak_digests``.
WEAK_DIGESTS: frozenset[str] = frozenset({"md5", "sha1", "ripemd160"})
STRONG_DIGESTS: tuple[str, ...] = tuple(n for n in DIGEST_NAMES if n not in WEAK_DIGESTS)

#: extendedKeyUsage names accepted in profiles (OpenSSL's short names plus
#: the obsolete Netscape/Microsoft purposes). Dotted OIDs are accepted too.
EXTENDED_KEY_USAGES: Mapping[str, ObjectIdentifier] = MappingProxyType(
    {
        "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
        "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
        "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
        "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
        "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
        "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
        "anyExtendedKeyUsage": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
        "msCodeInd": ObjectIdentifier("1.3.6.1.4.1.311.2.1.21"),
        "msCodeCom": ObjectIdentifier("1.3.6.1.4.1.311.2.1.22"),
        "msSGC": ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),
        "msEFS": ObjectIdentifier("1.3.6.1.4.1.311.10.3.4"),
        "nsSGC": ObjectIdentifier("2.16.840.1.113730.4.1"),
    }
)

#: keyUsage bit names (OpenSSL spelling) -> ``x509.KeyUsage`` argument names.
KEY_USAGES: Mapping[str, str] = MappingProxyType(
    {
        "digitalSignature": "digital_signature",
        "nonRepudiation": "content_commitment",
        "keyEncipherment": "key_encipherment",
        "dataEncipherment": "data_encipherment",
        "keyAgreement": "key_agreement",
        "keyCertSign": "key_cert_sign",
        "cRLSign": "crl_sign",
        "encipherOnly": "encipher_only",
        "decipherOnly": "decipher_only",
    }
)

SERIAL_POLICIES = ("random", "sequential")
LOG_FORMATS = ("text", "json")
TIME_SYNC_ACTIONS = ("off", "script")
CACERT_POLICY_OID = "1.3.6.1.4.1.18506.4.4"
CACERT_CPS_URL = "http://www.cacert.org/cps.php"


class ConfigError(Exception):
    """The configuration cannot be used; the message names file, key and problem."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        self.path = Path(path)
        self.key = key
        self.problem = problem
        where = f"{self.path}: {key}" if key else str(self.path)
        super().__init__(f"{where}: {problem}")


# -- records -----------------------------------------------------------------


@dataclass(frozen=True)
class RootConfig:
    """One CA root (wire root index ``index``)."""

    index: int
    certificate: Path
    key: Path
    crl_url: str
    ocsp_url: str
    default_digest: str = "sha256"
    passphrase_file: Path | None = None
    passphrase_env: str | None = None


@dataclass(frozen=True)
class ProfileConfig:
    """One certificate profile (wire profile id ``id``).

    ``extended_key_usage`` holds names of :data:`EXTENDED_KEY_USAGES` or
    dotted OIDs; ``key_usage`` names of :data:`KEY_USAGES`.
    """

    id: int
    name: str
    extended_key_usage: tuple[str, ...]
    extended_key_usage_critical: bool = False
    key_usage: tuple[str, ...] = ("digitalSignature", "keyEncipherment", "keyAgreement")
    max_days: int = 730
    allowed_digests: tuple[str, ...] = STRONG_DIGESTS
    ca: bool = False
    path_length: int | None = None
    email_san_from_subject: bool = False
    enabled: bool = True

    def extended_key_usage_oids(self) -> tuple[ObjectIdentifier, ...]:
        """The EKU purposes as OIDs, in configured order."""
        return tuple(
            EXTENDED_KEY_USAGES[name] if name in EXTENDED_KEY_USAGES else ObjectIdentifier(name)
            for name in self.extended_key_usage
        )

    def key_usage_extension(self) -> x509.KeyUsage:
        """The keyUsage extension value of this profile."""
        flags = {argument: False for argument in KEY_USAGES.values()}
        for name in self.key_usage:
            flags[KEY_USAGES[name]] = True
        return x509.KeyUsage(**flags)


@dataclass(frozen=True)
class X509Policy:
    """CA-wide X.509 rules."""

    serial_numbers: str = "random"
    min_rsa_bits: int = 2048
    allow_weak_digests: frozenset[str] = frozenset()
    certificate_policies: bool = False
    policy_oid: str = CACERT_POLICY_OID
    cps_url: str = CACERT_CPS_URL
    #: An identical request arriving again within this time (a client that
    #: crashed before storing its answer) gets the certificate already issued
    #: instead of a second one. Zero turns it off.
    replay_window: datetime.timedelta = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class CRLConfig:
    """CRL generation: ``lifetime`` until nextUpdate; revoked entries whose
    notAfter lies more than ``expired_grace`` in the past are left out
    (``None``: never left out)."""

    lifetime: datetime.timedelta = datetime.timedelta(days=7)
    expired_grace: datetime.timedelta | None = datetime.timedelta(days=90)
    #: How many CRLs per root are kept to answer with a delta.
    history: int = 16


@dataclass(frozen=True)
class OpenPGPConfig:
    """The OpenPGP certifier. ``key_id`` None: OpenPGP requests are refused."""

    gnupg_home: Path
    key_id: str | None
    passphrase_file: Path | None = None
    passphrase_env: str | None = None
    gpg_binary: str = "gpg"
    digest: str = "SHA256"


@dataclass(frozen=True)
class TimeSyncConfig:
    """What to do with a valid NUL timestamp: ``off`` or write ``script``."""

    action: str = "off"
    script: Path | None = None


@dataclass(frozen=True)
class LinkConfig:
    """Serial-link tuning, passed through to the link layer (seconds)."""

    max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH
    start_timeout: float = 20.0
    ack_timeout: float = 5.0
    frame_timeout: float = 30.0
    max_resends: int = 5
    #: bytes per second an incoming frame must average after frame_timeout
    min_rate: float = 500.0


@dataclass(frozen=True)
class ServerConfig:
    """Everything the signing host needs, validated."""

    path: Path
    data_dir: Path
    roots: Mapping[int, RootConfig]
    profiles: Mapping[int, ProfileConfig]
    x509: X509Policy = field(default_factory=X509Policy)
    crl: CRLConfig = field(default_factory=CRLConfig)
    openpgp: OpenPGPConfig | None = None
    time_sync: TimeSyncConfig = field(default_factory=TimeSyncConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    serial_config: Path | None = None
    cps_url: str = CACERT_CPS_URL
    log_format: str = "text"
    health_listen: str | None = None


@dataclass(frozen=True)
class LoadedRoot:
    """A root whose key was loaded and checked against its certificate."""

    index: int
    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    config: RootConfig


# -- profile defaults (server.md) --------------------------------------------

_CLIENT_EKU = ("emailProtection", "clientAuth")
_SERVER_EKU = ("clientAuth", "serverAuth")


def default_profiles() -> dict[int, ProfileConfig]:
    """The profile table of ``server.md`` (legacy purposes off)."""
    profiles: dict[int, ProfileConfig] = {}
    for number, name in PROFILES.items():
        if number in (0, 1, 3, 4):
            profile = ProfileConfig(number, name, _CLIENT_EKU, email_san_from_subject=True)
        elif number == 2:
            profile = ProfileConfig(
                number, name, _CLIENT_EKU + ("codeSigning",), email_san_from_subject=True
            )
        elif number in (5, 6, 7):
            profile = ProfileConfig(number, name, _SERVER_EKU)
        elif number == 8:
            profile = ProfileConfig(number, name, ("OCSPSigning",))
        elif number == 9:
            profile = ProfileConfig(
                number, name, ("timeStamping",), extended_key_usage_critical=True
            )
        elif number == 10:
            profile = ProfileConfig(number, name, ("clientAuth",))
        else:  # 11 subca
            profile = ProfileConfig(
                number,
                name,
                (),
                key_usage=("keyCertSign", "cRLSign"),
                max_days=3650,
                ca=True,
                path_length=0,
            )
        profiles[number] = profile
    return profiles


# -- reading helpers ----------------------------------------------------------

_MISSING: Any = object()


class _Table:
    """A TOML table with typed getters that raise :class:`ConfigError`."""

    def __init__(self, path: Path, prefix: str, data: Mapping[str, Any]) -> None:
        self.file = path
        self.prefix = prefix
        self.data = data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), problem)

    def _get(self, name: str, kind: type | tuple[type, ...], what: str, default: Any) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is _MISSING:
                raise self.error(name, "missing (required)")
            return default
        value = self.data[name]
        # bool is an int in Python; never accept it where a number is wanted.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.error(name, f"expected {what}, got {value!r}")
        if not isinstance(value, kind):
            raise self.error(name, f"expected {what}, got {type(value).__name__} {value!r}")
        return value

    def string(self, name: str, default: Any = _MISSING) -> Any:
        return self._get(name, str, "a string", default)

    def boolean(self, name: str, default: Any = _MISSING) -> Any:
        return self._get(name, bool, "true or false", default)

    def integer(
        self, name: str, default: Any = _MISSING, minimum: int | None = None,
        maximum: int | None = None,
    ) -> Any:
        value = self._get(name, int, "an integer", default)
        if name not in self.data:
            return value
        if minimum is not None and value < minimum:
            raise self.error(name, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(name, f"must be at most {maximum}, got {value}")
        return value

    def number(self, name: str, default: Any = _MISSING, positive: bool = True) -> Any:
        value = self._get(name, (int, float), "a number", default)
        if name not in self.data:
            return value
        if positive and not value > 0:
            raise self.error(name, f"must be a positive number of seconds, got {value}")
        return float(value)

    def choice(self, name: str, choices: tuple[str, ...], default: Any = _MISSING) -> Any:
        value = self.string(name, default)
        if name in self.data and value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def strings(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, list, "a list of strings", default)
        if name not in self.data:
            return value
        for item in value:
            if not isinstance(item, str):
                raise self.error(name, f"expected a list of strings, found {item!r}")
        return tuple(value)

    def path(self, name: str, default: Any = _MISSING, must_exist: str | None = None) -> Any:
        """A path, relative ones against the config file's directory.

        ``must_exist`` is ``"file"`` or ``"dir"`` to check it now.
        """
        value = self.string(name, default)
        if name not in self.data:
            return value
        if not value:
            raise self.error(name, "empty path")
        resolved = (self.file.parent / Path(value).expanduser()).absolute()
        if must_exist == "file" and not resolved.is_file():
            raise self.error(name, f"file {resolved} does not exist")
        if must_exist == "dir" and not resolved.is_dir():
            raise self.error(name, f"directory {resolved} does not exist")
        return resolved

    def table(self, name: str, required: bool = False) -> _Table | None:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise self.error(name, "missing table (required)")
            return None
        value = self.data[name]
        if not isinstance(value, dict):
            raise self.error(name, f"expected a table, got {type(value).__name__}")
        return _Table(self.file, self.key(name), value)

    def finish(self) -> None:
        """Refuse keys nobody asked for (typos)."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key")


def _url(table: _Table, name: str, default: Any = _MISSING) -> str:
    value: str = table.string(name, default)
    if value and not (value.startswith("http://") or value.startswith("https://")):
        raise table.error(name, f"expected an http:// or https:// URL (or \"\"), got {value!r}")
    if any(ch.isspace() for ch in value):
        raise table.error(name, f"URL contains white space: {value!r}")
    return value


def _oid(table: _Table, name: str, value: str) -> ObjectIdentifier:
    try:
        return ObjectIdentifier(value)
    except ValueError:
        raise table.error(name, f"{value!r} is not a dotted OID") from None


def _digest(table: _Table, name: str, value: str, allowed_weak: frozenset[str]) -> str:
    if value not in DIGEST_NAMES:
        raise table.error(name, f"unknown digest {value!r}; known: {', '.join(DIGEST_NAMES)}")
    if value in WEAK_DIGESTS and value not in allowed_weak:
        raise table.error(
            name, f"digest {value} is weak; list it in x509.allow_weak_digests to use it"
        )
    return value


def _passphrase_source(table: _Table) -> tuple[Path | None, str | None]:
    passphrase_file = table.path("passphrase_file", None, must_exist="file")
    passphrase_env = table.string("passphrase_env", None)
    if passphrase_env == "":
        raise table.error("passphrase_env", "empty environment variable name")
    if passphrase_file is not None and passphrase_env is not None:
        raise table.error("passphrase_env", "give passphrase_file or passphrase_env, not both")
    return passphrase_file, passphrase_env


# -- sections ------------------------------------------------------------------


def _load_x509(top: _Table, cps_url: str) -> X509Policy:
    table = top.table("x509") or _Table(top.file, "x509", {})
    serials = table.choice("serial_numbers", SERIAL_POLICIES, "random")
    min_bits = table.integer("min_rsa_bits", 2048, minimum=1024, maximum=16384)
    weak = table.strings("allow_weak_digests", ())
    for name in weak:
        if name not in WEAK_DIGESTS:
            raise table.error(
                "allow_weak_digests",
                f"{name!r} is not a weak digest ({', '.join(sorted(WEAK_DIGESTS))})",
            )
    for name in weak:
        problem = _signing_problem(name)
        if problem:
            raise table.error("allow_weak_digests", problem)
    policies = table.boolean("certificate_policies", False)
    policy_oid = table.string("policy_oid", CACERT_POLICY_OID)
    _oid(table, "policy_oid", policy_oid)
    replay = table.integer("replay_window_minutes", 60, minimum=0, maximum=7 * 24 * 60)
    table.finish()
    return X509Policy(
        serials,
        min_bits,
        frozenset(weak),
        policies,
        policy_oid,
        cps_url,
        datetime.timedelta(minutes=replay),
    )


@functools.lru_cache(maxsize=None)
def _signing_problem(name: str) -> str | None:
    """Why the installed ``cryptography`` cannot sign with digest ``name``, or None."""
    factories: dict[str, Callable[[], hashes.HashAlgorithm]] = {
        "md5": hashes.MD5, "sha1": hashes.SHA1, "sha256": hashes.SHA256,
        "sha384": hashes.SHA384, "sha512": hashes.SHA512,
    }
    factory = factories.get(name)
    if factory is None:
        return f"{name}: this cryptography library has no such signature digest"
    key = ec.generate_private_key(ec.SECP256R1())
    name_ = x509.Name([])
    moment = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    try:
        (
            x509.CertificateBuilder().subject_name(name_).issuer_name(name_)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(moment).not_valid_after(moment)
            # cryptography types the digest as SHA-2/SHA-3 only; probing MD5/SHA-1 is the point
            .sign(key, factory())  # type: ignore[arg-type]
        )
    except (UnsupportedAlgorithm, ValueError) as error:
        return f"{name}: this cryptography library refuses to sign with it ({error})"
    return None


def _load_root(table: _Table, index: int, weak: frozenset[str]) -> RootConfig:
    certificate = table.path("certificate", must_exist="file")
    key = table.path("key", must_exist="file")
    passphrase_file, passphrase_env = _passphrase_source(table)
    crl_url = _url(table, "crl_url")
    ocsp_url = _url(table, "ocsp_url")
    default_digest = _digest(table, "default_digest", table.string("default_digest", "sha256"),
                             weak)
    table.finish()
    return RootConfig(
        index, certificate, key, crl_url, ocsp_url, default_digest, passphrase_file,
        passphrase_env,
    )


def _profile_number(table: _Table, name: str) -> int:
    if name.isdigit() and int(name) in PROFILES:
        return int(name)
    for number, profile_name in PROFILES.items():
        if profile_name == name:
            return number
    raise table.error(
        name,
        "unknown profile; use an id 0-11 or a name ("
        + ", ".join(PROFILES.values()) + ")",
    )


def _load_profile(table: _Table, base: ProfileConfig, weak: frozenset[str]) -> ProfileConfig:
    eku = table.strings("extended_key_usage", base.extended_key_usage)
    for name in eku:
        if name not in EXTENDED_KEY_USAGES:
            try:
                ObjectIdentifier(name)
            except ValueError:
                raise table.error(
                    "extended_key_usage",
                    f"unknown purpose {name!r}; use a dotted OID or one of "
                    + ", ".join(EXTENDED_KEY_USAGES),
                ) from None
    eku_critical = table.boolean("extended_key_usage_critical", base.extended_key_usage_critical)
    key_usage = table.strings("key_usage", base.key_usage)
    for name in key_usage:
        if name not in KEY_USAGES:
            raise table.error(
                "key_usage", f"unknown key usage {name!r}; one of {', '.join(KEY_USAGES)}"
            )
    max_days = table.integer("max_days", base.max_days, minimum=1, maximum=0xFFFF)
    default_digests = base.allowed_digests + tuple(sorted(weak))
    digests = table.strings("allowed_digests", default_digests)
    for name in digests:
        _digest(table, "allowed_digests", name, weak)
    if not digests:
        raise table.error("allowed_digests", "empty: the profile could never sign")
    ca = table.boolean("ca", base.ca)
    path_length = table.integer("path_length", base.path_length if ca else None, minimum=0)
    if path_length is not None and not ca:
        raise table.error("path_length", "only meaningful with ca = true")
    email_san = table.boolean("email_san_from_subject", base.email_san_from_subject)
    enabled = table.boolean("enabled", base.enabled)
    if ca and not {"keyCertSign"} <= set(key_usage):
        raise table.error("key_usage", "a CA profile needs keyCertSign")
    if key_usage and ("encipherOnly" in key_usage or "decipherOnly" in key_usage) and (
        "keyAgreement" not in key_usage
    ):
        raise table.error("key_usage", "encipherOnly/decipherOnly need keyAgreement")
    if not key_usage:
        raise table.error("key_usage", "empty")
    table.finish()
    return ProfileConfig(
        base.id, base.name, eku, eku_critical, key_usage, max_days, digests, ca, path_length,
        email_san, enabled,
    )


def _load_profiles(top: _Table, weak: frozenset[str]) -> dict[int, ProfileConfig]:
    defaults = default_profiles()
    if weak:
        defaults = {
            number: _replace_digests(profile, profile.allowed_digests + tuple(sorted(weak)))
            for number, profile in defaults.items()
        }
    table = top.table("profiles")
    if table is None:
        return defaults
    seen: dict[int, str] = {}
    for name in list(table.data):
        number = _profile_number(table, name)
        if number in seen:
            raise table.error(name, f"profile {number} configured twice ({seen[number]!r})")
        seen[number] = name
        section = table.table(name)
        assert section is not None
        base = default_profiles()[number]
        defaults[number] = _load_profile(section, base, weak)
    table.finish()
    return defaults


def _replace_digests(profile: ProfileConfig, digests: tuple[str, ...]) -> ProfileConfig:
    return replace(profile, allowed_digests=digests)


def _load_crl(top: _Table) -> CRLConfig:
    table = top.table("crl") or _Table(top.file, "crl", {})
    lifetime = table.integer("lifetime_days", 7, minimum=1, maximum=3650)
    grace_value = table._get("expired_grace_days", (int, str), 'an integer or "never"', 90)
    if isinstance(grace_value, str):
        if grace_value != "never":
            raise table.error(
                "expired_grace_days", f'expected an integer or "never", got {grace_value!r}'
            )
        grace = None
    else:
        if grace_value < 0:
            raise table.error("expired_grace_days", f"must be at least 0, got {grace_value}")
        grace = datetime.timedelta(days=grace_value)
    history = table.integer("history", 16, minimum=1, maximum=10000)
    table.finish()
    return CRLConfig(datetime.timedelta(days=lifetime), grace, history)


_HEX = set("0123456789abcdefABCDEF")


def _load_openpgp(top: _Table) -> OpenPGPConfig | None:
    table = top.table("openpgp")
    if table is None:
        return None
    home = table.path("gnupg_home")
    key_id = table.string("key_id")
    if key_id:
        bare = key_id[2:] if key_id.lower().startswith("0x") else key_id
        if len(bare) not in (8, 16, 40, 64) or not set(bare) <= _HEX:
            raise table.error(
                "key_id",
                f"expected a key id or fingerprint in hex (8, 16, 40 or 64 digits), got {key_id!r}",
            )
        key_id = bare.upper()
    passphrase_file, passphrase_env = _passphrase_source(table)
    binary = table.string("gpg_binary", "gpg")
    digest = table.choice("digest", ("SHA256", "SHA384", "SHA512"), "SHA256")
    table.finish()
    return OpenPGPConfig(home, key_id or None, passphrase_file, passphrase_env, binary, digest)


def _load_time_sync(top: _Table, data_dir: Path) -> TimeSyncConfig:
    table = top.table("time_sync") or _Table(top.file, "time_sync", {})
    action = table.choice("action", TIME_SYNC_ACTIONS, "off")
    script = table.path("script", None)
    if action == "script" and script is None:
        script = data_dir / "timesync.sh"
    if script is not None and not script.parent.is_dir():
        raise table.error("script", f"directory {script.parent} does not exist")
    table.finish()
    return TimeSyncConfig(action, script if action == "script" else None)


def _load_link(top: _Table) -> LinkConfig:
    table = top.table("link") or _Table(top.file, "link", {})
    defaults = LinkConfig()
    link = LinkConfig(
        max_frame_length=table.integer(
            "max_frame_length", defaults.max_frame_length, minimum=1024, maximum=2**24 - 1
        ),
        start_timeout=table.number("start_timeout", defaults.start_timeout),
        ack_timeout=table.number("ack_timeout", defaults.ack_timeout),
        frame_timeout=table.number("frame_timeout", defaults.frame_timeout),
        max_resends=table.integer("max_resends", defaults.max_resends, minimum=0, maximum=1000),
        min_rate=table.number("min_rate", defaults.min_rate, positive=False),
    )
    if not link.min_rate > 0:
        raise table.error(
            "min_rate", f"must be a positive number of bytes per second, got {link.min_rate}"
        )
    table.finish()
    return link


def _load_health(top: _Table) -> str | None:
    table = top.table("health")
    if table is None:
        return None
    listen: str = table.string("listen", "off")
    if not listen:
        raise table.error(
            "listen", 'empty; use "off" or a Twisted endpoint like "tcp:8081:interface=127.0.0.1"'
        )
    table.finish()
    return None if listen == "off" else listen


# -- entry points -----------------------------------------------------------


def load_server_config(path: Path | str) -> ServerConfig:
    """Read and validate the server's TOML file; raise :class:`ConfigError`.

    Checks syntax, types, ranges and that referenced files exist; does not
    read key material (see :func:`check_keys`).
    """
    path = Path(path).absolute()
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(path, "", f"cannot read: {error.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(path, "", f"not UTF-8: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, "", f"TOML syntax error: {error}") from None

    top = _Table(path, "", data)
    data_dir = top.path("data_dir", must_exist="dir")
    serial_config = top.path("serial_config", None, must_exist="file")
    cps_url = _url(top, "cps_url", CACERT_CPS_URL)
    log_format = top.choice("log_format", LOG_FORMATS, "text")

    x509_policy = _load_x509(top, cps_url)
    weak = x509_policy.allow_weak_digests

    roots_table = top.table("roots", required=True)
    assert roots_table is not None
    roots: dict[int, RootConfig] = {}
    for name in list(roots_table.data):
        if not name.isdigit() or int(name) > 255:
            raise roots_table.error(name, "a root is named by its wire index 0..255")
        section = roots_table.table(name)
        assert section is not None
        roots[int(name)] = _load_root(section, int(name), weak)
    roots_table.finish()
    if not roots:
        raise ConfigError(path, "roots", "no root configured")

    profiles = _load_profiles(top, weak)
    for root in roots.values():
        usable = [p for p in profiles.values() if root.default_digest in p.allowed_digests]
        if not usable:
            raise ConfigError(
                path, f"roots.{root.index}.default_digest",
                f"{root.default_digest} is allowed by no profile",
            )

    crl = _load_crl(top)
    openpgp = _load_openpgp(top)
    time_sync = _load_time_sync(top, data_dir)
    link = _load_link(top)
    health = _load_health(top)
    top.finish()
    return ServerConfig(
        path=path,
        data_dir=data_dir,
        roots=MappingProxyType(dict(sorted(roots.items()))),
        profiles=MappingProxyType(dict(sorted(profiles.items()))),
        x509=x509_policy,
        crl=crl,
        openpgp=openpgp,
        time_sync=time_sync,
        link=link,
        serial_config=serial_config,
        cps_url=cps_url,
        log_format=log_format,
        health_listen=health,
    )


def read_passphrase(
    config_path: Path, key: str, passphrase_file: Path | None, passphrase_env: str | None,
    environ: Mapping[str, str] | None = None,
) -> bytes | None:
    """The passphrase from its file (first line, no newline) or environment variable.

    The file, like a key, must not be readable by group or others.
    """
    environ = os.environ if environ is None else environ
    if passphrase_file is not None:
        _check_private_mode(config_path, f"{key}.passphrase_file", passphrase_file)
        try:
            text = passphrase_file.read_bytes()
        except OSError as error:
            raise ConfigError(config_path, f"{key}.passphrase_file",
                              f"cannot read {passphrase_file}: {error.strerror}") from None
        first = text.splitlines()[0] if text.splitlines() else b""
        if not first:
            raise ConfigError(config_path, f"{key}.passphrase_file", f"{passphrase_file} is empty")
        return first
    if passphrase_env is not None:
        value = environ.get(passphrase_env)
        if not value:
            raise ConfigError(config_path, f"{key}.passphrase_env",
                              f"environment variable {passphrase_env} is not set or empty")
        return value.encode("utf-8")
    return None


def _check_private_mode(config_path: Path, key: str, file: Path) -> None:
    try:
        mode = file.stat().st_mode
    except OSError as error:
        raise ConfigError(config_path, key, f"cannot stat {file}: {error.strerror}") from None
    if mode & 0o077:
        raise ConfigError(
            config_path, key,
            f"{file} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
            "chmod 600 it",
        )


def _load_certificate(config_path: Path, key: str, file: Path) -> x509.Certificate:
    try:
        data = file.read_bytes()
    except OSError as error:
        raise ConfigError(config_path, key, f"cannot read {file}: {error.strerror}") from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as error:
        raise ConfigError(
            config_path, key, f"{file} is not an X.509 certificate: {error}"
        ) from None


def _public_der(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def check_root(
    config_path: Path, root: RootConfig, environ: Mapping[str, str] | None = None
) -> LoadedRoot:
    """Load one root's certificate and key and check they belong together."""
    prefix = f"roots.{root.index}"
    certificate = _load_certificate(config_path, f"{prefix}.certificate", root.certificate)
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ConfigError(config_path, f"{prefix}.certificate",
                          f"{root.certificate} is not a CA certificate "
                          "(basicConstraints CA:TRUE missing)")
    _check_private_mode(config_path, f"{prefix}.key", root.key)
    passphrase = read_passphrase(
        config_path, prefix, root.passphrase_file, root.passphrase_env, environ
    )
    try:
        data = root.key.read_bytes()
    except OSError as error:
        raise ConfigError(config_path, f"{prefix}.key",
                          f"cannot read {root.key}: {error.strerror}") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, passphrase)
        else:
            key = serialization.load_der_private_key(data, passphrase)
    except TypeError as error:
        # cryptography: "Password was not given but private key is encrypted"
        # or "Password was given but private key is not encrypted".
        raise ConfigError(config_path, f"{prefix}.key", f"{root.key}: {error}") from None
    except ValueError as error:
        problem = "wrong passphrase or not a private key" if passphrase else "not a private key"
        raise ConfigError(
            config_path, f"{prefix}.key", f"{root.key}: {problem} ({error})"
        ) from None
    if not hasattr(key, "public_key") or _public_der(key.public_key()) != _public_der(
        certificate.public_key()
    ):
        raise ConfigError(config_path, f"{prefix}.key",
                          f"{root.key} does not match the certificate {root.certificate}")
    issuer_key: CertificateIssuerPrivateKeyTypes = key  # type: ignore[assignment]
    return LoadedRoot(root.index, certificate, issuer_key, root)


def check_keys(
    config: ServerConfig, environ: Mapping[str, str] | None = None
) -> dict[int, LoadedRoot]:
    """Load and check every root key (see module docstring); raise :class:`ConfigError`."""
    return {
        index: check_root(config.path, root, environ) for index, root in config.roots.items()
    }


def load_and_check(
    path: Path | str, environ: Mapping[str, str] | None = None
) -> tuple[ServerConfig, dict[int, LoadedRoot]]:
    """:func:`load_server_config` followed by :func:`check_keys`."""
    config = load_server_config(path)
    return config, check_keys(config, environ)
