"""OpenPGP certification with the CA's GnuPG key (protocol action 1, system 2).

Every request is served in a throw-away GnuPG home (a fresh ``mkdtemp``
directory, mode 0700, removed afterwards, errors included, after its
``gpg-agent`` was killed):

1. ``gpg --show-keys`` on the request (nothing imported yet): exactly one key,
   public only. A request carrying secret key material is refused before
   anything is imported.
2. ``gpg --import --import-options import-minimal``: the key keeps its
   self-signatures and revocations and loses every third-party certification,
   the CA's earlier ones included. Without that, ``--quick-sign-key`` would
   skip every user ID that still carries a valid older CA certification
   ("already signed") and a renewal would return the old, soon expiring
   certification. It also keeps the answer small on a serial line: keys with
   hundreds of signatures shrink to their self-signatures plus ours. The
   recipient merges the answer into their key as usual.
3. Checks on the imported key: not revoked, not expired, not invalid, not
   created in the future (the signing host has no NTP), not the CA key
   itself, every user ID free of :data:`DEFAULT_FORBIDDEN_UID_CHARACTERS` and
   valid UTF-8, and at least one user ID that is neither revoked nor expired.
4. The CA's public key and its primary secret key file
   (``private-keys-v1.d/<keygrip>.key``) are put into the throw-away home, and
   ``gpg --quick-sign-key`` certifies every usable user ID with
   ``--default-cert-expire <days>d``, ``--cert-policy-url <CPS URL>`` and
   ``--cert-digest-algo SHA256`` (or the configured stronger digest).
5. The result is checked (every usable user ID now carries an exportable
   certification by the CA key with the right expiry and digest) and
   exported ASCII-armored.

The CA keyring itself is never written to: it is copied once into a scratch
home (public keyrings, ``private-keys-v1.d``, a GnuPG 1.x ``secring.gpg`` which
GnuPG 2.2 then migrates in the copy), where the CA key is looked up, its public
key exported and its primary secret key file read. That material is kept in
memory (the key file stays as protected as it is on disk) and copied into each
request's home.

gpg runs as a child process (never through a shell) with ``--batch``,
``--pinentry-mode loopback`` (the passphrase, when there is one, goes through
a pipe, never the command line) and a timeout on every call, so that a wedged
gpg cannot hang the server. python-gnupg 0.5.7 offers ``quick_sign_key`` but
no timeout and no per-call options, hence the direct child processes.

:meth:`OpenPGPCertifier.certify` blocks: the dispatcher runs it in a thread
(:meth:`OpenPGPCertifier.certify_deferred`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from signer.protocol import codec
from signer.server.errors import RequestRefused

#: Characters refused anywhere in a user ID (besides every control character
#: and invalid UTF-8). The quotes and the backslash follow the legacy server's
#: X.509 subject rules, so a name the CA refuses in a certificate is refused in
#: an OpenPGP user ID as well.
DEFAULT_FORBIDDEN_UID_CHARACTERS = "\"'\\"
#: Digests accepted for certifications (OpenPGP algorithm ids).
DIGEST_ALGORITHMS: dict[str, int] = {"SHA256": 8, "SHA384": 9, "SHA512": 10}
#: Seconds any single gpg call may take.
DEFAULT_TIMEOUT = 60.0
#: Longest certification we issue unless configured otherwise (10 years).
DEFAULT_MAX_DAYS = 3660
#: The only OpenPGP root.
OPENPGP_ROOT = 0

_CERTIFICATION_CLASSES = {"10x", "11x", "12x", "13x"}
_ESCAPE = re.compile(rb"\\(x[0-9A-Fa-f]{2}|[nrfvb0])")
_NOISE = re.compile(rb"keybox '.*' created|trustdb created|running with faked system time")
_SIMPLE_ESCAPES = {b"n": b"\n", b"r": b"\r", b"f": b"\f", b"v": b"\v", b"b": b"\b", b"0": b"\0"}


class GpgFailed(Exception):
    """A gpg child process failed, timed out or could not be started."""


@dataclass(frozen=True)
class GpgResult:
    """Outcome of one gpg call."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def status(self) -> list[list[str]]:
        """The ``[GNUPG:]`` status lines (on stderr), split into words."""
        lines = []
        for line in self.stderr.splitlines():
            if line.startswith(b"[GNUPG:] "):
                lines.append(line[9:].decode("utf-8", "replace").split())
        return lines

    def diagnostics(self, limit: int = 400) -> str:
        """gpg's human messages, shortened for a log (status lines and the
        chatter of a fresh home left out)."""
        text = b"\n".join(
            line
            for line in self.stderr.splitlines()
            if not line.startswith(b"[GNUPG:] ") and not _NOISE.search(line)
        ).decode("utf-8", "replace")
        text = " | ".join(part.strip() for part in text.splitlines() if part.strip())
        return text if len(text) <= limit else text[:limit] + "..."


