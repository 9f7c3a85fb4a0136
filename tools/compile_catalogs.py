#!/usr/bin/env python3
"""Compile the client's gettext catalogues (.po -> .mo), pure Python.

Usage: ``python tools/compile_catalogs.py [--check]``

Compiles every ``signer/client/locale/<lang>/LC_MESSAGES/signer.po`` next to
itself. ``--check`` compiles in memory and exits 1 when a committed ``.mo`` is
missing or differs (for CI). Supports what our catalogues use: ``msgctxt``-free
entries, ``msgid``/``msgstr`` with continued lines, the usual C escapes, the
``fuzzy`` flag (fuzzy entries are left out, as msgfmt does).
"""

from __future__ import annotations

import ast
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "signer" / "client" / "locale"


class PoError(Exception):
    """A .po file this small compiler does not understand."""


def _string(token: str, source: str, number: int) -> str:
    token = token.strip()
    if not (token.startswith('"') and token.endswith('"')):
        raise PoError(f"{source}:{number}: expected a quoted string, got {token!r}")
    return ast.literal_eval(token)  # C escapes are a subset of Python's


def parse_po(text: str, source: str = "<po>") -> dict[str, str]:
    """``msgid -> msgstr`` of the non-fuzzy, translated entries (header included)."""
    messages: dict[str, str] = {}
    msgid: list[str] | None = None
    msgstr: list[str] | None = None
    current: list[str] | None = None
    fuzzy = False

    def flush() -> None:
        nonlocal msgid, msgstr, fuzzy
        if msgid is not None and msgstr is not None:
            key, value = "".join(msgid), "".join(msgstr)
            if value and not (fuzzy and key):
                messages[key] = value
        msgid = msgstr = None
        fuzzy = False

    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#,") and "fuzzy" in stripped:
            flush()
            fuzzy = True
        elif not stripped or stripped.startswith("#"):
            continue
        elif stripped.startswith("msgid "):
            if msgstr is not None:
                keep = fuzzy
                flush()
                fuzzy = keep
            msgid = [_string(stripped[6:], source, number)]
            current = msgid
        elif stripped.startswith("msgstr "):
            if msgid is None:
                raise PoError(f"{source}:{number}: msgstr without msgid")
            msgstr = [_string(stripped[7:], source, number)]
            current = msgstr
        elif stripped.startswith('"'):
            if current is None:
                raise PoError(f"{source}:{number}: continuation line outside an entry")
            current.append(_string(stripped, source, number))
        else:
            raise PoError(f"{source}:{number}: cannot parse {stripped[:40]!r}")
    flush()
    return messages


def make_mo(messages: dict[str, str]) -> bytes:
    """GNU .mo bytes (little-endian, no hash table) for ``messages``."""
    keys = sorted(messages)
    ids = [key.encode("utf-8") for key in keys]
    strs = [messages[key].encode("utf-8") for key in keys]
    count = len(keys)
    header_size = 7 * 4
    ids_table = header_size
    strs_table = ids_table + count * 8
    data_start = strs_table + count * 8
    data = bytearray()
    id_entries = []
    for raw in ids:
        id_entries.append((len(raw), data_start + len(data)))
        data += raw + b"\0"
    str_entries = []
    for raw in strs:
        str_entries.append((len(raw), data_start + len(data)))
        data += raw + b"\0"
    output = struct.pack("<7I", 0x950412DE, 0, count, ids_table, strs_table, 0, 0)
    for length, offset in id_entries:
        output += struct.pack("<2I", length, offset)
    for length, offset in str_entries:
        output += struct.pack("<2I", length, offset)
    return output + bytes(data)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    status = 0
    for po in sorted(LOCALE.glob("*/LC_MESSAGES/*.po")):
        mo = po.with_suffix(".mo")
        compiled = make_mo(parse_po(po.read_text("utf-8"), str(po)))
        if check:
            if not mo.exists() or mo.read_bytes() != compiled:
                print(f"{mo} is missing or stale: run tools/compile_catalogs.py")
                status = 1
        else:
            mo.write_bytes(compiled)
            print(f"compiled {po.relative_to(ROOT)} -> {mo.name}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
