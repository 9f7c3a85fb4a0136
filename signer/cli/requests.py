"""``signer sign-x509``, ``signer sign-openpgp``, ``signer revoke``.

Each sends ONE request to a signer (ours or the legacy ``server.pl``) and
writes field 1 of the answer to ``--out`` (atomically) or to standard output.
An empty answer means the signer refused: exit
:data:`~signer.cli.errors.EXIT_EMPTY_ANSWER`. ``revoke --apply`` turns the
answer into the new CRL file the way the client daemon does (PEM, else an
xdelta patch against the old file, else DER), checking that the result is a
CRL (and, with ``--ca-cert``, that its signature verifies).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from signer.cli import connection
from signer.cli.errors import (
    EXIT_APPLY_FAILED,
    EXIT_EMPTY_ANSWER,
    EXIT_LOCAL_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
)
from signer.protocol import codec
from signer.cli import argtypes

BYTE = argtypes.integer(0, 255, base=0)
DAYS = argtypes.integer(0, 0xFFFF, base=0)

PEM_CRL_MARKER = b"-----BEGIN X509 CRL-----"
SPKAC_MARKER = b"SPKAC="
#: How long ``xdelta patch`` may take before we give up on it.
XDELTA_TIMEOUT = 120.0


# -- argument types --------------------------------------------------------


def profile_id(text: str) -> int:
    """A profile given by number (``5``) or name (``server``)."""
    names = {name: number for number, name in codec.PROFILES.items()}
    if text.lower() in names:
        return names[text.lower()]
    try:
        return BYTE(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"unknown profile {text!r}; use a number or one of: {', '.join(names)}"
        ) from None


def digest_id(text: str) -> int:
    """A digest given by name (``sha256``) or wire id (``8``)."""
    if text.lower() in codec.DIGEST_IDS:
        return codec.DIGEST_IDS[text.lower()]
    try:
        return BYTE(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"unknown digest {text!r}; use one of: {', '.join(codec.DIGEST_IDS)}"
        ) from None


# -- the subcommands -------------------------------------------------------


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sign-x509``, ``sign-openpgp`` and ``revoke``."""
    common_epilog = (
        "Exit codes: 0 answer written, 1 local error, 2 usage, 3 empty answer "
        "(the signer refused; see its log), 4 link failure (timeout...)."
    )
    x509 = subcommands.add_parser(
        "sign-x509",
        help="have a signer sign an X.509 certificate",
        description=(
            "Send one X.509 signing request (PEM PKCS#10 CSR, or a Netscape SPKAC "
            "file containing a line SPKAC=..., which sets keytype 1) and write the "
            "certificate the signer returns (PEM, or DER from some servers)."
        ),
        epilog=common_epilog,
    )
    x509.add_argument("--csr", required=True, metavar="FILE", help="CSR (PEM) or SPKAC file")
    x509.add_argument(
        "--subject",
        required=True,
        metavar="DN",
        help="subject in OpenSSL slash form, e.g. '/CN=www.example.org' ('' for none)",
    )
    x509.add_argument(
        "--san",
        default="",
        metavar="LIST",
        help="subjectAltName list, comma separated, e.g. "
        "'DNS:example.org,DNS:www.example.org' (default: none)",
    )
    x509.add_argument(
        "--root",
        required=True,
        type=BYTE,
        metavar="N",
        help="CA root index on the wire, 0-based (0 class 1, 1 class 3; the web "
        "database's rootcert minus 1)",
    )
    x509.add_argument(
        "--profile",
        required=True,
        type=profile_id,
        metavar="N|NAME",
        help="profile number or name: "
        + ", ".join(f"{number} {name}" for number, name in codec.PROFILES.items()),
    )
    x509.add_argument(
        "--digest",
        default=codec.DIGEST_IDS["default"],
        type=digest_id,
        metavar="NAME",
        help="message digest: " + ", ".join(codec.DIGEST_IDS) + " (default: the CA's default)",
    )
    x509.add_argument(
        "--days", required=True, type=DAYS, metavar="N", help="requested validity in days"
    )
    _add_out(x509, "certificate")
    connection.add_connection_options(x509)
    x509.set_defaults(run=run_sign_x509)

    pgp = subcommands.add_parser(
        "sign-openpgp",
        help="have a signer certify an OpenPGP public key",
        description=(
            "Send one OpenPGP signing request with a public key (binary or "
            "armored) and write the armored key with the CA's certifications."
        ),
        epilog=common_epilog,
    )
    pgp.add_argument("--key", required=True, metavar="FILE", help="public key file")
    pgp.add_argument(
        "--days", type=DAYS, default=366, metavar="N", help="validity in days (default 366)"
    )
    pgp.add_argument(
        "--root", type=BYTE, default=0, metavar="N", help="root index (default 0)"
    )
    _add_out(pgp, "signed key")
    connection.add_connection_options(pgp)
    pgp.set_defaults(run=run_sign_openpgp)

    revoke = subcommands.add_parser(
        "revoke",
        help="revoke a certificate and/or fetch a CRL update",
        description=(
            "Send one revoke request for root N carrying the SHA-1 of the CRL "
            "file you hold (of the empty string when FILE does not exist, as the "
            "legacy client does), with the certificate to revoke or none to only "
            "refresh the CRL. The answer is an xdelta patch, a PEM CRL or a DER "
            "CRL: written raw to --out (or standard output), or with --apply "
            "turned into the new CRL file."
        ),
        epilog=common_epilog + " 5 --apply could not make a valid CRL of the answer.",
    )
    revoke.add_argument(
        "--root", required=True, type=BYTE, metavar="N", help="CA root index on the wire, 0-based"
    )
    revoke.add_argument(
        "--crl",
        required=True,
        metavar="FILE",
        help="the CRL (DER) you hold for that root; may not exist yet",
    )
    revoke.add_argument(
        "--cert",
        metavar="FILE",
        help="certificate (PEM) to revoke; omit to only refresh the CRL",
    )
    revoke.add_argument(
        "--apply",
        action="store_true",
        help="turn the answer into the new CRL (PEM converted to DER, else "
        "'xdelta patch' against FILE, else DER) and write it atomically to "
        "--out, or replace --crl FILE when --out is omitted",
    )
    revoke.add_argument(
        "--ca-cert",
        metavar="FILE",
        help="with --apply: refuse a CRL whose signature does not verify with "
        "this CA certificate (PEM or DER)",
    )
    revoke.add_argument(
        "--xdelta",
        default="xdelta",
        metavar="PATH",
        help="the xdelta 1.1 program (default: xdelta on PATH)",
    )
    _add_out(revoke, "raw answer (with --apply: the new CRL)")
    connection.add_connection_options(revoke)
    revoke.set_defaults(run=run_revoke)


