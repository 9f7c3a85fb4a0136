"""xdelta 1 patches (the legacy client's CRL delta format) through the real tool.

``xdelta delta OLD NEW PATCH`` and ``xdelta patch PATCH OLD NEW`` (xdelta
1.1.x, patches start with ``%XDZ004%``) run as child processes through
Twisted's ``spawnProcess`` (never a shell), with the files in a private
temporary directory that is removed afterwards. File writes and reads run in a
thread (CRLs can be tens of megabytes); the reactor is injected.

Exit codes of xdelta 1.1.3, as measured: ``delta`` exits 0 or 1 on success
(1 when it wrote a patch between differing files, and also for identical
ones), 2 on error; ``patch`` exits 0 on success and 2 on error (bad magic,
a patch meant for another source file: the MD5 check fails).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

from twisted.internet import error as twisted_error
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

T = TypeVar("T")
#: Runs a blocking callable elsewhere (a thread in production) and returns a Deferred.
BlockingRunner = Callable[..., "Deferred[Any]"]

#: Magic at the start of every xdelta 1.1 patch.
PATCH_MAGIC = b"%XDZ004%"
DEFAULT_EXECUTABLE = shutil.which("xdelta") or "/usr/bin/xdelta"
#: Seconds after which a hanging xdelta is killed.
DEFAULT_TIMEOUT = 120.0

log = Logger()


class XdeltaError(Exception):
    """xdelta failed: not a valid patch, a patch for another file, or a tool problem."""


class _Collector(ProcessProtocol):
    """Collects stdout/stderr and fires ``done`` with (exit code or None, stderr)."""

    def __init__(self) -> None:
        self.done: Deferred[tuple[int | None, bytes]] = Deferred()
        self._err: list[bytes] = []
        self._out_size = 0

    def outReceived(self, data: bytes) -> None:
        self._out_size += len(data)

    def errReceived(self, data: bytes) -> None:
        if sum(map(len, self._err)) < 65536:
            self._err.append(data)

    def processEnded(self, reason: Failure) -> None:
        code: int | None
        if reason.check(twisted_error.ProcessDone):
            code = 0
        elif reason.check(twisted_error.ProcessTerminated):
            terminated = reason.value
            assert isinstance(terminated, twisted_error.ProcessTerminated)  # what check() matched
            code = terminated.exitCode  # None when killed by a signal
        else:  # pragma: no cover - Twisted only reports those two
            code = None
        self.done.callback((code, b"".join(self._err)))


def _default_runner(reactor: Any) -> BlockingRunner:
    def run(f: Callable[..., T], *args: Any, **kwargs: Any) -> "Deferred[T]":
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args, **kwargs)

    return run


def _run_xdelta(
    reactor: Any, executable: str, args: list[str], cwd: str, timeout: float
) -> "Deferred[tuple[int | None, bytes]]":
    resolved = shutil.which(executable)
    if resolved is None:
        raise XdeltaError(f"no executable xdelta at {executable!r}")
    executable = resolved
    protocol = _Collector()
    try:
        transport = reactor.spawnProcess(
            protocol, executable, [executable, *args], env={}, path=cwd
        )
    except OSError as e:
        raise XdeltaError(f"cannot run {executable}: {e}") from e
    timer = reactor.callLater(timeout, _kill, transport, executable)

    def finished(result: tuple[int | None, bytes]) -> tuple[int | None, bytes]:
        if timer.active():
            timer.cancel()
        return result

    return protocol.done.addCallback(finished)


def _kill(transport: Any, executable: str) -> None:
    log.warn("{executable} took too long; killing it", executable=executable)
    try:
        transport.signalProcess("KILL")
    except twisted_error.ProcessExitedAlready:
        pass


def _write_inputs(directory: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        Path(directory, name).write_bytes(data)


def _read_and_remove(directory: str, name: str) -> bytes | None:
    try:
        path = Path(directory, name)
        return path.read_bytes() if path.exists() else None
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _make_directory() -> str:
    return tempfile.mkdtemp(prefix="signer-xdelta-")


@inlineCallbacks
def _xdelta(
    reactor: Any,
    command: str,
    inputs: dict[str, bytes],
    args: list[str],
    output: str,
    ok_codes: tuple[int, ...],
    executable: str,
    run_blocking: BlockingRunner | None,
    timeout: float,
) -> Any:
    run = run_blocking or _default_runner(reactor)
    directory: str = yield run(_make_directory)
    try:
        yield run(_write_inputs, directory, inputs)
        code, stderr = yield _run_xdelta(reactor, executable, [command, *args], directory, timeout)
    except BaseException:
        yield run(shutil.rmtree, directory, True)
        raise
    result = yield run(_read_and_remove, directory, output)
    message = stderr.decode("utf-8", "replace").strip().replace("\n", "; ")
    if code is None:
        raise XdeltaError(f"xdelta {command} was killed ({message or 'no message'})")
    if code not in ok_codes:
        raise XdeltaError(f"xdelta {command} failed with status {code}: {message or 'no message'}")
    if result is None:
        raise XdeltaError(f"xdelta {command} wrote no output ({message or 'no message'})")
    return result


def make_delta(
    reactor: Any,
    old: bytes,
    new: bytes,
    *,
    executable: str = DEFAULT_EXECUTABLE,
    run_blocking: BlockingRunner | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> "Deferred[bytes]":
    """An xdelta 1 patch that turns ``old`` into ``new`` (``xdelta patch`` applies it).

    :raises XdeltaError: (as a failure) when xdelta fails or writes no patch.
    """

    def check(patch: bytes) -> bytes:
        if not patch.startswith(PATCH_MAGIC):
            raise XdeltaError(f"xdelta delta wrote something that is not a patch: {patch[:8]!r}")
        return patch

    d: Deferred[bytes] = _xdelta(
        reactor,
        "delta",
        {"old": old, "new": new},
        ["old", "new", "patch"],
        "patch",
        (0, 1),
        executable,
        run_blocking,
        timeout,
    )
    return d.addCallback(check)


def apply_patch(
    reactor: Any,
    old: bytes,
    patch: bytes,
    *,
    executable: str = DEFAULT_EXECUTABLE,
    run_blocking: BlockingRunner | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> "Deferred[bytes]":
    """The file that xdelta ``patch`` makes of ``old`` (the legacy client's step).

    :raises XdeltaError: (as a failure) when ``patch`` is not a valid xdelta
        patch or was made for a different old file.
    """
    if not patch.startswith(PATCH_MAGIC):
        # xdelta would say "bad magic number" too; spare the child process.
        return fail(XdeltaError("not an xdelta 1.1 patch (bad magic number)"))
    return _xdelta(
        reactor,
        "patch",
        {"old": old, "patch": patch},
        ["patch", "old", "new"],
        "new",
        (0,),
        executable,
        run_blocking,
        timeout,
    )


def is_patch(data: bytes) -> bool:
    """Whether ``data`` looks like an xdelta 1.1 patch (by its magic)."""
    return data.startswith(PATCH_MAGIC)


__all__ = [
    "PATCH_MAGIC",
    "XdeltaError",
    "apply_patch",
    "is_patch",
    "make_delta",
]