class Gpg:
    """Runs ``gpg`` on one GnuPG home: child processes with a timeout, no shell.

    ``faked_time`` (seconds since the epoch) freezes gpg's clock
    (``--faked-system-time``); meant for tests and rehearsals.
    """

    def __init__(
        self,
        home: Path,
        binary: str = "gpg",
        timeout: float = DEFAULT_TIMEOUT,
        faked_time: float | None = None,
    ) -> None:
        self.home = home
        self.binary = binary
        self.timeout = timeout
        self.faked_time = faked_time

    def environment(self) -> dict[str, str]:
        """The child's whole environment: C locale, this home, nothing inherited
        but PATH (no agent info, no display, no GNUPGHOME of the server)."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "LANG": "C",
            "GNUPGHOME": str(self.home),
            "HOME": str(self.home),
        }

    def command(self, args: Sequence[str]) -> list[str]:
        """The full argument vector for ``args``."""
        cmd = [
            self.binary,
            "--homedir",
            str(self.home),
            "--batch",
            "--no-tty",
            "--no-greeting",
            "--no-options",
            "--no-auto-check-trustdb",
            # Not "--trust-model always": with it gpg 2.2.40 dies ("can't open
            # trustdb.gpg") when a revoked key is shown in a fresh home.
            "--pinentry-mode",
            "loopback",
            "--status-fd",
            "2",
        ]
        if self.faked_time is not None:
            cmd += ["--faked-system-time", f"{int(self.faked_time)}!"]
        return cmd + list(args)

    def run(self, args: Sequence[str], stdin: bytes = b"", check: bool = True) -> GpgResult:
        """Run gpg with ``args``; raise :class:`GpgFailed` on timeout or (``check``) rc != 0."""
        cmd = self.command(args)
        try:
            completed = subprocess.run(
                cmd,
                input=stdin,
                capture_output=True,
                timeout=self.timeout,
                env=self.environment(),
                shell=False,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise GpgFailed(f"gpg {_options(args)} did not finish within {self.timeout:g} s")
        except OSError as exc:
            raise GpgFailed(f"cannot run {self.binary}: {exc.strerror or exc}") from None
        result = GpgResult(completed.returncode, completed.stdout, completed.stderr)
        if check and result.returncode != 0:
            raise GpgFailed(
                f"gpg {_options(args)} failed "
                f"(exit {result.returncode}): {result.diagnostics()}"
            )
        return result

    def kill_agent(self) -> None:
        """Stop every GnuPG daemon of this home and remove its socket dir (best effort)."""
        gpgconf = _gpgconf_for(self.binary)
        for args in (["--kill", "all"], ["--remove-socketdir"]):
            try:
                subprocess.run(
                    [gpgconf, "--homedir", str(self.home), *args],
                    capture_output=True,
                    timeout=self.timeout,
                    env=self.environment(),
                    check=False,
                )
            except (OSError, subprocess.SubprocessError):
                pass


def _options(args: Sequence[str]) -> str:
    """The ``--options`` of a gpg call, for messages (no user data)."""
    return " ".join(arg for arg in args if arg.startswith("--"))


def _gpgconf_for(gpg_binary: str) -> str:
    """The ``gpgconf`` next to ``gpg_binary`` when there is one, else from PATH."""
    if os.sep in gpg_binary:
        candidate = Path(gpg_binary).with_name("gpgconf")
        if candidate.exists():
            return str(candidate)
    return "gpgconf"



@contextlib.contextmanager
def throwaway_home(
    work_dir: Path | None = None,
    binary: str = "gpg",
    timeout: float = DEFAULT_TIMEOUT,
    faked_time: float | None = None,
    prefix: str = "pgp",
) -> Iterator[Gpg]:
    """A fresh GnuPG home (mode 0700) that is removed, agent killed, on exit.

    Keep ``work_dir`` short: gpg-agent's sockets live in the home when
    ``/run/user/<uid>`` does not exist, and a socket path has at most 107 bytes.
    """
    home = Path(tempfile.mkdtemp(prefix=prefix, dir=work_dir))
    gpg = Gpg(home, binary=binary, timeout=timeout, faked_time=faked_time)
    try:
        os.chmod(home, 0o700)
        yield gpg
    finally:
        gpg.kill_agent()
        shutil.rmtree(home, ignore_errors=True)


# -- gpg --with-colons listings ----------------------------------------------


@dataclass(frozen=True)
class Certification:
    """A signature on a user ID as listed by ``--list-sigs``/``--check-sigs``."""

    issuer_keyid: str
    issuer_fingerprint: str
    sig_class: str
    created: int
    expires: int | None
    digest_algo: int
    check: str

    @property
    def exportable_certification(self) -> bool:
        """A certification (class 0x10-0x13) that gets exported."""
        return self.sig_class in _CERTIFICATION_CLASSES

    def made_by(self, fingerprint: str) -> bool:
        """Issued by the key with ``fingerprint``."""
        if self.issuer_fingerprint:
            return self.issuer_fingerprint.upper() == fingerprint.upper()
        return bool(self.issuer_keyid) and fingerprint.upper().endswith(self.issuer_keyid.upper())


@dataclass(frozen=True)
class UserId:
    """One ``uid`` (or ``uat`` for attributes such as photos) of a key."""

    raw: bytes
    validity: str
    attribute: bool
    certifications: tuple[Certification, ...]

    @property
    def usable(self) -> bool:
        """Neither revoked nor expired nor invalid: gets certified."""
        return self.validity not in ("r", "e", "i")

    def display(self) -> str:
        """The user ID for a log line (escaped)."""
        return repr(self.raw.decode("utf-8", "backslashreplace"))[1:-1]


@dataclass(frozen=True)
class KeyListing:
    """A primary key and its user IDs from a ``--with-colons`` listing."""

    fingerprint: str
    validity: str
    created: int
    expires: int | None
    capabilities: str
    uids: tuple[UserId, ...]
    secret: bool


def _int_or_none(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) > 0 else None


def _unescape_one(match: re.Match[bytes]) -> bytes:
    code = match.group(1)
    if code[:1] == b"x":
        return bytes([int(code[1:], 16)])
    return _SIMPLE_ESCAPES[code]


def _unescape(field: bytes) -> bytes:
    """Undo gpg's escaping of colon-listing fields (``\\xHH``, ``\\n``, ``\\r``...).

    gpg escapes every backslash itself (as ``\\x5c``), so this is unambiguous.
    """
    return _ESCAPE.sub(_unescape_one, field)


def parse_listing(output: bytes) -> list[KeyListing]:
    """Parse ``gpg --with-colons`` key listings (``--list-keys``, ``--list-sigs``,
    ``--check-sigs``, ``--show-keys``, ``--list-secret-keys``).

    Signatures after a ``sub`` record (subkey bindings) are not attached to
    any user ID.
    """
    keys: list[KeyListing] = []
    current: dict[str, object] | None = None
    uids: list[dict[str, object]] = []
    in_subkeys = False
    want_fpr = False

    def finish() -> None:
        if current is None:
            return
        keys.append(
            KeyListing(
                fingerprint=str(current["fingerprint"]),
                validity=str(current["validity"]),
                created=int(current["created"]),  # type: ignore[call-overload]
                expires=current["expires"],  # type: ignore[arg-type]
                capabilities=str(current["capabilities"]),
                secret=bool(current["secret"]),
                uids=tuple(
                    UserId(
                        raw=u["raw"],  # type: ignore[arg-type]
                        validity=str(u["validity"]),
                        attribute=bool(u["attribute"]),
                        certifications=tuple(u["sigs"]),  # type: ignore[arg-type]
                    )
                    for u in uids
                ),
            )
        )

    for line in output.splitlines():
        fields = line.split(b":")
        record = fields[0]
        field = lambda n: fields[n - 1].decode("ascii", "replace") if len(fields) >= n else ""  # noqa: E731
        if record in (b"pub", b"sec"):
            finish()
            current = {
                "fingerprint": "",
                "validity": field(2),
                "created": int(field(6) or 0),
                "expires": _int_or_none(field(7)),
                "capabilities": field(12),
                "secret": record == b"sec",
            }
            uids = []
            in_subkeys = False
            want_fpr = True
        elif current is None:
            continue
        elif record == b"fpr" and want_fpr:
            current["fingerprint"] = field(10)
            want_fpr = False
        elif record in (b"uid", b"uat"):
            in_subkeys = False
            raw = _unescape(fields[9]) if record == b"uid" and len(fields) >= 10 else b""
            uids.append({"raw": raw, "validity": field(2), "attribute": record == b"uat", "sigs": []})
        elif record in (b"sub", b"ssb"):
            in_subkeys = True
        elif record == b"sig" and uids and not in_subkeys:
            sigs = uids[-1]["sigs"]
            assert isinstance(sigs, list)
            sigs.append(
                Certification(
                    issuer_keyid=field(5),
                    issuer_fingerprint=field(13),
                    sig_class=field(11),
                    created=int(field(6) or 0),
                    expires=_int_or_none(field(7)),
                    digest_algo=int(field(16) or 0),
                    check=field(2),
                )
            )
    finish()
    return keys


def uid_problem(raw: bytes, forbidden: str = DEFAULT_FORBIDDEN_UID_CHARACTERS) -> str | None:
    """Why the user ID ``raw`` must not be certified, or None when it is fine."""
    if not raw:
        return "is empty"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "is not valid UTF-8"
    for char in text:
        if unicodedata.category(char) == "Cc":
            return f"contains the control character U+{ord(char):04X}"
        if char in forbidden:
            return f"contains the forbidden character {char!r}"
    return None


# -- the CA key ----------------------------------------------------------------


@dataclass(frozen=True)
class CaKey:
    """What a request's throw-away home needs of the CA key."""

    fingerprint: str
    keygrip: str
    public_key: bytes
    secret_key_file: bytes


