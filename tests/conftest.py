"""Suite-wide pytest configuration: where the shared spec and vectors live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The project's shared/ folder (spec, vectors): $SIGNER_SHARED or ../shared."""
    configured = os.environ.get("SIGNER_SHARED")
    return Path(configured) if configured else REPO.parent / "shared"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """Folder of the legacy wire transcripts."""
    path = shared_dir() / "vectors"
    if not path.is_dir():
        pytest.fail(f"wire vectors not found at {path}; set SIGNER_SHARED")
    return path
