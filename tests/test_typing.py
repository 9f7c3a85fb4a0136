"""The ``signer`` package type-checks under mypy (strict, mypy-zope plugin)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_mypy_strict_passes(tmp_path: Path) -> None:
    """``python -m mypy`` run from the repository (``[mypy]`` of setup.cfg:
    strict, mypy-zope, ``files = signer``) reports no error.

    The cache goes to a temporary folder so the checkout stays clean.
    """
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy_cache")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mypy reported errors (exit {result.returncode}):\n{output}"
    assert "Success: no issues found" in result.stdout, output
