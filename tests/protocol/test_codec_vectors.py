"""The codec replays the transcripts recorded between the two legacy Perl peers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from signer.protocol import codec

from ..conftest import shared_dir

VECTOR_FILES = sorted((shared_dir() / "vectors").glob("*.json"))


def _field_bytes(field: dict[str, Any]) -> bytes:
    if "hex" in field:
        return bytes.fromhex(field["hex"])
    return field["text"].encode("latin-1")


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_vectors_are_present() -> None:
    """All eleven recorded exchanges are found (a missing folder must not pass silently)."""
    assert len(VECTOR_FILES) == 11


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.stem)
def test_request_decodes_to_documented_fields(path: Path) -> None:
    """Each request frame decodes to the header and fields its JSON documents."""
    vector = _load(path)["request"]
    frame = bytes.fromhex(vector["frame_hex"])
    request = codec.decode_request(frame)
    header = vector["header"]
    decoded = request.header()
    assert decoded.encode().hex() == header["raw_hex"]
    assert (decoded.version, decoded.action, decoded.system) == (
        header["version"],
        header["action"],
        header["system"],
    )
    assert (decoded.root, decoded.profile, decoded.digest) == (
        header["root"],
        header["profile"],
        header["md_id"],
    )
    assert (decoded.days, decoded.keytype) == (header["days"], header["keytype"])
    assert request.fields() == tuple(_field_bytes(f) for f in vector["fields"])
    assert vector["data_length"] == len(frame) - codec.TRAILER_LENGTH


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.stem)
def test_request_reencodes_identically(path: Path) -> None:
    """Decoding then encoding a legacy request gives back the exact bytes."""
    frame = bytes.fromhex(_load(path)["request"]["frame_hex"])
    assert codec.encode_request(codec.decode_request(frame)) == frame


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.stem)
def test_response_roundtrip(path: Path) -> None:
    """Each legacy response decodes to its field 1 and re-encodes to the same bytes."""
    vector = _load(path)
    request = codec.decode_request(bytes.fromhex(vector["request"]["frame_hex"]))
    frame = bytes.fromhex(vector["response"]["frame_hex"])
    response = codec.decode_response(frame, request)
    assert response.payload == _field_bytes(vector["response"]["fields"][0])
    assert codec.ResponseHeader(action=response.action).encode().hex() == (
        vector["response"]["header"]["raw_hex"]
    )
    assert codec.encode_response(response) == frame


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.stem)
def test_xor_matches_recorded_checksum(path: Path) -> None:
    """Our XOR over DATA equals the byte the legacy sender put on the wire."""
    for direction in ("request", "response"):
        vector = _load(path)[direction]
        frame = bytes.fromhex(vector["frame_hex"])
        assert codec.xor_of(frame[: -codec.TRAILER_LENGTH]) == vector["xor_sent"]


def test_kinds_of_the_vectors() -> None:
    """The vectors decode to the request types their names announce."""
    kinds = {
        path.stem: type(codec.decode_request(bytes.fromhex(_load(path)["request"]["frame_hex"])))
        for path in VECTOR_FILES
    }
    assert kinds["01_sign_openpgp"] is codec.SignOpenPGPRequest
    assert kinds["02_sign_x509_client_csr"] is codec.SignX509Request
    assert kinds["03_sign_x509_spkac"] is codec.SignX509Request
    assert kinds["06_crl_refresh_root1_delta"] is codec.RevokeRequest
    assert kinds["07_nul"] is codec.NulRequest


def test_nul_sizes_on_the_wire(vectors_dir: Path) -> None:
    """A NUL request is 48 bytes on the wire and its response 28, as recorded."""
    request = codec.NulRequest(timestamp=b"120420182026.49")
    assert len(codec.encode_request(request)) == 48
    assert codec.encode_response(codec.NulResponse()).hex() == (
        "00001000000401000000000000000000000000157269653445636837"
    )
    recorded = _load(vectors_dir / "07_nul.json")["request"]["frame_hex"]
    assert codec.encode_request(request).hex() == recorded
