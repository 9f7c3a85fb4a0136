"""Configuration of the signer client: one TOML file into frozen records.

:func:`load_client_config` reads the file with :mod:`tomllib` and returns a
:class:`ClientConfig`. Every problem raises :class:`ConfigError` naming the
file, the key and what was expected. Relative paths are resolved against the
directory of the configuration file. No password is ever read from PHP: the
database password comes from a file or an environment variable.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

DEFAULT_CLIENT_CERT_URL = "https://www.cacert.org/account.php?id=6&cert={id}"
DEFAULT_SERVER_CERT_URL = "https://www.cacert.org/account.php?id=15&cert={id}"
DEFAULT_ROOT_URL = "https://www.cacert.org/index.php?id=3"
DEFAULT_GPG_URL = "https://www.cacert.org/gpg.php?id=3&cert={id}"
DEFAULT_ROOT_FINGERPRINTS = (
    "SHA1: 13:5C:EC:36:F4:9C:B8:E9:3B:1A:B2:70:CD:80:88:46:76:CE:8F:33",
    "MD5: A6:1B:37:5E:39:0D:9C:36:54:EE:BD:20:31:46:1F:6B",
)
DEFAULT_GPG_KEY_ID = "65D0FD58"
DEFAULT_GPG_FINGERPRINT = "A31D 4F81 EF4E BD07 B456 FA04 D2BB 0D01 65D0 FD58"


class ConfigError(Exception):
    """A configuration file that cannot be used.

    :ivar source: the file; :ivar key: dotted key or None; :ivar problem: text.
    """

    def __init__(self, source: str, key: str | None, problem: str) -> None:
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the WebDB is: ``driver`` is ``"mysql"`` or ``"sqlite"``."""

    driver: str
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "cacert"
    database: str = "cacert"
    password: str = field(default="", repr=False)
    sqlite_path: Path | None = None
    charset: str = "utf8mb4"
    retries: int = 3


@dataclass(frozen=True)
class LinkConfig:
    """Serial line and link timeouts (seconds)."""

    serial_config: Path | None
    start_ack: float = 20.0
    frame_ack: float = 5.0
    response_start: float = 120.0
    frame_byte: float = 5.0
    max_resends: int = 5
    max_frame_length: int = 8 * 1024 * 1024
    min_rate: float = 500.0


@dataclass(frozen=True)
class FilesConfig:
    """The legacy file layout: request and certificate folders, ``crt_name`` prefix."""

    csr_dir: Path
    crt_dir: Path
    crt_name_prefix: str = "../crt"
    state_dir: Path | None = None


@dataclass(frozen=True)
class RootConfig:
    """One CA root: its 1-based ``rootcert`` number, CRL file and CA certificate."""

    rootcert: int
    crl: Path
    ca_certificate: Path


@dataclass(frozen=True)
class PollingConfig:
    """Polling round cadence and the warning threshold."""

    interval: float = 2.7
    crl_check_every: int = 100
    warning_threshold: int = 3


@dataclass(frozen=True)
class ValidityPolicy:
    """Days requested per kind of certificate (see client.md, "Validity")."""

    assured_points: int = 50
    personal_assured: int = 366
    personal_unassured: int = 180
    org_server: int = 730
    org_client: int = 365
    openpgp: int = 366


@dataclass(frozen=True)
class MailConfig:
    """SMTP, sender, and the facts put into the member mails."""

    enabled: bool = True
    smtp_host: str = "localhost"
    smtp_port: int = 25
    sender: str = "support@cacert.org"
    sender_name: str = "CAcert Support"
    client_cert_url: str = DEFAULT_CLIENT_CERT_URL
    server_cert_url: str = DEFAULT_SERVER_CERT_URL
    root_url: str = DEFAULT_ROOT_URL
    root_fingerprints: tuple[str, ...] = DEFAULT_ROOT_FINGERPRINTS
    gpg_url: str = DEFAULT_GPG_URL
    gpg_key_id: str = DEFAULT_GPG_KEY_ID
    gpg_fingerprint: str = DEFAULT_GPG_FINGERPRINT
    locale_dir: Path | None = None
    timeout: float = 60.0


@dataclass(frozen=True)
class OpenPGPConfig:
    """Which signatures in a returned key are the CA's (empty = any foreign one)."""

    ca_key_id: str = ""


