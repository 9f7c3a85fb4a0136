"""Unit and property tests of the wire codec: building, strict parsing, typed errors."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.protocol import codec

field = st.binary(max_size=300)
byte = st.integers(0, 255)

requests = st.one_of(
    st.builds(codec.NulRequest, timestamp=field),
    st.builds(
        codec.SignX509Request,
        csr=field,
        subject=field,
        san=field,
        root=byte,
        profile=byte,
        digest=byte,
        days=st.integers(0, 0xFFFF),
        keytype=byte,
    ),
    st.builds(
        codec.SignOpenPGPRequest,
        key=field,
        days=st.integers(0, 0xFFFF),
        root=byte,
        profile=byte,
        digest=byte,
        keytype=byte,
    ),
    st.builds(
        codec.RevokeRequest,
        crl_sha1=field,
        certificate=field,
        root=byte,
        days=st.integers(0, 0xFFFF),
        profile=byte,
        digest=byte,
        keytype=byte,
    ),
)


@given(requests)
def test_request_decode_inverts_encode(request: codec.Request) -> None:
    """decode(encode(m)) == m for every request message."""
    assert codec.decode_request(codec.encode_request(request)) == request


@given(requests, field)
def test_response_decode_inverts_encode(request: codec.Request, payload: bytes) -> None:
    """decode(encode(r)) == r for every response, given the request it answers."""
    response = codec.make_response(request, payload)
    assert codec.decode_response(codec.encode_response(response), request) == response


@given(st.binary(max_size=2000))
@settings(max_examples=500)
def test_arbitrary_bytes_raise_only_codec_errors(data: bytes) -> None:
    """Arbitrary bytes never raise anything but CodecError, in any entry point."""
    nul = codec.NulRequest(b"")
    for parse in (
        lambda: codec.decode_request(data),
        lambda: codec.decode_response(data, nul),
        lambda: codec.decode_request_fields(codec.unpack3_all(data)),
        lambda: codec.RequestHeader.decode(data),
        lambda: codec.parse_nul_timestamp(data),
    ):
        try:
            parse()
        except codec.CodecError:
            pass


@given(st.lists(st.binary(max_size=50), max_size=6))
def test_well_framed_strings_raise_only_codec_errors(strings: list[bytes]) -> None:
    """Intact frames with arbitrary inner strings decode or raise MessageError only."""
    frame = codec.encode_frame(strings)
    assert codec.parse_frame(frame) == tuple(strings)
    try:
        codec.decode_request(frame)
    except codec.MessageError:
        pass


@given(requests, st.data())
def test_any_single_byte_corruption_is_detected(request: codec.Request, data: st.DataObject) -> None:
    """Changing any one byte of a frame makes parsing fail or changes the length: never silent."""
    frame = bytearray(codec.encode_request(request))
    index = data.draw(st.integers(0, len(frame) - 1))
    frame[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(codec.FrameError):
        codec.parse_frame(bytes(frame))


def test_pack3_layout() -> None:
    """pack3 prefixes the length as three bytes big-endian."""
    assert codec.pack3(b"abc") == b"\x00\x00\x03abc"
    assert codec.pack3(b"") == b"\x00\x00\x00"
    assert codec.pack3(b"x" * 0x010203)[:3] == b"\x01\x02\x03"


def test_pack3_refuses_overlong_strings() -> None:
    """A string above 2^24-1 bytes is refused instead of silently emptied (legacy bug)."""
    with pytest.raises(codec.FieldTooLong):
        codec.pack3(b"\0" * (2**24))


def test_frame_layout() -> None:
    """A frame is DATA, XOR over DATA, then the magic."""
    frame = codec.encode_frame([b"\x01\x00\x00\x00", b"", b"", b""])
    assert frame.endswith(b"rie4Ech7")
    data = frame[:-9]
    assert data[:3] == (len(data) - 3).to_bytes(3, "big")
    assert frame[-9] == codec.xor_of(data)


def test_parse_rejects_bad_xor() -> None:
    """A wrong checksum byte is a BadChecksum (the receiver NAKs)."""
    frame = bytearray(codec.encode_request(codec.NulRequest(b"010100002026.00")))
    frame[-9] ^= 0xFF
    with pytest.raises(codec.BadChecksum):
        codec.parse_frame(bytes(frame))


def test_parse_rejects_bad_magic() -> None:
    """A damaged trailer is a BadMagic."""
    frame = codec.encode_request(codec.NulRequest(b"x"))[:-1] + b"8"
    with pytest.raises(codec.BadMagic):
        codec.parse_frame(frame)


def test_parse_rejects_strings_not_filling_payload() -> None:
    """Inner strings that do not exactly fill DATA are a MalformedPayload."""
    inner = codec.pack3(b"abc") + b"\x00"  # one stray byte
    data = codec.pack3(inner)
    frame = data + bytes([codec.xor_of(data)]) + codec.MAGIC
    with pytest.raises(codec.MalformedPayload):
        codec.parse_frame(frame)
    inner = b"\x00\x00\x09abc"  # string claims more than there is
    data = codec.pack3(inner)
    with pytest.raises(codec.MalformedPayload):
        codec.parse_frame(data + bytes([codec.xor_of(data)]) + codec.MAGIC)


def test_parse_rejects_oversized_length() -> None:
    """An outer length above the configured maximum is refused."""
    frame = codec.encode_request(codec.SignX509Request(csr=b"x" * 1000))
    with pytest.raises(codec.OversizedFrame) as caught:
        codec.parse_frame(frame, max_length=500)
    assert caught.value.maximum == 500


def test_wrong_version_is_rejected() -> None:
    """A request header whose version is not 1 is a BadVersion (a MessageError)."""
    header = bytes([2, 0, 0, 0, 0, 0, 0, 0, 0])
    frame = codec.encode_frame([header, b"", b"", b""])
    with pytest.raises(codec.BadVersion):
        codec.decode_request(frame)
    assert issubclass(codec.BadVersion, codec.MessageError)


def test_wrong_field_count_and_unknown_action() -> None:
    """Frames with 3 strings or an unknown action/system are UnknownMessage."""
    header = codec.RequestHeader(action=0, system=0).encode()
    with pytest.raises(codec.UnknownMessage):
        codec.decode_request(codec.encode_frame([header, b"", b""]))
    odd = codec.RequestHeader(action=7, system=1).encode()
    with pytest.raises(codec.UnknownMessage):
        codec.decode_request(codec.encode_frame([odd, b"", b"", b""]))


def test_unused_fields_must_be_empty() -> None:
    """Extra data in a field the message kind does not use is refused, not ignored."""
    header = codec.SignOpenPGPRequest(key=b"").header().encode()
    with pytest.raises(codec.UnknownMessage):
        codec.decode_request(codec.encode_frame([header, b"key", b"junk", b""]))


def test_frame_buffer_checks_length_after_three_bytes() -> None:
    """The maximum is enforced as soon as the 3 length bytes are in."""
    buffer = codec.FrameBuffer(max_length=100)
    assert buffer.feed(b"\x00") == (None, b"")
    with pytest.raises(codec.OversizedFrame):
        buffer.feed(b"\xff\xff")
    assert len(buffer) == 0


def test_frame_buffer_assembles_byte_by_byte() -> None:
    """Fed one byte at a time, the buffer yields the frame at its last byte plus any excess."""
    frame = codec.encode_request(codec.NulRequest(b"120420182026.49"))
    buffer = codec.FrameBuffer()
    for byte_ in frame[:-1]:
        assert buffer.feed(bytes([byte_])) == (None, b"")
    assert buffer.expected == len(frame)
    assert buffer.feed(frame[-1:] + b"\x10") == (frame, b"\x10")
    assert len(buffer) == 0 and buffer.expected is None


def test_request_header_validates_ranges() -> None:
    """Header values outside their byte/short range are programming errors."""
    with pytest.raises(ValueError):
        codec.RequestHeader(action=1, system=1, days=70000)
    with pytest.raises(ValueError):
        codec.RequestHeader(action=256, system=1)


def test_empty_response_for_undecodable_header() -> None:
    """A request we cannot decode gets a well-formed empty answer echoing its action."""
    frame = codec.empty_response_for_header(bytes([9, 2, 1]))
    assert codec.parse_frame(frame) == (b"\x01\x02\x00\x00", b"", b"", b"")
    assert codec.parse_frame(codec.empty_response_for_header(b"")) == (
        b"\x01\x00\x00\x00",
        b"",
        b"",
        b"",
    )


def test_nul_timestamp_format_and_parse() -> None:
    """Timestamps use MMDDhhmmYYYY.SS in UTC and parse back strictly."""
    moment = datetime.datetime(2026, 12, 4, 20, 18, 49, tzinfo=datetime.timezone.utc)
    assert codec.format_nul_timestamp(moment) == b"120420182026.49"
    assert codec.parse_nul_timestamp(b"120420182026.49") == moment
    local = moment.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    assert codec.format_nul_timestamp(local) == b"120420182026.49"


@pytest.mark.parametrize(
    "raw",
    [b"", b"1204201820260.4", b"023012002026.00", b"130112002026.00", b"12042018202649x", b"12042018 026.49", "12042018202\u00e9.4".encode()],
)
def test_nul_timestamp_rejects_malformed(raw: bytes) -> None:
    """Wrong length, no dot, impossible dates and non-digits are MessageErrors."""
    with pytest.raises(codec.MessageError):
        codec.parse_nul_timestamp(raw)


def test_response_types_per_request() -> None:
    """Each request kind is answered by its own response type with the legacy action byte."""
    assert codec.encode_response(codec.make_response(codec.SignOpenPGPRequest(b"k"), b"a"))[6:10] == (
        b"\x01\x02\x00\x00"
    )
    assert codec.encode_response(codec.make_response(codec.SignX509Request(b"c"), b"a"))[6:10] == (
        b"\x01\x01\x00\x00"
    )
    assert codec.encode_response(codec.make_response(codec.RevokeRequest(b"h"), b""))[6:10] == (
        b"\x01\x02\x00\x00"
    )
    assert codec.make_response(codec.NulRequest(b""), b"ignored") == codec.NulResponse()