#: Files of a GnuPG home that hold keys (2.1+ and 1.x layouts).
_KEYRING_FILES = ("pubring.kbx", "pubring.gpg", "secring.gpg")


def load_ca_key(
    gnupg_home: Path,
    key_id: str,
    binary: str = "gpg",
    timeout: float = DEFAULT_TIMEOUT,
    work_dir: Path | None = None,
) -> CaKey:
    """Find the CA's certification key in ``gnupg_home`` without writing to it.

    The keyrings are copied into a scratch home first (where GnuPG 2.2 also
    migrates a 1.x ``secring.gpg``). Raises :class:`ValueError` naming the
    problem when there is not exactly one matching secret key able to certify.
    """
    if not gnupg_home.is_dir():
        raise ValueError(f"OpenPGP keyring {gnupg_home} is not a directory")
    with throwaway_home(work_dir, binary, timeout, prefix="pgpca") as gpg:
        copied = []
        for name in _KEYRING_FILES:
            source = gnupg_home / name
            if source.is_file():
                shutil.copyfile(source, gpg.home / name)
                copied.append(name)
        keys_dir = gnupg_home / "private-keys-v1.d"
        if keys_dir.is_dir():
            target = gpg.home / "private-keys-v1.d"
            target.mkdir(mode=0o700)
            for entry in keys_dir.iterdir():
                if entry.suffix == ".key" and entry.is_file():
                    shutil.copyfile(entry, target / entry.name)
        if not copied:
            raise ValueError(f"OpenPGP keyring {gnupg_home} holds no pubring.kbx / pubring.gpg")
        try:
            listing = gpg.run(["--with-colons", "--with-keygrip", "--list-secret-keys", "--", key_id])
        except GpgFailed as exc:
            raise ValueError(f"OpenPGP key {key_id!r} not found in {gnupg_home}: {exc}") from None
        keys = parse_listing(listing.stdout)
        if len(keys) != 1:
            raise ValueError(
                f"OpenPGP key id {key_id!r} matches {len(keys)} secret keys in {gnupg_home}; "
                "configure the fingerprint"
            )
        key = keys[0]
        if key.validity in ("r", "e", "i", "d"):
            raise ValueError(f"OpenPGP CA key {key.fingerprint} is revoked, expired or invalid")
        if "c" not in key.capabilities:
            raise ValueError(f"OpenPGP CA key {key.fingerprint} cannot certify (usage {key.capabilities!r})")
        keygrip = _primary_keygrip(listing.stdout)
        secret_file = gpg.home / "private-keys-v1.d" / f"{keygrip}.key"
        if not secret_file.is_file():
            raise ValueError(
                f"OpenPGP CA key {key.fingerprint}: no secret key file for keygrip {keygrip} "
                f"in {gnupg_home} (a smartcard stub or a missing key?)"
            )
        public_key = gpg.run(["--export", key.fingerprint]).stdout
        if not public_key:
            raise ValueError(f"OpenPGP CA key {key.fingerprint}: public key export is empty")
        return CaKey(key.fingerprint, keygrip, public_key, secret_file.read_bytes())


