"""``signer init-test-signer``: a complete throw-away signer for rehearsals."""

from __future__ import annotations

import argparse
from pathlib import Path

from signer.cli.errors import EXIT_OK, CommandError


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``signer init-test-signer``."""
    parser = subcommands.add_parser(
        "init-test-signer",
        help="create a throw-away signer (CA roots, OpenPGP key, config) for tests",
        description=(
            "Create, in DIR, roots 0 and 1 (CA certificates and private keys), an "
            "OpenPGP CA key in DIR/gnupg, an empty CA database directory and "
            "DIR/signer-server.toml, which `twistd -n signer-server --config "
            "DIR/signer-server.toml` runs as it is. For rehearsals, demos and "
            "tests only: the keys are unprotected."
        ),
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="where to create it")
    parser.add_argument(
        "--serial-config",
        type=Path,
        metavar="FILE",
        help="serial configuration file to name in the generated config",
    )
    parser.add_argument(
        "--key-size", type=int, default=2048, metavar="BITS", help="RSA size of the roots (2048)"
    )
    parser.add_argument(
        "--no-openpgp", action="store_true", help="do not create an OpenPGP CA key"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from signer.server.config import ConfigError
    from signer.server.testsigner import create_test_signer, set_openpgp_key_id

    if args.serial_config is not None and not args.serial_config.is_file():
        raise CommandError(f"--serial-config: {args.serial_config} is not a file")
    try:
        config = create_test_signer(args.directory, args.serial_config, key_size=args.key_size)
    except (FileExistsError, ConfigError, OSError, ValueError) as error:
        raise CommandError(f"cannot create a test signer in {args.directory}: {error}") from None
    if not args.no_openpgp:
        from signer.server.openpgp import GpgFailed, create_ca_key

        try:
            fingerprint = create_ca_key(args.directory.absolute() / "gnupg")
            set_openpgp_key_id(config, fingerprint)
        except (ConfigError, OSError, ValueError, GpgFailed) as error:
            raise CommandError(f"cannot create the OpenPGP CA key: {error}") from None
        print(f"OpenPGP CA key {fingerprint}")
    print(f"test signer ready: {config}")
    print(f"run it with: twistd -n signer-server --config {config}")
    return EXIT_OK
