# signer.tac -- the signer daemons as a twistd application file.
#
# For those who prefer `twistd -y` to the plugins; builds exactly the service
# of `twistd signer-server` / `twistd signer-client` from the environment:
#
#   SIGNER_ROLE=server|client          which daemon (required)
#   SIGNER_CONFIG=/etc/signer/signer-server.toml   its TOML file (required)
#   SIGNER_SERIAL_CONFIG=/etc/signer/serial.conf   optional; overrides the
#                                                  serial_config of the TOML
#
#   SIGNER_ROLE=server SIGNER_CONFIG=/etc/signer/signer-server.toml \
#       twistd --nodaemon --pidfile= -y /etc/signer/signer.tac
#
# Logging: the role's configured format picks the log observer
# (signer.logging.observer_for): `log_format = "json"` in the server's TOML,
# `[logging] format = "json"` in the client's, make the log one JSON object
# per line; "text" keeps twistd's lines. twistd's
# `--logger signer.logging.json_observer` still overrides both.

import os

from twisted.application.service import Application
from twisted.logger import ILogObserver

ROLES = ("server", "client")


def _plugin_module(role):
    if role == "server":
        import signer._tap_server as module
    else:
        try:
            import signer._tap_client as module
        except ImportError as error:
            raise RuntimeError(
                f"signer.tac: the client role needs signer._tap_client, which cannot be imported: {error}"
            ) from None
    return module


def build(environ=None):
    """The Application for the role named in the environment (not started)."""
    environ = os.environ if environ is None else environ
    role = (environ.get("SIGNER_ROLE") or "").strip()
    if role not in ROLES:
        raise RuntimeError(f"signer.tac: SIGNER_ROLE must be 'server' or 'client', not {role!r}")
    config = (environ.get("SIGNER_CONFIG") or "").strip()
    if not config:
        raise RuntimeError("signer.tac: set SIGNER_CONFIG to the role's TOML configuration file")
    arguments = ["--config", config]
    serial = (environ.get("SIGNER_SERIAL_CONFIG") or "").strip()
    if serial:
        arguments += ["--serial-config", serial]

    from twisted.python import usage

    module = _plugin_module(role)
    options = module.Options()
    try:
        options.parseOptions(arguments)
        service = module.makeService(options)
    except usage.UsageError as error:
        raise RuntimeError(f"signer.tac ({role}): {error}") from None

    application = Application(f"signer-{role}")
    service.setServiceParent(application)
    parts = getattr(service, "parts", None)
    log_format = getattr(getattr(parts, "config", None), "log_format", "text")
    from signer.logging import observer_for

    application.setComponent(ILogObserver, observer_for(log_format))
    return application


application = build()