@dataclass(frozen=True)
class ClientConfig:
    """Everything the client needs, validated."""

    source: str
    database: DatabaseConfig
    link: LinkConfig
    files: FilesConfig
    roots: tuple[RootConfig, ...]
    polling: PollingConfig = PollingConfig()
    validity: ValidityPolicy = ValidityPolicy()
    mail: MailConfig = MailConfig()
    openpgp: OpenPGPConfig = OpenPGPConfig()
    log_format: str = "text"
    health_address: str = ""
    #: The optional ``[wakeup]`` table
    #: (:class:`signer.client.wakeup_config.WakeupConfig`), None when absent.
    wakeup: Any = None

    def root(self, rootcert: int) -> RootConfig | None:
        """The root configured for the 1-based ``rootcert``, if any."""
        for root in self.roots:
            if root.rootcert == rootcert:
                return root
        return None


# -- reading helpers -------------------------------------------------------

_MISSING = object()


class _Table:
    """A TOML table that knows its dotted name and refuses unknown keys."""

    def __init__(self, source: str, name: str, data: Mapping[str, Any], base: Path) -> None:
        self.source = source
        self.name = name
        self.data = dict(data)
        self.base = base
        self.used: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def error(self, key: str | None, problem: str) -> ConfigError:
        return ConfigError(self.source, self.key(key) if key else (self.name or None), problem)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"expected {_names(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.error(key, f"expected {_names(kinds)}, got {type(value).__name__}")
        return value

    def positive(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        value = self.get(key, kind, default)
        if value is not None and value <= 0:
            raise self.error(key, f"must be greater than zero, not {value}")
        return value

    def path(self, key: str, default: Any = _MISSING) -> Path | None:
        self.used.add(key)
        if key not in self.data and default is not _MISSING:
            return default  # type: ignore[no-any-return]
        value = self.get(key, str)
        if not value:
            raise self.error(key, "must not be empty")
        path = Path(value)
        return path if path.is_absolute() else self.base / path

    def sub(self, key: str, required: bool = False) -> "_Table":
        value = self.get(key, dict, _MISSING if required else {})
        return _Table(self.source, self.key(key), value, self.base)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key (misspelt?)")


def _names(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             dict: "a table", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _database(table: _Table) -> DatabaseConfig:
    driver = table.get("driver", str)
    if driver == "sqlite":
        config = DatabaseConfig(driver="sqlite", sqlite_path=table.path("sqlite_path"))
        table.finish()
        return config
    if driver != "mysql":
        raise table.error("driver", f"must be 'mysql' or 'sqlite', not {driver!r}")
    password_file = table.path("password_file", None)
    password_env = table.get("password_env", str, "")
    if password_file is not None and password_env:
        raise table.error("password_file", "give either password_file or password_env, not both")
    password = ""
    if password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            raise table.error("password_file", f"cannot read {password_file}: {exc.strerror}") from None
    elif password_env:
        if password_env not in os.environ:
            raise table.error("password_env", f"environment variable {password_env} is not set")
        password = os.environ[password_env]
    port = table.positive("port", int, 3306)
    if port > 65535:
        raise table.error("port", f"must be a TCP port, not {port}")
    config = DatabaseConfig(
        driver="mysql",
        host=table.get("host", str, "127.0.0.1"),
        port=port,
        user=table.get("user", str),
        database=table.get("database", str),
        password=password,
        charset=table.get("charset", str, "utf8mb4"),
        retries=table.positive("retries", int, 3),
    )
    table.finish()
    return config


def _link(table: _Table) -> LinkConfig:
    config = LinkConfig(
        serial_config=table.path("serial_config", None),
        start_ack=table.positive("start_ack_timeout", float, 20.0),
        frame_ack=table.positive("frame_ack_timeout", float, 5.0),
        response_start=table.positive("response_timeout", float, 120.0),
        frame_byte=table.positive("frame_byte_timeout", float, 5.0),
        max_resends=table.positive("max_resends", int, 5),
        max_frame_length=table.positive("max_frame_length", int, 8 * 1024 * 1024),
        min_rate=table.positive("min_rate", float, 500.0),
    )
    if config.max_frame_length > 2**24 - 1:
        raise table.error("max_frame_length", "must be below 16 MiB (2**24 - 1)")
    table.finish()
    return config


def _files(table: _Table) -> FilesConfig:
    config = FilesConfig(
        csr_dir=table.path("csr_dir"),  # type: ignore[arg-type]
        crt_dir=table.path("crt_dir"),  # type: ignore[arg-type]
        crt_name_prefix=table.get("crt_name_prefix", str, "../crt").rstrip("/"),
        state_dir=table.path("state_dir", None),
    )
    table.finish()
    return config


def _roots(parent: _Table) -> tuple[RootConfig, ...]:
    raw = parent.get("roots", list, [])
    roots = []
    seen: set[int] = set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise parent.error("roots", f"entry {index} must be a table ([[roots]])")
        table = _Table(parent.source, f"roots[{index}]", item, parent.base)
        rootcert = table.positive("rootcert", int)
        if rootcert in seen:
            raise table.error("rootcert", f"rootcert {rootcert} is configured twice")
        seen.add(rootcert)
        roots.append(
            RootConfig(
                rootcert=rootcert,
                crl=table.path("crl"),  # type: ignore[arg-type]
                ca_certificate=table.path("ca_certificate"),  # type: ignore[arg-type]
            )
        )
        table.finish()
    return tuple(roots)


def _polling(table: _Table) -> PollingConfig:
    config = PollingConfig(
        interval=table.positive("interval", float, 2.7),
        crl_check_every=table.positive("crl_check_every", int, 100),
        warning_threshold=table.positive("warning_threshold", int, 3),
    )
    table.finish()
    return config


def _validity(table: _Table) -> ValidityPolicy:
    values = {}
    for name, default in (
        ("assured_points", 50),
        ("personal_assured", 366),
        ("personal_unassured", 180),
        ("org_server", 730),
        ("org_client", 365),
        ("openpgp", 366),
    ):
        value = table.positive(name, int, default)
        if name != "assured_points" and value > 0xFFFF:
            raise table.error(name, f"{value} days do not fit the 16-bit header field")
        values[name] = value
    table.finish()
    return ValidityPolicy(**values)


def _mail(table: _Table) -> MailConfig:
    fingerprints = table.get("root_fingerprints", list, list(DEFAULT_ROOT_FINGERPRINTS))
    if not all(isinstance(item, str) for item in fingerprints):
        raise table.error("root_fingerprints", "must be a list of strings")
    config = MailConfig(
        enabled=table.get("enabled", bool, True),
        smtp_host=table.get("smtp_host", str, "localhost"),
        smtp_port=table.positive("smtp_port", int, 25),
        sender=table.get("sender", str, "support@cacert.org"),
        sender_name=table.get("sender_name", str, "CAcert Support"),
        client_cert_url=table.get("client_cert_url", str, DEFAULT_CLIENT_CERT_URL),
        server_cert_url=table.get("server_cert_url", str, DEFAULT_SERVER_CERT_URL),
        root_url=table.get("root_url", str, DEFAULT_ROOT_URL),
        root_fingerprints=tuple(fingerprints),
        gpg_url=table.get("gpg_url", str, DEFAULT_GPG_URL),
        gpg_key_id=table.get("gpg_key_id", str, DEFAULT_GPG_KEY_ID),
        gpg_fingerprint=table.get("gpg_fingerprint", str, DEFAULT_GPG_FINGERPRINT),
        locale_dir=table.path("locale_dir", None),
        timeout=table.positive("timeout", float, 60.0),
    )
    for key in ("client_cert_url", "server_cert_url", "gpg_url"):
        try:
            getattr(config, key).format(id=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise table.error(key, f"bad placeholder ({exc}); only {{id}} is known") from None
    table.finish()
    return config


def parse_client_config(data: Mapping[str, Any], source: str, base: Path) -> ClientConfig:
    """Build a :class:`ClientConfig` from already parsed TOML ``data``."""
    top = _Table(source, "", data, base)
    database = _database(top.sub("database", required=True))
    link = _link(top.sub("link"))
    files = _files(top.sub("files", required=True))
    roots = _roots(top)
    polling = _polling(top.sub("polling"))
    validity = _validity(top.sub("validity"))
    mail = _mail(top.sub("mail"))
    openpgp_table = top.sub("openpgp")
    openpgp = OpenPGPConfig(ca_key_id=openpgp_table.get("ca_key_id", str, "").replace(" ", "").upper())
    openpgp_table.finish()
    logging_table = top.sub("logging")
    log_format = logging_table.get("format", str, "text")
    if log_format not in ("text", "json"):
        raise logging_table.error("format", f"must be 'text' or 'json', not {log_format!r}")
    logging_table.finish()
    health_table = top.sub("health")
    health_address = health_table.get("address", str, "")
    health_table.finish()
    wakeup = None
    if "wakeup" in top.data:
        from signer.client.wakeup_config import parse_wakeup_table

        top.used.add("wakeup")
        wakeup = parse_wakeup_table(top.data["wakeup"], source, base)
    top.finish()
    return ClientConfig(
        source=source,
        database=database,
        link=link,
        files=files,
        roots=roots,
        polling=polling,
        validity=validity,
        mail=mail,
        openpgp=openpgp,
        log_format=log_format,
        health_address=health_address,
        wakeup=wakeup,
    )


def load_client_config(path: str | Path) -> ClientConfig:
    """Read and validate the client's TOML configuration file.

    :raises ConfigError: naming the file, the key and the problem.
    """
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(source, None, f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(source, None, f"not UTF-8: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, None, f"not valid TOML: {exc}") from None
    return parse_client_config(data, source, path.resolve().parent)