def _primary_keygrip(listing: bytes) -> str:
    """The keygrip (``grp`` record) that follows the first ``sec`` record."""
    seen_primary = False
    for line in listing.splitlines():
        fields = line.split(b":")
        if fields[0] == b"sec":
            seen_primary = True
        elif fields[0] == b"grp" and seen_primary and len(fields) >= 10:
            return fields[9].decode("ascii")
        elif fields[0] == b"ssb":
            break
    raise ValueError("gpg listed no keygrip for the CA key")


# -- the certifier -------------------------------------------------------------


class OpenPGPCertifier:
    """Certifies users' OpenPGP keys with the CA key (see the module docstring).

    :param gnupg_home: the CA's GnuPG home; only read, never written.
    :param key_id: the CA key: fingerprint (best), key id or user ID.
    :param cps_url: the policy URL put into every certification.
    :param passphrase: the CA key's passphrase, or None.
    :param passphrase_file: a file holding it (first line), read at each use.
    :param gpg_binary: the ``gpg`` program (2.2 or later).
    :param digest: ``SHA256``, ``SHA384`` or ``SHA512``.
    :param max_days: longest certification accepted from a request.
    :param cert_level: 0-3, the certification class (0x10 + level); legacy 0.
    :param timeout: seconds allowed to every gpg call.
    :param work_dir: where the throw-away homes are made (keep the path short).
    :param now: clock in seconds since the epoch. When given, gpg's clock is
        frozen to it (``--faked-system-time``): for tests and rehearsals.
        Production leaves it None so gpg and the checks use the host clock.
    :param forbidden_uid_characters: refused in user IDs besides controls.
    """

    log = Logger()

    def __init__(
        self,
        gnupg_home: Path,
        key_id: str,
        cps_url: str,
        *,
        passphrase: str | None = None,
        passphrase_file: Path | None = None,
        gpg_binary: str = "gpg",
        digest: str = "SHA256",
        max_days: int = DEFAULT_MAX_DAYS,
        cert_level: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
        work_dir: Path | None = None,
        now: Callable[[], float] | None = None,
        forbidden_uid_characters: str = DEFAULT_FORBIDDEN_UID_CHARACTERS,
    ) -> None:
        if not cps_url or any(c.isspace() or not c.isprintable() for c in cps_url) or cps_url[0] == "!":
            raise ValueError(f"CPS URL {cps_url!r} must be printable, without spaces, not start with '!'")
        if digest.upper() not in DIGEST_ALGORITHMS:
            raise ValueError(f"OpenPGP digest {digest!r} is not one of {', '.join(DIGEST_ALGORITHMS)}")
        if passphrase is not None and passphrase_file is not None:
            raise ValueError("give the OpenPGP passphrase or a passphrase file, not both")
        if passphrase is not None and ("\n" in passphrase or "\r" in passphrase):
            raise ValueError("the OpenPGP passphrase must be one line")
        if not 1 <= max_days <= 0xFFFF:
            raise ValueError(f"max_days {max_days} must be between 1 and 65535")
        if cert_level not in (0, 1, 2, 3):
            raise ValueError(f"cert_level {cert_level} must be 0, 1, 2 or 3")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.gnupg_home = Path(gnupg_home)
        self.key_id = key_id
        self.cps_url = cps_url
        self.passphrase = passphrase
        self.passphrase_file = passphrase_file
        self.gpg_binary = gpg_binary
        self.digest = digest.upper()
        self.max_days = max_days
        self.cert_level = cert_level
        self.timeout = timeout
        self.work_dir = work_dir
        self.now = now
        self.forbidden_uid_characters = forbidden_uid_characters
        self._ca: CaKey | None = None
        self._ca_lock = threading.Lock()

    # -- CA material ---------------------------------------------------------

    def ca_key(self) -> CaKey:
        """The CA key material, loaded on first use (raises ValueError when unusable)."""
        with self._ca_lock:
            if self._ca is None:
                self._ca = load_ca_key(
                    self.gnupg_home, self.key_id, self.gpg_binary, self.timeout, self.work_dir
                )
                self.log.info(
                    "OpenPGP CA key {fingerprint} loaded from {home}",
                    fingerprint=self._ca.fingerprint,
                    home=str(self.gnupg_home),
                )
            return self._ca

    def check(self) -> str:
        """Validate the configuration at start-up; return the CA fingerprint."""
        self._read_passphrase()
        return self.ca_key().fingerprint

    def _read_passphrase(self) -> str | None:
        if self.passphrase_file is None:
            return self.passphrase
        try:
            text = self.passphrase_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read OpenPGP passphrase file {self.passphrase_file}: {exc}") from None
        lines = text.splitlines()
        return lines[0] if lines else ""

    def _clock(self) -> float:
        return self.now() if self.now is not None else time.time()

    # -- requests --------------------------------------------------------------

    def certify_deferred(self, request: codec.SignOpenPGPRequest) -> Deferred[bytes]:
        """:meth:`certify` in the reactor's thread pool."""
        return deferToThread(self.certify, request)

    def certify(self, request: codec.SignOpenPGPRequest) -> bytes:
        """Certify the key in ``request``; return it ASCII-armored. Blocking.

        Raises :class:`RequestRefused` for every request that is not served.
        """
        started = time.monotonic()
        if request.root != OPENPGP_ROOT:
            raise RequestRefused(f"OpenPGP root {request.root} does not exist (only root 0)")
        if request.days == 0:
            raise RequestRefused("OpenPGP certification for 0 days (no expiry) refused")
        if request.days > self.max_days:
            raise RequestRefused(
                f"OpenPGP certification for {request.days} days exceeds the maximum of {self.max_days}"
            )
        if not request.key.strip():
            raise RequestRefused("OpenPGP request carries no key")
        try:
            ca = self.ca_key()
            passphrase = self._read_passphrase()
        except ValueError as exc:
            raise RequestRefused(f"OpenPGP CA key unusable: {exc}") from None
        now = self._clock()
        faked = now if self.now is not None else None
        try:
            with throwaway_home(self.work_dir, self.gpg_binary, self.timeout, faked) as gpg:
                key = self._import_request(gpg, request.key, ca, now)
                self._sign(gpg, key, ca, request.days, passphrase)
                certified = self._verify(gpg, key, ca, request.days)
                armored = gpg.run(["--armor", "--export", key.fingerprint]).stdout
        except GpgFailed as exc:
            raise RequestRefused(f"OpenPGP certification failed: {exc}") from None
        if not armored.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"):
            raise RequestRefused("gpg exported no armored key")
        self.log.info(
            "Certified OpenPGP key {fingerprint}: {uids} user IDs for {days} days in {ms} ms",
            fingerprint=key.fingerprint,
            uids=certified,
            days=request.days,
            ms=int((time.monotonic() - started) * 1000),
        )
        return armored

    def _import_request(self, gpg: Gpg, data: bytes, ca: CaKey, now: float) -> KeyListing:
        """Import the request's single public key (minimal) and check it."""
        shown = gpg.run(["--with-colons", "--show-keys"], stdin=data, check=False)
        keys = parse_listing(shown.stdout)
        if not keys:
            raise RequestRefused(f"OpenPGP request holds no key: {shown.diagnostics(200)}")
        if any(key.secret for key in keys):
            raise RequestRefused("OpenPGP request carries secret key material")
        if len(keys) != 1:
            raise RequestRefused(f"OpenPGP request holds {len(keys)} keys, exactly one expected")
        if keys[0].created > now:
            # gpg would silently drop its self-signatures on import.
            raise RequestRefused(
                f"OpenPGP key {keys[0].fingerprint} was created in the future "
                f"({_iso(keys[0].created)}); is the signing host's clock right?"
            )
        gpg.run(["--import-options", "import-minimal", "--import"], stdin=data, check=False)
        listed = parse_listing(gpg.run(["--with-colons", "--list-keys"]).stdout)
        if len(listed) != 1:
            raise RequestRefused(f"OpenPGP request: {len(listed)} keys imported, exactly one expected")
        key = listed[0]
        if key.fingerprint.upper() == ca.fingerprint.upper():
            raise RequestRefused("OpenPGP request holds the CA's own key")
        if key.validity == "r":
            raise RequestRefused(f"OpenPGP key {key.fingerprint} is revoked")
        if key.validity == "e" or (key.expires is not None and key.expires <= now):
            raise RequestRefused(f"OpenPGP key {key.fingerprint} has expired")
        if key.validity in ("i", "d"):
            raise RequestRefused(f"OpenPGP key {key.fingerprint} is invalid or disabled")
        for uid in key.uids:
            if uid.attribute:
                continue
            problem = uid_problem(uid.raw, self.forbidden_uid_characters)
            if problem:
                raise RequestRefused(f"OpenPGP user ID {uid.display()!r} {problem}")
        if not any(uid.usable and not uid.attribute for uid in key.uids):
            raise RequestRefused(f"OpenPGP key {key.fingerprint} has no usable user ID")
        return key

    def _sign(self, gpg: Gpg, key: KeyListing, ca: CaKey, days: int, passphrase: str | None) -> None:
        """Bring the CA key into the home and certify every usable user ID."""
        gpg.run(["--import"], stdin=ca.public_key)
        keys_dir = gpg.home / "private-keys-v1.d"
        keys_dir.mkdir(mode=0o700, exist_ok=True)
        secret = keys_dir / f"{ca.keygrip}.key"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(ca.secret_key_file)
        args = [
            "--default-cert-expire",
            f"{days}d",
            "--cert-policy-url",
            self.cps_url,
            "--cert-digest-algo",
            self.digest,
            "--default-cert-level",
            str(self.cert_level),
            "--local-user",
            ca.fingerprint,
        ]
        stdin = b""
        if passphrase is not None:
            args += ["--passphrase-fd", "0"]
            stdin = passphrase.encode("utf-8") + b"\n"
        result = gpg.run([*args, "--quick-sign-key", key.fingerprint], stdin=stdin, check=False)
        if result.returncode != 0:
            raise RequestRefused(
                f"gpg could not certify {key.fingerprint} (exit {result.returncode}): "
                f"{result.diagnostics()}"
            )

    def _verify(self, gpg: Gpg, key: KeyListing, ca: CaKey, days: int) -> int:
        """Check every usable user ID now has a good CA certification; count them."""
        listed = parse_listing(gpg.run(["--with-colons", "--check-sigs", key.fingerprint]).stdout)
        if len(listed) != 1:
            raise RequestRefused("certified key vanished from the throw-away keyring")
        wanted_digest = DIGEST_ALGORITHMS[self.digest]
        count = 0
        for uid in listed[0].uids:
            if not uid.usable or uid.attribute:
                continue
            good = [
                sig
                for sig in uid.certifications
                if sig.made_by(ca.fingerprint)
                and sig.exportable_certification
                and sig.check == "!"
                and sig.expires == sig.created + days * 86400
                and sig.digest_algo >= wanted_digest
            ]
            if not good:
                raise RequestRefused(f"gpg left user ID {uid.display()!r} without a CA certification")
            count += 1
        return count


