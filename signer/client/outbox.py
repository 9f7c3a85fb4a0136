"""A small durable outbox so that a crash neither loses nor doubles a member mail.

A mail is rendered and written to ``<state_dir>/outbox/<key>.<n>.hold`` *before*
the database row is updated; after the UPDATE the file is renamed to
``.eml`` and sent; after the attempt (delivered or refused, both logged) it
is removed. ``key`` is ``<table>.<id>.<event>`` (event ``issued`` or
``revoked``).

On start, :meth:`Outbox.held` lists the ``.hold`` files: the caller promotes
those whose row is complete (the crash hit between UPDATE and rename) and
discards the others (the row is still pending; completing it renders the mail
again). :meth:`Outbox.ready` lists ``.eml`` files left from a crash before or
during sending: they are sent. The one remaining window is a crash after the
SMTP server took a mail and before its file was removed: that mail goes out
twice. Every method blocks (file I/O): run them in a thread.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from signer.client.files import fsync_directory, write_atomic
from signer.client.mailer import Mail

_NAME = re.compile(r"^(?P<table>[a-z]+)\.(?P<id>\d+)\.(?P<event>issued|revoked)\.(?P<n>\d+)\.(?P<ext>hold|eml)$")


@dataclass(frozen=True)
class HeldMail:
    """A ``.hold`` file and what it belongs to."""

    path: Path
    table: str
    row_id: int
    event: str


class Outbox:
    """Mail files under ``directory`` (created on first use)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def hold(self, table: str, row_id: int, event: str, mails: list[Mail]) -> list[Path]:
        """Write ``mails`` as ``.hold`` files (replacing older ones of the same key)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        prefix = f"{table}.{row_id}.{event}."
        for stale in self.directory.glob(prefix + "*.hold"):
            stale.unlink(missing_ok=True)
        paths = []
        for number, mail in enumerate(mails):
            path = self.directory / f"{prefix}{number}.hold"
            write_atomic(path, mail.recipient.encode("utf-8") + b"\n" + mail.message, mode=0o600)
            paths.append(path)
        return paths

    def release(self, paths: list[Path]) -> list[Path]:
        """Rename ``.hold`` files to ``.eml`` (ready to send); return the new paths."""
        released = []
        for path in paths:
            target = path.with_suffix(".eml")
            try:
                os.replace(path, target)
            except FileNotFoundError:
                continue
            released.append(target)
        if released:
            fsync_directory(self.directory)
        return released

    def held(self) -> list[HeldMail]:
        """Every ``.hold`` file with its table, row id and event."""
        return [mail for mail in self._scan("hold")]

    def ready(self) -> list[Path]:
        """Every ``.eml`` file (sorted)."""
        return [mail.path for mail in self._scan("eml")]

    def _scan(self, ext: str) -> list[HeldMail]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.iterdir()):
            match = _NAME.match(path.name)
            if match and match["ext"] == ext:
                found.append(HeldMail(path, match["table"], int(match["id"]), match["event"]))
        return found

    @staticmethod
    def load(path: Path) -> Mail | None:
        """The mail stored in ``path``, or None when the file is gone."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        recipient, _, message = data.partition(b"\n")
        return Mail(recipient.decode("utf-8"), "", "", message)

    @staticmethod
    def discard(path: Path) -> None:
        path.unlink(missing_ok=True)
