"""``twistd signer-client``: options and service for the web host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from signer._tap_options import RoleOptions, role_parameters


class Options(RoleOptions):
    """Command-line options of ``twistd signer-client``."""

    optParameters = role_parameters(
        "the client's",
        "serial line configuration; overrides [link] serial_config in the TOML file",
    )
    longdesc = (
        "Run the web-host side of the CommModule: poll the CAcert WebDB for "
        "OpenPGP and X.509 requests and revocations, send them to the signer "
        "over the serial line, store certificates and CRLs, update the rows and "
        "mail the members. Everything is configured in one TOML file (see "
        "etc/signer-client.toml.example)."
    )


def makeService(options: Options, reactor: Any = None) -> IService:  # noqa: N802
    """Build the client from the options; configuration errors stop startup."""
    from signer.client.config import ConfigError, load_client_config
    from signer.client.service import make_client_service
    from signer.protocol.serialconfig import SerialConfigError, load_serial_config

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        config = load_client_config(options["config"])
        serial_path = Path(options["serial-config"]) if options["serial-config"] else config.link.serial_config
        if serial_path is None:
            raise usage.UsageError(
                f"{options['config']}: link.serial_config: no serial configuration given "
                "(set it or pass --serial-config)"
            )
        serial = load_serial_config(serial_path)
    except (ConfigError, SerialConfigError) as error:
        raise usage.UsageError(str(error)) from None
    return make_client_service(config, serial, reactor)