def _add_out(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--out",
        metavar="FILE",
        help=f"write the {what} to FILE (atomically) instead of standard output",
    )


# -- files -----------------------------------------------------------------


def read_file(path: str, what: str) -> bytes:
    """The bytes of ``path``, or a :class:`CommandError` naming ``what``."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def write_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path`` and rename it over."""
    target = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or "."
        )
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


def deliver(payload: bytes, out: str | None, what: str) -> None:
    """Write ``payload`` to ``out`` or standard output, with a note on stderr."""
    if out is None:
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()
        return
    write_atomically(out, payload)
    print(f"wrote {len(payload)} bytes ({what}) to {out}", file=sys.stderr)


def answer_of(args: argparse.Namespace, request: codec.Request) -> bytes:
    """Send ``request``; field 1 of the answer, or :data:`EXIT_EMPTY_ANSWER`."""
    response = connection.request_once(args, request)
    if not response.payload:
        raise CommandError(
            "the signer answered with an empty field 1: it refused the request "
            "(the reason is in the signer's log)",
            EXIT_EMPTY_ANSWER,
        )
    return response.payload


def run_sign_x509(args: argparse.Namespace) -> int:
    """``signer sign-x509``."""
    csr = read_file(args.csr, "CSR")
    request = codec.SignX509Request(
        csr=csr,
        subject=_utf8(args.subject),
        san=_utf8(args.san),
        root=args.root,
        profile=args.profile,
        digest=args.digest,
        days=args.days,
        keytype=1 if SPKAC_MARKER in csr else 0,
    )
    deliver(answer_of(args, request), args.out, "certificate")
    return EXIT_OK


def run_sign_openpgp(args: argparse.Namespace) -> int:
    """``signer sign-openpgp``."""
    key = read_file(args.key, "public key")
    request = codec.SignOpenPGPRequest(key=key, days=args.days, root=args.root)
    deliver(answer_of(args, request), args.out, "signed key")
    return EXIT_OK


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def crl_state(path: str) -> tuple[bytes, str]:
    """The CRL we hold at ``path`` (empty when missing) and its lowercase SHA-1."""
    try:
        held = Path(path).read_bytes()
    except FileNotFoundError:
        held = b""
    except OSError as exc:
        raise CommandError(f"cannot read the CRL {path}: {exc.strerror or exc}") from None
    return held, hashlib.sha1(held).hexdigest()


