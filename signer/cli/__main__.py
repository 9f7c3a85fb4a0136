"""``python -m signer.cli``: the same as the ``signer`` console script."""

from __future__ import annotations

import sys

from signer.cli import main

if __name__ == "__main__":
    sys.exit(main())
