"""Exit codes and the error type of the ``signer`` command."""

from __future__ import annotations

#: Success.
EXIT_OK = 0
#: A local problem: unreadable input file, bad serial configuration, device
#: that cannot be opened, output that cannot be written.
EXIT_LOCAL_ERROR = 1
#: Bad command-line arguments (argparse's own code).
EXIT_USAGE = 2
#: The signer answered, but with an empty field 1: it refused the request.
EXIT_EMPTY_ANSWER = 3
#: The link failed: timeout, resend limit, peer reset, port closed.
EXIT_LINK_FAILURE = 4
#: ``revoke --apply``: the answer could not be turned into a valid CRL.
EXIT_APPLY_FAILED = 5


class CommandError(Exception):
    """An anticipated failure: print the message, exit with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_LOCAL_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code
