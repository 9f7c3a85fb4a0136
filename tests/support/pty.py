"""Pseudo-terminal pairs for tests that need a real serial line.

API
---

``pty_pair(directory=None, timeout=5.0) -> ContextManager[PtyPair]``
    Starts ``socat`` with two linked, raw, unpaced pseudo-terminals and yields
    a :class:`PtyPair` whose ``a`` and ``b`` are device paths (symlinks under
    ``directory``, a fresh temporary folder by default). Bytes written to one
    come out of the other, as on a null-modem cable. Waits until both links
    exist (raises :class:`PtyUnavailable` after ``timeout`` seconds, or at once
    when ``socat`` is not installed); at exit terminates ``socat`` (and only
    it) and removes the temporary folder. The ``PtyPair`` also carries the
    ``socat`` ``process`` (``subprocess.Popen``).

``socat_available() -> bool``
    Whether ``socat`` is on ``PATH`` (for ``pytest.mark.skipif``).

``SOCAT_COMMAND``
    The argument list template, documented for the README: ::

        socat pty,raw,echo=0,link=/tmp/ttyA pty,raw,echo=0,link=/tmp/ttyB

Use it for any process pair: open ``pair.a`` with the real
``twisted.internet.serialport.SerialPort`` in one role and ``pair.b`` in the
other (in this process, or pass the path to a child such as
``python -m tests.support.responder --device PATH``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

SOCAT_COMMAND = ("socat", "pty,raw,echo=0,link={a}", "pty,raw,echo=0,link={b}")


class PtyUnavailable(RuntimeError):
    """socat is missing or did not create the pty pair in time."""


@dataclass(frozen=True)
class PtyPair:
    """Two linked pseudo-terminal device paths and the socat relaying them."""

    a: str
    b: str
    process: subprocess.Popen[bytes]


def socat_available() -> bool:
    """True when the ``socat`` binary is on PATH."""
    return shutil.which("socat") is not None


@contextlib.contextmanager
def pty_pair(directory: Optional[Path] = None, timeout: float = 5.0) -> Iterator[PtyPair]:
    """Yield a :class:`PtyPair`; see the module docstring."""
    socat = shutil.which("socat")
    if socat is None:
        raise PtyUnavailable("socat is not installed (apt-get install socat)")
    owned = directory is None
    folder = Path(tempfile.mkdtemp(prefix="signer-pty-")) if directory is None else directory
    a, b = str(folder / "ttyA"), str(folder / "ttyB")
    command = [socat, *(part.format(a=a, b=b) for part in SOCAT_COMMAND[1:])]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + timeout
        while not (os.path.exists(a) and os.path.exists(b)):
            if process.poll() is not None:
                error = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise PtyUnavailable(f"socat exited with {process.returncode}: {error.strip()}")
            if time.monotonic() > deadline:
                raise PtyUnavailable(f"socat did not create {a} and {b} within {timeout} s")
            time.sleep(0.005)
        yield PtyPair(a, b, process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()
        if owned:
            shutil.rmtree(folder, ignore_errors=True)
