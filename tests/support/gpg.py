"""Throw-away OpenPGP user keys made with the real ``gpg`` (for tests and seeding).

``KeyMaker`` owns one GnuPG home and makes unprotected ed25519 keys fast
(tens of milliseconds each): normal, expired, revoked, with a revoked user ID,
with arbitrary (even forbidden) user IDs, and bundles of several keys. Call
:meth:`KeyMaker.close` (the fixtures do) so no gpg-agent outlives the tests.

Keys are made with gpg's clock set to ``now`` (``--faked-system-time``,
running, not frozen), so tests that also hand ``now`` to the certifier get the
same answers whatever the date they run on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from signer.server.openpgp import Gpg, KeyListing, parse_listing

GPG_BINARY = shutil.which("gpg") or "gpg"
DAY = 86400


def short_tempdir(prefix: str = "sg") -> Path:
    """A fresh directory under /tmp with a short path (gpg-agent socket paths
    are limited to 107 bytes; pytest's tmp_path can be too long)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@dataclass(frozen=True)
class UserKey:
    """A throw-away user key as a request would carry it."""

    fingerprint: str
    uids: tuple[str, ...]
    armored: bytes
    binary: bytes


class KeyMaker:
    """Makes throw-away user keys in its own GnuPG home.

    :param home: an empty directory (short path), created when missing.
    :param now: the clock the keys are made at (seconds); default: real time.
    """

    def __init__(self, home: Path, now: float | None = None) -> None:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.home = home
        self.now = time.time() if now is None else now
        self._counter = 0

    def _gpg(self) -> Gpg:
        return Gpg(self.home, binary=GPG_BINARY, timeout=60)

    def _run(self, args: Sequence[str], at: float | None = None, stdin: bytes = b"") -> bytes:
        moment = self.now if at is None else at
        gpg = self._gpg()
        # A running (not frozen) faked clock: key generation wants time to move.
        cmd = gpg.command(["--faked-system-time", str(int(moment)), *args])
        completed = subprocess.run(
            cmd, input=stdin, capture_output=True, timeout=60, env=gpg.environment(), check=False
        )
        if completed.returncode != 0:
            raise RuntimeError(f"{cmd} failed: {completed.stderr.decode(errors='replace')}")
        return completed.stdout

    def unique_uid(self, label: str = "Test User") -> str:
        """A user ID not used before in this home (gpg wants unique primary user IDs)."""
        self._counter += 1
        return f"{label} {self._counter} <{label.lower().replace(' ', '.')}{self._counter}@example.org>"

    def make(
        self,
        *uids: str,
        expire: str = "2y",
        created: float | None = None,
        subkey: bool = True,
    ) -> UserKey:
        """A key with ``uids`` (default: one unique user ID), an encryption
        subkey unless ``subkey`` is False, expiring after ``expire`` (gpg
        syntax: ``2y``, ``10d``, ``never``), created at ``created``."""
        names = list(uids) or [self.unique_uid("Test User")]
        at = self.now - DAY if created is None else created
        self._run(
            ["--passphrase", "", "--quick-generate-key", names[0], "ed25519", "sign,cert", expire], at
        )
        fingerprint = self._fingerprint_of(names[0])
        for name in names[1:]:
            self._run(["--quick-add-uid", fingerprint, name], at)
        if subkey:
            self._run(["--passphrase", "", "--quick-add-key", fingerprint, "cv25519", "encr", expire], at)
        return self.key(fingerprint, tuple(names))

    def add_uid(self, key: UserKey, uid: str | bytes) -> UserKey:
        """``key`` with one more user ID; bytes are passed raw (e.g. Latin-1)."""
        name = os.fsdecode(uid) if isinstance(uid, bytes) else uid
        self._run(["--quick-add-uid", key.fingerprint, name])
        return self.key(key.fingerprint, (*key.uids, name))

    def _fingerprint_of(self, uid: str) -> str:
        listing = parse_listing(self._run(["--with-colons", "--list-keys", "--", f"={uid}"]))
        if len(listing) != 1:
            raise RuntimeError(f"{len(listing)} keys named {uid!r}")
        return listing[0].fingerprint

    def key(self, fingerprint: str, uids: tuple[str, ...] = ()) -> UserKey:
        """The current public key ``fingerprint`` (armored and binary)."""
        return UserKey(
            fingerprint=fingerprint,
            uids=uids,
            armored=self.export(fingerprint),
            binary=self.export(fingerprint, armor=False),
        )

    def export(self, *fingerprints: str, armor: bool = True) -> bytes:
        """The public keys ``fingerprints`` in one block."""
        return self._run((["--armor"] if armor else []) + ["--export", *fingerprints])

    def export_secret(self, fingerprint: str) -> bytes:
        """The (unprotected) secret key, armored: what a request must never carry."""
        return self._run(["--passphrase", "", "--armor", "--export-secret-keys", fingerprint])

    def expired(self) -> UserKey:
        """A key made two years ago that expired after one."""
        return self.make(self.unique_uid("Expired User"), expire="1y", created=self.now - 730 * DAY)

    def revoked(self) -> UserKey:
        """A key carrying its own revocation signature."""
        key = self.make(self.unique_uid("Revoked User"))
        certificate = (self.home / "openpgp-revocs.d" / f"{key.fingerprint}.rev").read_bytes()
        # gpg stores it with a leading ':' so that it is not imported by mistake.
        certificate = certificate.replace(b":-----BEGIN PGP PUBLIC KEY BLOCK", b"-----BEGIN PGP PUBLIC KEY BLOCK")
        self._run(["--import"], stdin=certificate)
        return self.key(key.fingerprint, key.uids)

    def with_revoked_uid(self) -> tuple[UserKey, str, str]:
        """A key with two user IDs, the second revoked: (key, kept, revoked)."""
        kept = self.unique_uid("Kept User")
        dropped = self.unique_uid("Dropped User")
        key = self.make(kept, dropped)
        self._run(["--quick-revoke-uid", key.fingerprint, dropped])
        return self.key(key.fingerprint, key.uids), kept, dropped

    def bundle(self, *keys: UserKey) -> bytes:
        """Several keys in one armored block (what a confused user pastes)."""
        return self.export(*(key.fingerprint for key in keys))

    def close(self) -> None:
        """Stop this home's gpg-agent."""
        self._gpg().kill_agent()


def list_packets(data: bytes) -> str:
    """``gpg --list-packets`` of ``data`` (no keyring involved)."""
    home = short_tempdir("sgp")
    try:
        gpg = Gpg(home, binary=GPG_BINARY, timeout=60)
        completed = subprocess.run(
            gpg.command(["--list-packets"]),
            input=data,
            capture_output=True,
            timeout=60,
            env=gpg.environment(),
            check=False,
        )
        return completed.stdout.decode("utf-8", "replace")
    finally:
        Gpg(home, binary=GPG_BINARY).kill_agent()
        shutil.rmtree(home, ignore_errors=True)


def check_sigs(data: bytes, *extra_keys: bytes) -> list[KeyListing]:
    """Import ``data`` (plus ``extra_keys``, e.g. the CA's public key) into a
    fresh home and return ``parse_listing`` of ``--check-sigs`` for ``data``'s
    keys (signature validity '!' = cryptographically good)."""
    home = short_tempdir("sgc")
    gpg = Gpg(home, binary=GPG_BINARY, timeout=60)
    try:
        for block in (*extra_keys, data):
            gpg.run(["--import"], stdin=block)
        shown = parse_listing(gpg.run(["--with-colons", "--show-keys"], stdin=data).stdout)
        wanted = [key.fingerprint for key in shown]
        return parse_listing(gpg.run(["--with-colons", "--check-sigs", *wanted]).stdout)
    finally:
        gpg.kill_agent()
        shutil.rmtree(home, ignore_errors=True)
