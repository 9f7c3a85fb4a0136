"""The ``signer`` operator console command.

Usage: ``signer SUBCOMMAND [options]`` (see ``signer --help`` and
``docs/cli.md``). ``main`` is the console-script entry point declared in
``setup.cfg``; ``python -m signer.cli`` runs it too.

Adding a subcommand
-------------------

Write a new module in this package (for example ``signer/cli/initca.py``) that
defines one registration function::

    def register(subcommands: argparse._SubParsersAction) -> None:
        parser = subcommands.add_parser(
            "init-test-signer", help="one line for the list",
            description="What it does, for --help.")
        parser.add_argument(...)
        # for a command that talks to a signer:
        # connection.add_connection_options(parser)
        parser.set_defaults(run=_run)

    def _run(args: argparse.Namespace) -> int:
        ...  # return an exit code from signer.cli.errors; raise CommandError
             # with a clear message for any anticipated failure

That is all: :func:`build_parser` discovers every module of this package that
has a ``register`` function (in the order of :data:`COMMAND_ORDER`, then by
module name), so nothing else needs editing. Keep heavy imports (Twisted
reactor, cryptography) inside ``_run`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Callable, Sequence

from signer.cli.errors import EXIT_USAGE, CommandError

#: Modules listed here come first in ``signer --help``, in this order; any
#: other module of the package with a ``register`` function follows by name.
COMMAND_ORDER: tuple[str, ...] = ("ping", "requests", "decode")

#: Modules of this package that are helpers, not subcommands.
_NOT_COMMANDS = frozenset({"errors", "connection", "argtypes", "__main__"})

PROG = "signer"


def command_modules() -> list[str]:
    """Names (within this package) of the modules that register subcommands."""
    found = sorted(
        info.name
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_") and info.name not in _NOT_COMMANDS
    )
    ordered = [name for name in COMMAND_ORDER if name in found]
    return ordered + [name for name in found if name not in ordered]


def build_parser() -> argparse.ArgumentParser:
    """The complete argument parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Operator console for the CAcert signer: talk to a signer (ours or the "
            "legacy Perl server.pl) over a serial line, or decode a raw capture. "
            "Exit codes: 0 ok, 1 local error, 2 usage, 3 empty answer (refused), "
            "4 link failure (timeout...), 5 answer could not be applied."
        ),
    )
    subcommands = parser.add_subparsers(
        dest="command", metavar="SUBCOMMAND", title="subcommands"
    )
    subcommands.required = True
    for name in command_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] | None = getattr(
            module, "register", None
        )
        if register is not None:
            register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``signer`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the process exit code; never raises for anticipated failures
    (usage errors, unreadable files, link failures print one clear message on
    stderr instead).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exit_:  # --help, or a usage error already printed
        return _exit_code(exit_.code)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except CommandError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:
        return _exit_code(exit_.code)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_USAGE if code else 0


__all__ = ["main", "build_parser", "command_modules", "COMMAND_ORDER"]
