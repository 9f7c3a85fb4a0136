"""``signer import-openssl-ca``: migrate an OpenSSL ``ca`` database."""

from __future__ import annotations

import argparse
from pathlib import Path

from signer.cli.errors import EXIT_OK, CommandError


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``signer import-openssl-ca``."""
    parser = subcommands.add_parser(
        "import-openssl-ca",
        help="import an OpenSSL `ca` database (index.txt, serial) into the CA database",
        description=(
            "Import the certificates listed in an OpenSSL `ca` index.txt (valid, "
            "revoked, expired) into the signer's CA database for one root, so a "
            "running legacy signer can migrate without losing its revocations or "
            "reusing serial numbers. Safe to repeat: already imported entries are "
            "left as they are."
        ),
    )
    parser.add_argument("--config", type=Path, required=True, metavar="FILE",
                        help="the server's TOML configuration (gives the data directory)")
    parser.add_argument("--root", type=int, required=True, metavar="N", help="root index (0-based)")
    parser.add_argument("--index", type=Path, required=True, metavar="FILE", help="OpenSSL index.txt")
    parser.add_argument("--serial", type=Path, metavar="FILE", help="OpenSSL serial file")
    parser.add_argument("--crlnumber", type=Path, metavar="FILE", help="OpenSSL crlnumber file")
    parser.add_argument("--certs", type=Path, metavar="DIR",
                        help="directory of the issued certificates (newcerts/, <SERIAL>.pem)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from signer.server.cadb import CADatabase
    from signer.server.config import ConfigError, load_server_config
    from signer.server.importca import OpenSSLImportError, import_openssl_ca
    from signer.server.service import CA_DATABASE_NAME

    try:
        config = load_server_config(args.config)
    except ConfigError as error:
        raise CommandError(str(error)) from None
    if args.root not in config.roots:
        raise CommandError(f"root {args.root} is not configured in {args.config}")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with CADatabase(config.data_dir / CA_DATABASE_NAME) as database:
        try:
            report = import_openssl_ca(
                database, args.root, args.index, args.serial, args.certs, args.crlnumber
            )
        except OpenSSLImportError as error:
            raise CommandError(str(error)) from None
    print(
        f"root {report.root}: {report.lines} lines from {report.index_path}: "
        f"{report.inserted} imported ({report.valid} valid, {report.revoked} revoked, "
        f"{report.expired} expired), {report.unchanged} unchanged, "
        f"{report.newly_revoked} newly revoked, {report.with_certificate} with certificate file"
    )
    if report.next_serial is not None:
        print(f"next serial: {report.next_serial:X}")
    return EXIT_OK
