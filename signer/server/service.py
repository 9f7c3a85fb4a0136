"""Wiring of the signing host: configuration in, a running service out.

``make_server_service(config_path, reactor)`` loads and checks the
configuration (keys must match their certificates, key files must be
private), builds the X.509 authority, the CA database, the revocation service,
the OpenPGP certifier and the time sync, puts the dispatcher behind a
:class:`~signer.protocol.transport.ServerLinkProtocol` and opens the serial
line (:class:`~signer.protocol.service.SerialLineService`) when the service
starts.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from signer.protocol.link import LinkTimeouts
from signer.protocol.serialconfig import SerialConfig, load_serial_config
from signer.protocol.service import OPENED_SERVER, SerialLineService
from signer.protocol.transport import ServerLinkProtocol
from signer.server.cadb import CADatabase, DuplicateSerial
from signer.server.config import ConfigError, LoadedRoot, ServerConfig, load_and_check
from signer.server.dispatcher import Dispatcher, Operations
from signer.server.errors import RequestRefused
from signer.server.openpgp import OpenPGPCertifier
from signer.server.revocation import RevocationService
from signer.server.timesync import TimeSync
from signer.server.x509ca import X509Authority

from signer.protocol import codec

CA_DATABASE_NAME = "ca.sqlite3"
#: Attempts at a fresh random serial when one collides with a recorded one.
SERIAL_ATTEMPTS = 3


def utc_clock(reactor: Any) -> Callable[[], datetime.datetime]:
    """The reactor's time as an aware UTC datetime."""
    return lambda: datetime.datetime.fromtimestamp(reactor.seconds(), datetime.timezone.utc)


class X509Signing:
    """Issues a certificate and records it in the CA database before it is answered."""

    log = Logger()

    def __init__(
        self,
        authority: X509Authority,
        database: CADatabase,
        now: Callable[[], datetime.datetime],
        replay_window: datetime.timedelta = datetime.timedelta(0),
    ) -> None:
        self._authority = authority
        self._database = database
        self._now = now
        self._replay_window = replay_window

    def __call__(self, request: codec.SignX509Request) -> bytes:
        """Blocking: sign, record (committed), return the PEM certificate.

        A request identical to one answered within the replay window gets the
        same certificate again: the client crashed before storing it.
        """
        request_hash = hashlib.sha256(codec.encode_request(request)).hexdigest()
        if self._replay_window:
            earlier = self._database.find_by_request(
                request.root, request_hash, self._now() - self._replay_window
            )
            if earlier is not None and earlier.der is not None:
                self.log.warn(
                    "identical request repeated: answering serial {serial:X} on root {root} "
                    "issued at {issued_at} again instead of issuing a second certificate",
                    serial=earlier.serial,
                    root=earlier.root,
                    issued_at=earlier.issued_at.isoformat() if earlier.issued_at else "?",
                )
                return x509.load_der_x509_certificate(earlier.der).public_bytes(
                    serialization.Encoding.PEM
                )
        for _ in range(SERIAL_ATTEMPTS):
            issued = self._authority.issue(request)
            try:
                self._database.record_issued(
                    issued.root,
                    issued.certificate,
                    issued.profile,
                    issued_at=self._now(),
                    request_sha256=request_hash,
                )
            except DuplicateSerial:
                self.log.warn(
                    "serial {serial:x} already recorded on root {root}; issuing again",
                    serial=issued.serial,
                    root=issued.root,
                )
                continue
            self.log.info(
                "issued serial {serial:X} on root {root}, profile {profile}, until {not_after}: {subject}",
                serial=issued.serial,
                root=issued.root,
                profile=issued.profile,
                not_after=issued.not_after.isoformat(),
                subject=issued.subject,
            )
            return issued.pem
        raise RequestRefused("no unique serial number after several attempts")


def _openpgp(config: ServerConfig, log: Logger) -> OpenPGPCertifier | None:
    settings = config.openpgp
    if settings is None or not settings.key_id:
        log.warn("no OpenPGP CA key configured: OpenPGP requests will be refused")
        return None
    passphrase = None
    if settings.passphrase_env:
        passphrase = os.environ.get(settings.passphrase_env)
        if passphrase is None:
            raise ConfigError(
                config.path,
                "openpgp.passphrase_env",
                f"environment variable {settings.passphrase_env} is not set",
            )
    certifier = OpenPGPCertifier(
        settings.gnupg_home,
        settings.key_id,
        config.cps_url,
        passphrase=passphrase,
        passphrase_file=settings.passphrase_file,
        gpg_binary=settings.gpg_binary,
        digest=settings.digest,
    )
    try:
        fingerprint = certifier.check()
    except ValueError as error:
        raise ConfigError(config.path, "openpgp", str(error)) from None
    log.info("OpenPGP CA key {fingerprint} from {home}", fingerprint=fingerprint, home=str(settings.gnupg_home))
    return certifier


