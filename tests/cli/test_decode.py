"""``signer decode``: the capture scanner on the legacy vectors and on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.cli import decode
from signer.cli.errors import CommandError
from signer.protocol import codec

VECTOR_NAMES = [
    "01_sign_openpgp",
    "02_sign_x509_client_csr",
    "03_sign_x509_spkac",
    "04_sign_x509_server_san",
    "05_revoke_root0_delta",
    "06_crl_refresh_root1_delta",
    "07_nul",
    "08_revoke_root0_delta",
    "09_revoke_root1_empty",
    "10_revoke_root1_empty",
    "11_revoke_root1_delta",
]

#: One exchange without resends: START ACK frame ACK, then the mirror image.
CONVERSATION = [
    ("control", "START", "c2s"),
    ("control", "ACK", "s2c"),
    ("frame", "request", "c2s"),
    ("control", "ACK", "s2c"),
    ("control", "START", "s2c"),
    ("control", "ACK", "c2s"),
    ("frame", "response", "s2c"),
    ("control", "ACK", "c2s"),
]


def load_vector(vectors_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((vectors_dir / f"{name}.json").read_text())


def items_of(data: bytes, **kwargs: Any) -> list[dict[str, Any]]:
    items = list(decode.scan_capture(data, **kwargs))
    assert items[-1]["type"] == "summary"
    return items[:-1]


def shape(item: dict[str, Any]) -> tuple[str, str, str]:
    if item["type"] == "control":
        return ("control", item["name"], item.get("dir", ""))
    if item["type"] == "frame":
        return ("frame", item.get("header", {}).get("kind", ""), item.get("dir", ""))
    return (item["type"], "", item.get("dir", ""))


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_vector_chunks_decode_to_the_conversation(vectors_dir: Path, name: str) -> None:
    """All chunks of a recorded exchange decode to START ACK frame ACK START ACK frame ACK,
    with directions, intact checksums, and the header/field values the JSON documents."""
    vector = load_vector(vectors_dir, name)
    data, chunks = decode.vector_capture(vector)
    items = items_of(data, chunks=chunks, limit=10**7)
    assert [shape(item) for item in items] == CONVERSATION
    for item, side in ((items[2], "request"), (items[6], "response")):
        recorded = vector[side]
        assert item["ok"] is True and item["error"] is None
        assert item["checksum"] == {
            "sent": recorded["xor_sent"],
            "computed": recorded["xor_calc"],
            "ok": True,
        }
        assert item["magic"] == {"found": "rie4Ech7", "ok": True}
        assert item["outer_length"] + 3 == recorded["data_length"]
        assert item["length"] == len(bytes.fromhex(recorded["frame_hex"]))
        assert item["header"]["raw_hex"] == recorded["header"]["raw_hex"]
        assert item["header"]["action"] == recorded["header"]["action"]
        assert [field["length"] for field in item["fields"]] == [
            field["length"] for field in recorded["fields"]
        ]
        for field, documented in zip(item["fields"], recorded["fields"]):
            if "text" in documented and "text" in field:
                assert field["text"] == documented["text"]
    request_header = items[2]["header"]
    documented = vector["request"]["header"]
    for key, ours in (("root", "root"), ("profile", "profile"), ("md_id", "digest"), ("days", "days"), ("keytype", "keytype")):
        assert request_header[ours] == documented[key]
    assert items[2]["message"] == f"{codec.decode_request(bytes.fromhex(vector['request']['frame_hex'])).kind} request"


def test_nul_request_fields_are_named(vectors_dir: Path) -> None:
    """The NUL request frame shows its names (action NUL, profile/digest names) and timestamp."""
    data, _ = decode.vector_capture(load_vector(vectors_dir, "07_nul"))
    frame = items_of(data)[2]
    assert frame["header"]["action_name"] == "NUL"
    assert frame["header"]["profile_name"] == "client"
    assert frame["header"]["digest_name"] == "default"
    assert frame["fields"][0] == {"length": 15, "text": "120420182026.49", "truncated": False}
    assert frame["message"] == "nul request"
    response = items_of(data)[6]
    assert response["message"] == "response" and response["answer_empty"] is True


def test_sign_x509_header_names(vectors_dir: Path) -> None:
    """A server-profile X.509 request decodes with profile name 'server' and root 1."""
    data, _ = decode.vector_capture(load_vector(vectors_dir, "04_sign_x509_server_san"))
    header = items_of(data)[2]["header"]
    assert (header["action_name"], header["system_name"]) == ("sign", "X.509")
    assert (header["profile"], header["profile_name"], header["root"]) == (5, "server", 1)


def test_previews_are_truncated(vectors_dir: Path) -> None:
    """Long fields are previewed up to the limit and marked truncated; binary fields as hex."""
    data, _ = decode.vector_capture(load_vector(vectors_dir, "05_revoke_root0_delta"))
    items = items_of(data, limit=16)
    csr_field = items[2]["fields"][0]
    assert csr_field["truncated"] is True and csr_field["text"] == "-----BEGIN CERTI"
    patch_field = items[6]["fields"][0]
    assert patch_field["length"] > 16 and patch_field["truncated"] is True
    assert "hex" in patch_field and len(patch_field["hex"]) == 32


def test_hex_text_input(vectors_dir: Path) -> None:
    """Hex text with arbitrary whitespace is detected and decodes like the binary."""
    data, _ = decode.vector_capture(load_vector(vectors_dir, "07_nul"))
    spaced = " ".join(data[i : i + 5].hex() for i in range(0, len(data), 5)).encode()
    wrapped = b"\n".join(spaced[i : i + 30] for i in range(0, len(spaced), 30)) + b"\n"
    assert decode.looks_like_hex(wrapped)
    assert decode.capture_bytes(wrapped) == data
    assert decode.capture_bytes(data) == data  # binary stays binary
    assert not decode.looks_like_hex(b"abc")  # odd digit count
    with pytest.raises(CommandError):
        decode.capture_bytes(b"zz", "hex")


def socat_dump(vector: dict[str, Any]) -> bytes:
    """The vector's chunks written the way `socat -x` logs a relay (> c2s, < s2c)."""
    lines = []
    for number, chunk in enumerate(vector["chunks"]):
        mark = ">" if chunk["dir"] == "c2s" else "<"
        piece = bytes.fromhex(chunk["hex"])
        lines.append(
            f"{mark} 2026/12/04 21:00:20.{number:09d}  length={len(piece)} from=0 to={len(piece) - 1}"
        )
        lines.append(" " + " ".join(f"{byte:02x}" for byte in piece))
    return ("\n".join(lines) + "\n").encode()


