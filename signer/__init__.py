"""signer: CAcert's CommModule (signer client and signer server) in Python/Twisted."""

__version__ = "0.1.0"
