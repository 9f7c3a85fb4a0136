"""``twistd signer-server``: options and service for the signing host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from signer._tap_options import RoleOptions, role_parameters


class Options(RoleOptions):
    """Command-line options of ``twistd signer-server``."""

    optParameters = role_parameters(
        "the server's",
        "serial line configuration; overrides serial_config in the TOML file",
    )
    longdesc = (
        "Run the signing host: answer X.509, OpenPGP, revocation/CRL and NUL "
        "requests arriving over the serial line. Everything is configured in "
        "one TOML file (see etc/signer-server.toml.example)."
    )


def makeService(options: Options, reactor: Any = None) -> IService:  # noqa: N802
    """Build the server from the options; configuration errors stop startup."""
    from signer.server.config import ConfigError
    from signer.server.service import make_server_service
    from signer.protocol.serialconfig import SerialConfigError

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    serial = Path(options["serial-config"]) if options["serial-config"] else None
    try:
        return make_server_service(Path(options["config"]), reactor, serial)
    except (ConfigError, SerialConfigError) as error:
        raise usage.UsageError(str(error)) from None