def test_socat_dump_input(vectors_dir: Path) -> None:
    """A `socat -x` relay dump is recognised and yields the conversation with > / < directions."""
    dump = socat_dump(load_vector(vectors_dir, "07_nul"))
    assert decode.looks_like_socat_dump(dump)
    assert not decode.looks_like_socat_dump(b"02 10 00")
    data, chunks = decode.socat_capture(dump)
    items = items_of(data, chunks=chunks)
    directions = {"c2s": ">", "s2c": "<"}
    assert [shape(item) for item in items] == [
        (kind, name, directions[way]) for kind, name, way in CONVERSATION
    ]
    with pytest.raises(CommandError):
        decode.socat_capture(dump + b"not hex at all\n")


def test_bad_checksum_is_reported() -> None:
    """A frame with a flipped payload byte is reported with sent vs computed XOR, not raised."""
    frame = bytearray(codec.encode_request(codec.NulRequest(b"120420182026.49")))
    frame[20] ^= 0x01
    items = items_of(bytes([codec.START, codec.ACK]) + bytes(frame) + bytes([codec.NAK]))
    assert [item["type"] for item in items] == ["control", "control", "frame", "control"]
    bad = items[2]
    assert bad["ok"] is False and bad["error"].startswith("BadChecksum")
    assert bad["checksum"]["ok"] is False
    assert bad["checksum"]["sent"] != bad["checksum"]["computed"]
    assert bad["magic"]["ok"] is True


def test_bad_magic_is_reported() -> None:
    """A frame whose trailer is damaged is found (by its length) and reported with BadMagic."""
    frame = bytearray(codec.encode_request(codec.NulRequest(b"120420182026.49")))
    frame[-1] = ord("X")
    items = items_of(bytes([codec.START, codec.ACK]) + bytes(frame) + bytes([codec.NAK]))
    assert [item["type"] for item in items] == ["control", "control", "frame", "control"]
    assert items[2]["length"] == len(frame)
    assert items[2]["error"].startswith("BadMagic")
    assert items[2]["magic"] == {"found": "rie4EchX", "ok": False}


def test_truncated_frame_then_restart() -> None:
    """A frame cut short by a peer restart is reported as truncated, and the
    following intact conversation is still found."""
    whole = codec.encode_request(codec.NulRequest(b"120420182026.49"))
    capture = bytes([codec.START, codec.ACK]) + whole[:20] + bytes([codec.START, codec.ACK]) + whole
    items = items_of(capture)
    assert [shape(item)[:2] for item in items] == [
        ("control", "START"),
        ("control", "ACK"),
        ("frame", ""),
        ("control", "START"),
        ("control", "ACK"),
        ("frame", "request"),
    ]
    cut = items[2]
    assert cut["ok"] is False and cut["truncated"] is True and cut["length"] == 20
    assert "MalformedPayload" in cut["error"]
    assert items[-1]["ok"] is True


def test_resend_after_nak() -> None:
    """After a NAK the resent frame (without a new START) is recognised as a frame."""
    frame = codec.encode_request(codec.NulRequest(b"120420182026.49"))
    broken = bytearray(frame)
    broken[10] ^= 0xFF
    capture = bytes([codec.START, codec.ACK]) + bytes(broken) + bytes([codec.NAK]) + frame + bytes([codec.ACK])
    items = items_of(capture)
    assert [item["type"] for item in items] == ["control", "control", "frame", "control", "frame", "control"]
    assert items[2]["ok"] is False and items[4]["ok"] is True