def _iso(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- a throw-away CA key ---------------------------------------------------------


def create_ca_key(
    gnupg_home: Path,
    name: str = "Signer Test OpenPGP CA",
    email: str = "gpg@example.org",
    *,
    gpg_binary: str = "gpg",
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Make an unprotected ed25519 certification-only key in ``gnupg_home``.

    For ``signer init-test-signer``, the demo and tests. Creates the home
    (mode 0700) when missing, stops its gpg-agent afterwards and returns the
    key's fingerprint.
    """
    uid = f"{name} <{email}>"
    problem = uid_problem(uid.encode("utf-8"))
    if problem:
        raise ValueError(f"CA user ID {uid!r} {problem}")
    gnupg_home = Path(gnupg_home)
    gnupg_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(gnupg_home, 0o700)
    gpg = Gpg(gnupg_home, binary=gpg_binary, timeout=timeout)
    try:
        gpg.run(["--passphrase", "", "--quick-generate-key", uid, "ed25519", "cert", "never"])
        keys = parse_listing(gpg.run(["--with-colons", "--list-secret-keys", "--", f"={uid}"]).stdout)
    finally:
        gpg.kill_agent()
    if len(keys) != 1:
        raise ValueError(f"gpg made {len(keys)} keys named {uid!r} in {gnupg_home}")
    return keys[0].fingerprint
