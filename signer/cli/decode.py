"""``signer decode``: explain a raw serial capture as JSON objects.

The scanner (:func:`scan_capture`) is pure: bytes in, JSON-ready dicts out,
and it never raises on any input. It walks the capture and reports

- ``control`` items: the bytes START (0x02), ACK (0x10), NAK (0x11);
- ``frame`` items: a frame whose length prefix points at the ``rie4Ech7``
  trailer (checksum verified, header and fields decoded), or, where the
  conversation expects a frame (after START+ACK or NAK, or at the very
  start), a damaged or truncated one with the codec's error message;
- ``garbage`` items: runs of bytes that are neither.

A final ``summary`` object counts what was found.
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from signer.cli.errors import EXIT_OK, CommandError
from signer.protocol import codec
from signer.cli import argtypes

NON_NEGATIVE = argtypes.integer(minimum=0, base=0)

ACTION_NAMES = {codec.ACTION_NUL: "NUL", codec.ACTION_SIGN: "sign", codec.ACTION_REVOKE: "revoke"}
SYSTEM_NAMES = {codec.SYSTEM_NONE: "none", codec.SYSTEM_X509: "X.509", codec.SYSTEM_OPENPGP: "OpenPGP"}
DEFAULT_PREVIEW = 64
#: The smallest outer length of a real message (four empty pack3 strings);
#: shorter "frames" found by their trailer alone are taken for noise.
MIN_OUTER_LENGTH = codec.FIELD_COUNT * codec.LENGTH_PREFIX
_PRINTABLE = frozenset((string.printable).encode("ascii")) - frozenset(b"\x0b\x0c")
_HEX_DIGITS = frozenset(string.hexdigits.encode("ascii"))
_WHITESPACE = frozenset(string.whitespace.encode("ascii"))


# -- input -----------------------------------------------------------------


def looks_like_hex(raw: bytes) -> bool:
    """True when ``raw`` is whitespace-separated hex digits forming whole bytes."""
    digits = 0
    for byte in raw:
        if byte in _HEX_DIGITS:
            digits += 1
        elif byte not in _WHITESPACE:
            return False
    return digits > 0 and digits % 2 == 0


def capture_bytes(raw: bytes, input_format: str = "auto") -> bytes:
    """The capture bytes in ``raw``: binary as is, or hex text decoded.

    ``input_format`` is ``auto`` (hex when :func:`looks_like_hex`), ``hex`` or
    ``binary``. Raises :class:`CommandError` for ``hex`` input that is not hex.
    """
    if input_format == "binary" or (input_format == "auto" and not looks_like_hex(raw)):
        return raw
    try:
        return bytes.fromhex(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        # bytes.fromhex wants whitespace only between bytes: strip it all.
        compact = bytes(b for b in raw if b not in _WHITESPACE)
        try:
            return bytes.fromhex(compact.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CommandError(f"input is not hex text: {exc}") from None


@dataclass(frozen=True)
class Chunk:
    """One read of a recorded conversation: where it starts and its direction."""

    offset: int
    direction: str


_SOCAT_HEADER = re.compile(rb"^([<>]) \d{4}/\d\d/\d\d \S+\s+length=\d+")


def looks_like_socat_dump(raw: bytes) -> bool:
    """True when ``raw`` starts like the output of ``socat -x`` (a ``>``/``<`` header)."""
    first = raw.lstrip().split(b"\n", 1)[0]
    return _SOCAT_HEADER.match(first) is not None


def socat_capture(raw: bytes) -> tuple[bytes, list[Chunk]]:
    """The bytes of a ``socat -x`` dump, with each chunk's direction (``>`` or ``<``).

    Header lines (``> 2026/12/04 21:00:20.000855621  length=1 from=0 to=0``)
    start a chunk; the hex lines after them are its bytes. Raises
    :class:`CommandError` on a line that is neither.
    """
    data = bytearray()
    chunks: list[Chunk] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        header = _SOCAT_HEADER.match(line)
        if header is not None:
            chunks.append(Chunk(len(data), header.group(1).decode("ascii")))
            continue
        if not line.strip():
            continue
        if not chunks or not looks_like_hex(line):
            raise CommandError(f"line {number} of the socat dump is neither a header nor hex")
        data += bytes.fromhex(line.decode("ascii"))
    return bytes(data), chunks


def vector_capture(document: Any) -> tuple[bytes, list[Chunk]]:
    """Concatenate the ``chunks`` of a wire-vector JSON document.

    Raises :class:`CommandError` when the document has no usable chunks.
    """
    chunks = document.get("chunks") if isinstance(document, dict) else None
    if not isinstance(chunks, list) or not chunks:
        raise CommandError("the vector file has no 'chunks' list")
    data = bytearray()
    marks: list[Chunk] = []
    for number, chunk in enumerate(chunks):
        try:
            piece = bytes.fromhex(chunk["hex"])
            direction = str(chunk.get("dir", "?"))
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise CommandError(f"chunk {number} of the vector file is unusable: {exc!r}") from None
        marks.append(Chunk(len(data), direction))
        data += piece
    return bytes(data), marks


# -- previews and headers --------------------------------------------------


def preview(value: bytes, limit: int = DEFAULT_PREVIEW) -> dict[str, Any]:
    """``{length, text|hex, truncated}``: printable text, else hex, cut at ``limit``."""
    shown = value[:limit]
    result: dict[str, Any] = {"length": len(value)}
    if all(byte in _PRINTABLE for byte in shown):
        result["text"] = shown.decode("ascii")
    else:
        result["hex"] = shown.hex()
    result["truncated"] = len(value) > limit
    return result


def describe_header(raw: bytes) -> dict[str, Any]:
    """Decode a 9-byte request header or a 4-byte response header leniently."""
    if len(raw) == codec.REQUEST_HEADER_LENGTH:
        return {
            "kind": "request",
            "raw_hex": raw.hex(),
            "version": raw[0],
            "version_ok": raw[0] == codec.PROTOCOL_VERSION,
            "action": raw[1],
            "action_name": ACTION_NAMES.get(raw[1], "unknown"),
            "system": raw[2],
            "system_name": SYSTEM_NAMES.get(raw[2], "unknown"),
            "root": raw[3],
            "profile": raw[4],
            "profile_name": codec.PROFILES.get(raw[4], "unknown"),
            "digest": raw[5],
            "digest_name": codec.DIGESTS.get(raw[5], "unknown"),
            "days": int.from_bytes(raw[6:8], "big"),
            "keytype": raw[8],
        }
    if len(raw) == codec.RESPONSE_HEADER_LENGTH:
        return {
            "kind": "response",
            "raw_hex": raw.hex(),
            "version": raw[0],
            "version_ok": raw[0] == codec.PROTOCOL_VERSION,
            "action": raw[1],
            "action_name": ACTION_NAMES.get(raw[1], "unknown"),
            "byte2": raw[2],
            "byte3": raw[3],
        }
    return {"kind": "unknown", "raw_hex": raw[:32].hex(), "length": len(raw)}


def _message_verdict(strings: Sequence[bytes]) -> dict[str, Any]:
    """What the codec makes of the inner strings: a message kind or its error."""
    header = strings[0] if strings else b""
    if len(header) == codec.RESPONSE_HEADER_LENGTH:
        try:
            if len(strings) != codec.FIELD_COUNT:
                raise codec.UnknownMessage(
                    f"response has {len(strings)} strings, expected {codec.FIELD_COUNT}"
                )
            codec.ResponseHeader.decode(header)
        except codec.CodecError as exc:
            return {"message": None, "message_error": str(exc)}
        return {"message": "response", "answer_empty": not strings[1]}
    try:
        request = codec.decode_request_fields(strings)
    except codec.CodecError as exc:
        return {"message": None, "message_error": str(exc)}
    return {"message": f"{request.kind} request"}


# -- the scanner -----------------------------------------------------------


def _exact_frame_end(data: bytes, offset: int, max_length: int) -> int | None:
    """End of the frame at ``offset`` if its length prefix points at the magic.

    Only outer lengths of at least :data:`MIN_OUTER_LENGTH` count: the tail
    of every frame (an empty last field, XOR, magic) would otherwise look
    like a frame of its own.
    """
    if len(data) - offset < codec.LENGTH_PREFIX + codec.TRAILER_LENGTH:
        return None
    outer = int.from_bytes(data[offset : offset + codec.LENGTH_PREFIX], "big")
    if not MIN_OUTER_LENGTH <= outer <= max_length:
        return None
    end = offset + codec.frame_size(outer)
    if end > len(data) or data[end - len(codec.MAGIC) : end] != codec.MAGIC:
        return None
    return end


def _damaged_frame_end(data: bytes, offset: int, max_length: int) -> int | None:
    """Best guess at the end of a damaged frame expected at ``offset``.

    None when the bytes cannot be a frame start (too short, absurd length).
    Prefers the claimed end when a control byte (or the end of the capture)
    follows it, else the next magic trailer, else the rest of the capture.
    An intact frame found inside the candidate (a peer that restarted
    mid-frame) cuts it short, before the START/ACK that precede that frame.
    """
    if len(data) - offset < codec.LENGTH_PREFIX:
        return len(data)
    outer = int.from_bytes(data[offset : offset + codec.LENGTH_PREFIX], "big")
    if outer > max_length:
        return None
    claimed = offset + codec.frame_size(outer)
    if claimed <= len(data) and (claimed == len(data) or data[claimed] in codec.CONTROL_NAMES):
        end = claimed
    else:
        magic_at = data.find(codec.MAGIC, offset + codec.LENGTH_PREFIX)
        end = magic_at + len(codec.MAGIC) if magic_at >= 0 else len(data)
    for inner in range(offset + 1, end - codec.LENGTH_PREFIX - codec.TRAILER_LENGTH + 1):
        if _exact_frame_end(data, inner, max_length) is not None:
            cut = inner
            while cut > offset + 1 and data[cut - 1] in codec.CONTROL_NAMES:
                cut -= 1
            return cut
    return end


def describe_frame(raw: bytes, offset: int, max_length: int, limit: int) -> dict[str, Any]:
    """Everything about the (possibly damaged) frame ``raw`` found at ``offset``."""
    item: dict[str, Any] = {"type": "frame", "offset": offset, "length": len(raw)}
    outer = int.from_bytes(raw[: codec.LENGTH_PREFIX], "big") if len(raw) >= 3 else None
    item["outer_length"] = outer
    if outer is not None:
        item["expected_length"] = codec.frame_size(outer)
        item["truncated"] = len(raw) < codec.frame_size(outer)
    if len(raw) >= codec.LENGTH_PREFIX + codec.TRAILER_LENGTH and raw.endswith(codec.MAGIC):
        data = raw[: -codec.TRAILER_LENGTH]
        xor_sent: int | None = raw[-codec.TRAILER_LENGTH]
        trailer = raw[-len(codec.MAGIC) :]
    else:
        data_end = codec.LENGTH_PREFIX + (outer or 0)
        data = raw[:data_end]
        xor_sent = raw[data_end] if len(raw) > data_end else None
        trailer = raw[data_end + 1 : data_end + codec.TRAILER_LENGTH]
    computed = codec.xor_of(data)
    item["checksum"] = {
        "sent": xor_sent,
        "computed": computed,
        "ok": xor_sent == computed,
    }
    item["magic"] = {
        "found": trailer.decode("latin-1"),
        "ok": trailer == codec.MAGIC,
    }
    try:
        codec.parse_frame(raw, max_length)
    except codec.CodecError as exc:
        item["ok"] = False
        item["error"] = f"{type(exc).__name__}: {exc}"
    else:
        item["ok"] = True
        item["error"] = None
    try:
        strings = codec.unpack3_all(data[codec.LENGTH_PREFIX :]) if len(data) >= 3 else ()
    except codec.CodecError as exc:
        item["strings_error"] = str(exc)
        return item
    item["strings"] = len(strings)
    if strings:
        item["header"] = describe_header(strings[0])
        item["fields"] = [preview(field, limit) for field in strings[1:]]
        item.update(_message_verdict(strings))
    return item


def scan_capture(
    data: bytes,
    max_length: int = codec.DEFAULT_MAX_FRAME_LENGTH,
    limit: int = DEFAULT_PREVIEW,
    chunks: Sequence[Chunk] = (),
) -> Iterator[dict[str, Any]]:
    """Yield one JSON-ready dict per control byte, frame and garbage run in ``data``.

    ``chunks`` (from a vector file) adds each item's direction. Never raises.
    The last item is a ``summary``.
    """
    counts = {"controls": 0, "frames": 0, "damaged_frames": 0, "garbage_bytes": 0}
    previous_control: int | None = None
    expect_frame = True
    offset = 0
    chunk_index = 0

    def direction(at: int) -> dict[str, str]:
        nonlocal chunk_index
        if not chunks:
            return {}
        while chunk_index + 1 < len(chunks) and chunks[chunk_index + 1].offset <= at:
            chunk_index += 1
        return {"dir": chunks[chunk_index].direction}

    while offset < len(data):
        byte = data[offset]
        end = _exact_frame_end(data, offset, max_length)
        if end is None and byte not in codec.CONTROL_NAMES and expect_frame:
            end = _damaged_frame_end(data, offset, max_length)
        if end is not None:
            item = describe_frame(data[offset:end], offset, max_length, limit)
            counts["frames"] += 1
            counts["damaged_frames"] += 0 if item["ok"] else 1
            yield {**item, **direction(offset)}
            offset = end
            expect_frame = False
            previous_control = None
            continue
        if byte in codec.CONTROL_NAMES:
            counts["controls"] += 1
            yield {
                "type": "control",
                "offset": offset,
                "byte": f"0x{byte:02x}",
                "name": codec.CONTROL_NAMES[byte],
                **direction(offset),
            }
            expect_frame = byte == codec.NAK or (
                byte == codec.ACK and previous_control == codec.START
            )
            previous_control = byte
            offset += 1
            continue
        start = offset
        offset += 1
        while (
            offset < len(data)
            and data[offset] not in codec.CONTROL_NAMES
            and _exact_frame_end(data, offset, max_length) is None
        ):
            offset += 1
        counts["garbage_bytes"] += offset - start
        yield {
            "type": "garbage",
            "offset": start,
            **preview(data[start:offset], limit),
            **direction(start),
        }
        previous_control = None
    yield {"type": "summary", "bytes": len(data), **counts}


# -- the subcommand --------------------------------------------------------


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``signer decode``."""
    parser = subcommands.add_parser(
        "decode",
        help="explain a raw serial capture (binary or hex) as JSON",
        description=(
            "Read a raw capture of the serial line (binary, hex text: "
            "whitespace-separated hex digits, or the dump of a 'socat -x' relay) and print one JSON object per "
            "control byte (START/ACK/NAK), frame (header fields, field lengths and "
            "previews, XOR checksum and magic verdicts, error for damaged or "
            "truncated frames) and run of garbage bytes, then a summary object. "
            "Works offline; never talks to a signer."
        ),
    )
    parser.add_argument(
        "file",
        nargs="?",
        default="-",
        metavar="FILE",
        help="capture file, or - for standard input (default)",
    )
    parser.add_argument(
        "--vector",
        metavar="FILE",
        help="read the 'chunks' of a wire-vector JSON file (shared/vectors/*.json) "
        "instead; each item then also carries its direction (c2s/s2c)",
    )
    parser.add_argument(
        "--format",
        dest="input_format",
        choices=("auto", "binary", "hex", "socat"),
        default="auto",
        help="how to read FILE: auto-detect (default), raw binary, hex text, or the "
        "hex dump of 'socat -x' (items then carry the direction '>' or '<')",
    )
    parser.add_argument(
        "--preview",
        type=NON_NEGATIVE,
        default=DEFAULT_PREVIEW,
        metavar="N",
        help=f"show at most N bytes of each field (default {DEFAULT_PREVIEW})",
    )
    parser.add_argument(
        "--max-frame-length",
        type=NON_NEGATIVE,
        default=codec.DEFAULT_MAX_FRAME_LENGTH,
        metavar="BYTES",
        help="largest outer length taken for a frame "
        f"(default {codec.DEFAULT_MAX_FRAME_LENGTH})",
    )
    parser.add_argument(
        "--pretty", action="store_true", help="indent each JSON object over several lines"
    )
    parser.set_defaults(run=run)


def _read(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    """Decode the capture named in ``args`` and print the JSON objects."""
    chunks: list[Chunk] = []
    if args.vector:
        try:
            document = json.loads(_read(args.vector))
        except ValueError as exc:
            raise CommandError(f"{args.vector} is not JSON: {exc}") from None
        data, chunks = vector_capture(document)
    else:
        raw = _read(args.file)
        if args.input_format == "socat" or (
            args.input_format == "auto" and looks_like_socat_dump(raw)
        ):
            data, chunks = socat_capture(raw)
        else:
            data = capture_bytes(raw, args.input_format)
    indent = 2 if args.pretty else None
    out = sys.stdout
    for item in scan_capture(data, args.max_frame_length, args.preview, chunks):
        out.write(json.dumps(item, indent=indent) + "\n")
    out.flush()
    return EXIT_OK
