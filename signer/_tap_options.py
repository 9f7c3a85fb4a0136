"""What the two twistd plugins' options have in common."""

from __future__ import annotations

from pathlib import Path

from twisted.python import usage


def role_parameters(role: str, serial_config_help: str) -> list[list[object]]:
    """``--config FILE`` and ``--serial-config FILE`` for ``role`` (e.g. "the server's")."""
    return [
        ["config", "c", None, f"{role} TOML configuration file (required)"],
        ["serial-config", "s", None, serial_config_help],
    ]


class RoleOptions(usage.Options):
    """Options of a role: both files named must be readable; ``--config`` is required."""

    synopsis = "--config FILE [--serial-config FILE]"

    def postOptions(self) -> None:  # noqa: N802 (Twisted's name)
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        for name in ("config", "serial-config"):
            if self[name] and not Path(self[name]).is_file():
                raise usage.UsageError(f"--{name}: {self[name]} is not a readable file")
