"""The legacy file layout of requests and certificates, and atomic writes.

Paths are derived from the row id, never read from ``csr_name``:
``<dir>/<prefix>/<id // 1000>/<prefix>-<id>.<ext>``. ``crt_name`` in the
database receives the same relative path behind a configurable prefix
(production: ``../crt``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: File prefix of each WebDB table.
PREFIXES: dict[str, str] = {
    "emailcerts": "client",
    "domaincerts": "server",
    "orgemailcerts": "orgclient",
    "orgdomaincerts": "orgserver",
    "gpg": "gpg",
}


def relative_path(table: str, row_id: int, ext: str) -> str:
    """``<prefix>/<id // 1000>/<prefix>-<id>.<ext>`` for ``table``.

    :raises ValueError: for an unknown table or a negative id.
    """
    if table not in PREFIXES:
        raise ValueError(f"unknown table {table!r}")
    if row_id < 0:
        raise ValueError(f"row id must not be negative, not {row_id}")
    prefix = PREFIXES[table]
    return f"{prefix}/{row_id // 1000}/{prefix}-{row_id}.{ext}"


@dataclass(frozen=True)
class FileLayout:
    """Where requests are read and certificates written."""

    csr_dir: Path
    crt_dir: Path
    crt_name_prefix: str = "../crt"

    def csr_path(self, table: str, row_id: int) -> Path:
        return self.csr_dir / relative_path(table, row_id, "csr")

    def crt_path(self, table: str, row_id: int) -> Path:
        return self.crt_dir / relative_path(table, row_id, "crt")

    def crt_name(self, table: str, row_id: int) -> str:
        """The string stored in ``crt_name`` (or ``gpg.crt``)."""
        relative = relative_path(table, row_id, "crt")
        return f"{self.crt_name_prefix}/{relative}" if self.crt_name_prefix else relative


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    Temporary file ``.NAME.tmp`` in the same folder, ``fsync``, ``rename``,
    then ``fsync`` of the folder so the rename itself survives a power cut.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fixed name (one writer per file): a temporary left by a kill -9 is
    # reused by the next write of the same file instead of piling up.
    temporary = str(path.parent / f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_request(path: Path, limit: int = 1024 * 1024) -> bytes:
    """Read a request file, refusing one larger than ``limit`` bytes.

    :raises OSError: when it cannot be read; :raises ValueError: when too large.
    """
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes")
    return data