class ServerService(MultiService):
    """The signing host's services; loads the revoked entries before its children start.

    The revocation service's ``warm_up`` reads the revoked entries now rather
    than on the first revoke request; a failure is logged, not fatal (the
    first revoke request tries again).
    """

    log = Logger()

    def __init__(self, parts: "ServerParts") -> None:
        super().__init__()
        self.parts = parts

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        self.parts.revocation.warm_up().addErrback(
            lambda failure: self.log.failure("loading the revoked entries failed", failure)
        )
        super().startService()


class ServerParts:
    """Everything the server is made of, for the service and for tests."""

    log = Logger()

    def __init__(self, config: ServerConfig, roots: dict[int, LoadedRoot], reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        now = utc_clock(reactor)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.database = CADatabase(config.data_dir / CA_DATABASE_NAME)
        serials = None
        if config.x509.serial_numbers == "sequential":
            serials = self.database.next_serial
        self.authority = X509Authority.from_config(config, roots, now, serials)
        self.revocation = RevocationService(
            self.database,
            roots,
            reactor,
            now=now,
            lifetime=config.crl.lifetime,
            grace=config.crl.expired_grace,
            history=config.crl.history,
            # Leave room for the frame around field 1.
            max_answer=config.link.max_frame_length - 1024,
        )
        self.openpgp = _openpgp(config, self.log)
        sync = config.time_sync
        self.time_sync = TimeSync(sync.action, sync.script, now=reactor.seconds)
        operations = Operations(
            sign_x509=X509Signing(
                self.authority, self.database, now, config.x509.replay_window
            ),
            revoke=self.revocation.handle,
            sync_time=self.time_sync.handle,
            sign_openpgp=self.openpgp.certify if self.openpgp else None,
        )
        self.dispatcher = Dispatcher(operations, reactor, self._in_thread)
        link = config.link
        self.timeouts = LinkTimeouts(
            start_ack=link.start_timeout,
            frame_ack=link.ack_timeout,
            frame_byte=link.frame_timeout,
            max_resends=link.max_resends,
            min_rate=link.min_rate,
        )
        self.protocol = ServerLinkProtocol(
            self.dispatcher, reactor, self.timeouts, max_frame_length=link.max_frame_length
        )

    def _in_thread(self, function: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), function, *args)


def load_server(config_path: Path | str, reactor: Any, serial_config: Path | None = None) -> tuple[ServerParts, SerialConfig]:
    """Load and check the configuration and build the server's parts."""
    log = ServerParts.log
    config, roots = load_and_check(config_path)
    serial_path = serial_config or config.serial_config
    if serial_path is None:
        raise ConfigError(config.path, "serial_config", "no serial configuration file given")
    serial = load_serial_config(serial_path)
    log.info("configuration {path}", path=str(config.path))
    for index, root in sorted(roots.items()):
        log.info(
            "root {index}: {subject}",
            index=index,
            subject=root.certificate.subject.rfc4514_string(),
        )
    log.info(
        "profiles: {profiles}",
        profiles=", ".join(f"{number} {profile.name}" for number, profile in sorted(config.profiles.items()) if profile.enabled),
    )
    parts = ServerParts(config, roots, reactor)
    log.info("CA database {path}", path=str(config.data_dir / CA_DATABASE_NAME))
    return parts, serial


def make_server_service(
    config_path: Path | str, reactor: Any, serial_config: Path | None = None
) -> IService:
    """The whole signing host as one service (what ``twistd signer-server`` runs)."""
    parts, serial = load_server(config_path, reactor, serial_config)
    top = ServerService(parts)
    SerialLineService(parts.protocol, serial, reactor, opened=OPENED_SERVER).setServiceParent(top)
    if parts.config.health_listen:
        from signer.health import HealthService
        from signer.server.health import ServerHealth

        HealthService(parts.config.health_listen, ServerHealth.from_parts(parts), reactor).setServiceParent(top)
    return top