def test_garbage_before_start() -> None:
    """Line noise before a START is one garbage item; the conversation after it is intact."""
    noise = b"\xff\xfe hello \x7f"
    frame = codec.encode_request(codec.NulRequest(b"120420182026.49"))
    items = items_of(noise + bytes([codec.START, codec.ACK]) + frame)
    # The noise starts with an absurd length (0xfffe20 > 8 MiB): never a frame.
    assert items[0]["type"] == "garbage" and items[0]["length"] == len(noise)
    assert items[0]["offset"] == 0
    assert [item["type"] for item in items[1:]] == ["control", "control", "frame"]
    assert items[-1]["ok"] is True


def test_oversized_length_is_not_a_frame() -> None:
    """An outer length above --max-frame-length is never taken for a frame."""
    frame = codec.encode_request(codec.NulRequest(b"120420182026.49"))
    items = items_of(frame, max_length=10)
    assert all(item["type"] != "frame" for item in items)


def test_summary_counts(vectors_dir: Path) -> None:
    """The summary object counts controls, frames, damaged frames and garbage bytes."""
    data, _ = decode.vector_capture(load_vector(vectors_dir, "07_nul"))
    summary = list(decode.scan_capture(data + b"\xff\xff\xff"))[-1]
    assert summary == {
        "type": "summary",
        "bytes": len(data) + 3,
        "controls": 6,
        "frames": 2,
        "damaged_frames": 0,
        "garbage_bytes": 3,
    }


def test_vector_without_chunks_is_a_clear_error() -> None:
    """A JSON document without chunks gives a CommandError, not a KeyError."""
    for document in ({}, {"chunks": []}, [], {"chunks": [{"hex": "zz"}]}):
        with pytest.raises(CommandError):
            decode.vector_capture(document)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data: bytes) -> None:
    """Arbitrary bytes yield JSON-serialisable items covering the input exactly once."""
    items = list(decode.scan_capture(data, max_length=4096))
    json.dumps(items)
    covered = 0
    for item in items[:-1]:
        assert item["offset"] == covered
        covered += 1 if item["type"] == "control" else item["length"]
    assert covered == len(data)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([b"\x02", b"\x10", b"\x11"]),
            st.binary(min_size=0, max_size=40).map(
                lambda payload: codec.encode_request(codec.NulRequest(payload))
            ),
            st.binary(max_size=30),
        ),
        max_size=12,
    ),
    st.data(),
)
def test_mangled_conversations_never_raise(pieces: list[bytes], data: st.DataObject) -> None:
    """Frames, control bytes and noise spliced and mutated never make the scanner raise."""
    capture = bytearray(b"".join(pieces))
    for _ in range(data.draw(st.integers(0, 4))):
        if capture:
            where = data.draw(st.integers(0, len(capture) - 1))
            capture[where] = data.draw(st.integers(0, 255))
    items = list(decode.scan_capture(bytes(capture)))
    json.dumps(items)
    assert items[-1]["bytes"] == len(capture)


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "signer.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_cli_decodes_stdin_hex_and_vector(vectors_dir: Path) -> None:
    """`signer decode -` reads hex from stdin; `--vector` reads the chunks; both give JSON lines."""
    vector = vectors_dir / "07_nul.json"
    data, _ = decode.vector_capture(json.loads(vector.read_text()))
    from_stdin = run_cli("decode", "-", stdin=data.hex().encode() + b"\n")
    from_vector = run_cli("decode", "--vector", str(vector))
    for done in (from_stdin, from_vector):
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
        assert [line["type"] for line in lines] == [
            "control", "control", "frame", "control", "control", "control", "frame", "control", "summary"
        ]
    assert json.loads(from_vector.stdout.decode().splitlines()[0])["dir"] == "c2s"


def test_cli_auto_detects_a_socat_dump(tmp_path: Path, vectors_dir: Path) -> None:
    """`signer decode FILE` on a socat -x dump prints items with their direction."""
    dump = tmp_path / "capture.txt"
    dump.write_bytes(socat_dump(load_vector(vectors_dir, "07_nul")))
    done = run_cli("decode", str(dump))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [line.get("dir") for line in lines[:3]] == [">", "<", ">"]
    assert lines[2]["type"] == "frame" and lines[2]["ok"] is True


def test_cli_binary_file_and_missing_file(tmp_path: Path) -> None:
    """A binary capture file decodes; a missing file is a clear error with exit 1."""
    capture = tmp_path / "capture.bin"
    capture.write_bytes(codec.encode_response(codec.NulResponse()))
    done = run_cli("decode", str(capture))
    assert done.returncode == 0
    first = json.loads(done.stdout.decode().splitlines()[0])
    assert first["type"] == "frame" and first["header"]["kind"] == "response"
    missing = run_cli("decode", str(tmp_path / "nope.bin"))
    assert missing.returncode == 1
    assert b"cannot read" in missing.stderr and b"Traceback" not in missing.stderr
