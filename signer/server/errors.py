"""Domain errors of the signing host."""

from __future__ import annotations


class RequestRefused(Exception):
    """A request the server will not serve; answered with an empty field 1.

    ``reason`` is a short human sentence for the log (never sent on the wire).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