def run_revoke(args: argparse.Namespace) -> int:
    """``signer revoke``."""
    certificate = read_file(args.cert, "certificate") if args.cert else b""
    held, held_sha1 = crl_state(args.crl)
    if args.ca_cert and not args.apply:
        raise CommandError("--ca-cert only applies with --apply", EXIT_USAGE)
    ca_certificate = read_file(args.ca_cert, "CA certificate") if args.ca_cert else None
    request = codec.RevokeRequest(
        crl_sha1=held_sha1.encode("ascii"), certificate=certificate, root=args.root
    )
    answer = answer_of(args, request)
    if not args.apply:
        deliver(answer, args.out, "CRL update")
        return EXIT_OK
    update = apply_crl_answer(answer, held, args.xdelta)
    if ca_certificate is not None:
        verify_crl_signature(update.der, ca_certificate)
    deliver(update.der, args.out or args.crl, f"new CRL from {update.source}")
    return EXIT_OK


# -- applying a CRL answer -------------------------------------------------


@dataclass(frozen=True)
class CrlUpdate:
    """The new CRL (DER) and how it was obtained: ``PEM``, ``xdelta patch`` or ``DER``."""

    der: bytes
    source: str


def apply_crl_answer(answer: bytes, held: bytes, xdelta: str = "xdelta") -> CrlUpdate:
    """Turn a revoke answer into the new DER CRL, like the client daemon.

    A PEM CRL is taken as the complete new CRL (converted to DER, the format
    of the CRL files); anything else is first tried as an xdelta patch
    against ``held`` (child process, no shell) and, failing that, as a DER
    CRL. Raises :class:`CommandError` (:data:`EXIT_APPLY_FAILED`) when none
    yields a parseable CRL.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    if answer.lstrip().startswith(PEM_CRL_MARKER):
        try:
            crl = x509.load_pem_x509_crl(answer)
        except ValueError as exc:
            raise CommandError(f"the answer is a damaged PEM CRL: {exc}", EXIT_APPLY_FAILED) from None
        return CrlUpdate(crl.public_bytes(Encoding.DER), "PEM")
    patched, patch_problem = xdelta_patch(answer, held, xdelta)
    for candidate, source in ((patched, "xdelta patch"), (answer, "DER")):
        if candidate is None:
            continue
        try:
            x509.load_der_x509_crl(candidate)
        except ValueError:
            continue
        return CrlUpdate(candidate, source)
    raise CommandError(
        f"the answer ({len(answer)} bytes) is neither a PEM CRL, nor an xdelta patch "
        f"against the CRL we hold ({patch_problem}), nor a DER CRL",
        EXIT_APPLY_FAILED,
    )


def xdelta_patch(patch: bytes, old: bytes, xdelta: str = "xdelta") -> tuple[bytes | None, str]:
    """Run ``xdelta patch`` on ``old``; ``(new bytes or None, why not)``."""
    with tempfile.TemporaryDirectory(prefix="signer-xdelta-") as work:
        patch_path = os.path.join(work, "patch")
        old_path = os.path.join(work, "old")
        new_path = os.path.join(work, "new")
        Path(patch_path).write_bytes(patch)
        Path(old_path).write_bytes(old)
        try:
            finished = subprocess.run(
                [xdelta, "patch", patch_path, old_path, new_path],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=XDELTA_TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            return None, f"{xdelta} not found"
        except subprocess.TimeoutExpired:
            return None, f"xdelta took more than {XDELTA_TIMEOUT:g} s"
        except OSError as exc:
            return None, f"cannot run {xdelta}: {exc.strerror or exc}"
        if finished.returncode != 0:
            message = finished.stderr.decode("utf-8", "replace").strip().splitlines()
            return None, f"xdelta exit {finished.returncode}: {message[-1] if message else ''}"
        try:
            return Path(new_path).read_bytes(), ""
        except OSError as exc:
            return None, f"xdelta wrote no output: {exc.strerror or exc}"


def verify_crl_signature(der: bytes, ca_certificate: bytes) -> None:
    """Raise :class:`CommandError` unless the CRL is signed by ``ca_certificate``."""
    from cryptography import x509

    try:
        if b"-----BEGIN" in ca_certificate:
            ca = x509.load_pem_x509_certificate(ca_certificate)
        else:
            ca = x509.load_der_x509_certificate(ca_certificate)
    except ValueError as exc:
        raise CommandError(f"the CA certificate does not parse: {exc}", EXIT_LOCAL_ERROR) from None
    crl = x509.load_der_x509_crl(der)
    try:
        valid = crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise CommandError(f"cannot verify the CRL: {exc}", EXIT_APPLY_FAILED) from None
    if not valid:
        raise CommandError(
            "the new CRL's signature does not verify with the CA certificate; "
            "the old CRL is left in place",
            EXIT_APPLY_FAILED,
        )
