"""The signer wire codec, protocol version 1 (sans-IO).

Everything about bytes and nothing about certificates: ``pack3`` strings, the
9-byte request header and the 4-byte response header, typed immutable
messages, and frames (``DATA || XOR || "rie4Ech7"``).

Two levels of errors, both subclasses of :class:`CodecError`:

- :class:`FrameError`: the bytes were damaged in transit (bad XOR, bad magic,
  inner strings that do not fill the payload, oversized length). The link
  layer answers those with NAK.
- :class:`MessageError`: the frame arrived intact but does not carry a request
  or response we understand (wrong version, unknown action, wrong field
  count...). The server answers those with an empty response.

Nothing in here raises any other exception on received bytes.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import ClassVar, Sequence, Union

START = 0x02
ACK = 0x10
NAK = 0x11
CONTROL_NAMES = {START: "START", ACK: "ACK", NAK: "NAK"}

MAGIC = b"rie4Ech7"
PROTOCOL_VERSION = 1
PACK3_MAX = 2**24 - 1
LENGTH_PREFIX = 3
#: Bytes after DATA: the XOR byte and the magic trailer.
TRAILER_LENGTH = 1 + len(MAGIC)
#: Default ceiling for the outer length of a received frame (8 MiB).
DEFAULT_MAX_FRAME_LENGTH = 8 * 1024 * 1024

REQUEST_HEADER_LENGTH = 9
RESPONSE_HEADER_LENGTH = 4
FIELD_COUNT = 4  # header + 3 fields

ACTION_NUL = 0
ACTION_SIGN = 1
ACTION_REVOKE = 2

SYSTEM_NONE = 0
SYSTEM_X509 = 1
SYSTEM_OPENPGP = 2

#: Wire digest ids and their names.
DIGESTS: dict[int, str] = {
    0: "default",
    1: "md5",
    2: "sha1",
    3: "ripemd160",
    8: "sha256",
    9: "sha384",
    10: "sha512",
}
DIGEST_IDS: dict[str, int] = {name: number for number, name in DIGESTS.items()}

#: Wire profile ids and their names.
PROFILES: dict[int, str] = {
    0: "client",
    1: "client-org",
    2: "client-codesign",
    3: "client-machine",
    4: "client-ads",
    5: "server",
    6: "server-org",
    7: "server-jabber",
    8: "ocsp",
    9: "timestamp",
    10: "proxy",
    11: "subca",
}

NUL_TIMESTAMP_FORMAT = "%m%d%H%M%Y.%S"
#: SHA-1 of the empty string: what the legacy client sends when it has no CRL.
EMPTY_SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"


class CodecError(Exception):
    """Base of every error the codec raises on bytes it was given."""


class FrameError(CodecError):
    """The frame was damaged in transit: the receiver should answer NAK."""


class OversizedFrame(FrameError):
    """The outer length exceeds the configured maximum."""

    def __init__(self, length: int, maximum: int) -> None:
        super().__init__(f"frame length {length} exceeds the maximum of {maximum} bytes")
        self.length = length
        self.maximum = maximum


class BadChecksum(FrameError):
    """The XOR byte does not match the payload."""


class BadMagic(FrameError):
    """The 8 bytes after the XOR byte are not ``rie4Ech7``."""


class MalformedPayload(FrameError):
    """The pack3 strings inside DATA do not exactly fill it."""


class MessageError(CodecError):
    """An intact frame that does not carry a message we understand."""


class BadVersion(MessageError):
    """The header's version byte is not 1."""


class UnknownMessage(MessageError):
    """Unknown action/system combination, wrong header length or field count."""


class FieldTooLong(CodecError):
    """A string is too long for pack3 (we refuse to build such a message)."""


# -- pack3 -----------------------------------------------------------------


def pack3(data: bytes) -> bytes:
    """Prefix ``data`` with its length as 3 bytes big-endian."""
    if len(data) > PACK3_MAX:
        raise FieldTooLong(f"{len(data)} bytes do not fit a pack3 string (max {PACK3_MAX})")
    return len(data).to_bytes(3, "big") + data


def unpack3_all(data: bytes) -> tuple[bytes, ...]:
    """Split ``data`` into pack3 strings that must fill it exactly."""
    strings = []
    offset = 0
    while offset < len(data):
        if offset + LENGTH_PREFIX > len(data):
            raise MalformedPayload(f"truncated length prefix at offset {offset}")
        length = int.from_bytes(data[offset : offset + LENGTH_PREFIX], "big")
        offset += LENGTH_PREFIX
        if offset + length > len(data):
            raise MalformedPayload(
                f"string at offset {offset - LENGTH_PREFIX} claims {length} bytes, "
                f"only {len(data) - offset} left"
            )
        strings.append(bytes(data[offset : offset + length]))
        offset += length
    return tuple(strings)


def xor_of(data: bytes) -> int:
    """XOR of every byte of ``data``.

    Folds the payload as one integer in halves: far faster than a Python loop
    over a multi-megabyte CRL.
    """
    if not data:
        return 0
    value = int.from_bytes(data, "little")
    width = len(data) * 8
    while width > 8:
        half = ((width // 8 + 1) // 2) * 8
        value = (value & ((1 << half) - 1)) ^ (value >> half)
        width = half
    return value & 0xFF


# -- frames ----------------------------------------------------------------


def encode_frame(fields: Sequence[bytes]) -> bytes:
    """Build ``DATA || XOR || MAGIC`` from the inner strings (header first)."""
    data = pack3(b"".join(pack3(field) for field in fields))
    return data + bytes([xor_of(data)]) + MAGIC


def frame_size(outer_length: int) -> int:
    """Total bytes on the wire of a frame whose outer length is given."""
    return LENGTH_PREFIX + outer_length + TRAILER_LENGTH


def check_length(outer_length: int, max_length: int) -> None:
    """Refuse an outer length above ``max_length`` (before buffering the rest)."""
    if outer_length > max_length:
        raise OversizedFrame(outer_length, max_length)


def parse_frame(frame: bytes, max_length: int = DEFAULT_MAX_FRAME_LENGTH) -> tuple[bytes, ...]:
    """Check one complete frame and return its inner strings (header first)."""
    if len(frame) < LENGTH_PREFIX + TRAILER_LENGTH:
        raise MalformedPayload(f"{len(frame)} bytes are too short for a frame")
    outer = int.from_bytes(frame[:LENGTH_PREFIX], "big")
    check_length(outer, max_length)
    if len(frame) != frame_size(outer):
        raise MalformedPayload(
            f"frame of {len(frame)} bytes, its length prefix says {frame_size(outer)}"
        )
    data_end = LENGTH_PREFIX + outer
    data = frame[:data_end]
    if frame[data_end + 1 :] != MAGIC:
        raise BadMagic(f"trailer is {bytes(frame[data_end + 1:])!r}, expected {MAGIC!r}")
    expected = xor_of(data)
    if frame[data_end] != expected:
        raise BadChecksum(f"XOR byte is 0x{frame[data_end]:02x}, payload gives 0x{expected:02x}")
    return unpack3_all(data[LENGTH_PREFIX:])


class FrameBuffer:
    """Accumulates the bytes of one frame and says when it is complete.

    The outer length is checked against ``max_length`` as soon as its three
    bytes are in, so an absurd length never makes us buffer anything.
    """

    def __init__(self, max_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        self.max_length = max_length
        self._buffer = bytearray()
        self._expected: int | None = None

    def __len__(self) -> int:
        return len(self._buffer)

    @property
    def expected(self) -> int | None:
        """Total frame size once the length prefix is known, else None."""
        return self._expected

    def feed(self, data: bytes) -> tuple[bytes | None, bytes]:
        """Add ``data``; return ``(frame, excess)``.

        ``frame`` is the complete raw frame once all its bytes are in (the
        buffer is then empty again), else None; ``excess`` holds bytes that
        arrived after the end of the frame. Raises :class:`OversizedFrame`.
        """
        self._buffer += data
        if self._expected is None and len(self._buffer) >= LENGTH_PREFIX:
            outer = int.from_bytes(self._buffer[:LENGTH_PREFIX], "big")
            try:
                check_length(outer, self.max_length)
            except OversizedFrame:
                self.clear()
                raise
            self._expected = frame_size(outer)
        if self._expected is None or len(self._buffer) < self._expected:
            return None, b""
        frame = bytes(self._buffer[: self._expected])
        excess = bytes(self._buffer[self._expected :])
        self.clear()
        return frame, excess

    def clear(self) -> None:
        """Forget any partial frame."""
        self._buffer = bytearray()
        self._expected = None


# -- headers ---------------------------------------------------------------


def _byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be 0..255, not {value}")


@dataclass(frozen=True)
class RequestHeader:
    """The 9-byte request header."""

    action: int
    system: int
    root: int = 0
    profile: int = 0
    digest: int = 0
    days: int = 0
    keytype: int = 0
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        for name in ("action", "system", "root", "profile", "digest", "keytype", "version"):
            _byte(name, getattr(self, name))
        if not 0 <= self.days <= 0xFFFF:
            raise ValueError(f"days must be 0..65535, not {self.days}")

    def encode(self) -> bytes:
        return bytes(
            [self.version, self.action, self.system, self.root, self.profile, self.digest]
        ) + self.days.to_bytes(2, "big") + bytes([self.keytype])

    @classmethod
    def decode(cls, raw: bytes) -> RequestHeader:
        if len(raw) != REQUEST_HEADER_LENGTH:
            raise UnknownMessage(f"request header has {len(raw)} bytes, expected 9")
        if raw[0] != PROTOCOL_VERSION:
            raise BadVersion(f"protocol version {raw[0]}, only 1 is known")
        return cls(
            version=raw[0],
            action=raw[1],
            system=raw[2],
            root=raw[3],
            profile=raw[4],
            digest=raw[5],
            days=int.from_bytes(raw[6:8], "big"),
            keytype=raw[8],
        )


@dataclass(frozen=True)
class ResponseHeader:
    """The 4-byte response header."""

    action: int
    byte2: int = 0
    byte3: int = 0
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        for name in ("action", "byte2", "byte3", "version"):
            _byte(name, getattr(self, name))

    def encode(self) -> bytes:
        return bytes([self.version, self.action, self.byte2, self.byte3])

    @classmethod
    def decode(cls, raw: bytes) -> ResponseHeader:
        if len(raw) != RESPONSE_HEADER_LENGTH:
            raise UnknownMessage(f"response header has {len(raw)} bytes, expected 4")
        if raw[0] != PROTOCOL_VERSION:
            raise BadVersion(f"protocol version {raw[0]}, only 1 is known")
        return cls(version=raw[0], action=raw[1], byte2=raw[2], byte3=raw[3])


# -- requests --------------------------------------------------------------


@dataclass(frozen=True)
class NulRequest:
    """Keep-alive carrying the client's UTC time as ``MMDDhhmmYYYY.SS``."""

    timestamp: bytes
    kind: ClassVar[str] = "nul"

    def header(self) -> RequestHeader:
        return RequestHeader(action=ACTION_NUL, system=SYSTEM_NONE)

    def fields(self) -> tuple[bytes, bytes, bytes]:
        return (self.timestamp, b"", b"")


@dataclass(frozen=True)
class SignX509Request:
    """Sign a PKCS#10 CSR or Netscape SPKAC into an X.509 certificate."""

    csr: bytes
    subject: bytes = b""
    san: bytes = b""
    root: int = 0
    profile: int = 0
    digest: int = 0
    days: int = 0
    keytype: int = 0
    kind: ClassVar[str] = "sign-x509"

    def header(self) -> RequestHeader:
        return RequestHeader(
            action=ACTION_SIGN,
            system=SYSTEM_X509,
            root=self.root,
            profile=self.profile,
            digest=self.digest,
            days=self.days,
            keytype=self.keytype,
        )

    def fields(self) -> tuple[bytes, bytes, bytes]:
        return (self.csr, self.san, self.subject)


@dataclass(frozen=True)
class SignOpenPGPRequest:
    """Certify an OpenPGP public key (binary or armored)."""

    key: bytes
    days: int = 366
    root: int = 0
    profile: int = 0
    digest: int = 2
    keytype: int = 0
    kind: ClassVar[str] = "sign-openpgp"

    def header(self) -> RequestHeader:
        return RequestHeader(
            action=ACTION_SIGN,
            system=SYSTEM_OPENPGP,
            root=self.root,
            profile=self.profile,
            digest=self.digest,
            days=self.days,
            keytype=self.keytype,
        )

    def fields(self) -> tuple[bytes, bytes, bytes]:
        return (self.key, b"", b"")


@dataclass(frozen=True)
class RevokeRequest:
    """Revoke ``certificate`` (PEM; empty = only refresh the CRL) on ``root``.

    ``crl_sha1`` is the lowercase hex SHA-1 of the DER CRL the client holds.
    """

    crl_sha1: bytes
    certificate: bytes = b""
    root: int = 0
    days: int = 365
    profile: int = 0
    digest: int = 0
    keytype: int = 0
    kind: ClassVar[str] = "revoke"

    def header(self) -> RequestHeader:
        return RequestHeader(
            action=ACTION_REVOKE,
            system=SYSTEM_X509,
            root=self.root,
            profile=self.profile,
            digest=self.digest,
            days=self.days,
            keytype=self.keytype,
        )

    def fields(self) -> tuple[bytes, bytes, bytes]:
        return (self.certificate, b"", self.crl_sha1)


Request = Union[NulRequest, SignX509Request, SignOpenPGPRequest, RevokeRequest]


def _require_empty(kind: str, fields: dict[str, bytes]) -> None:
    for name, value in fields.items():
        if value:
            raise UnknownMessage(f"{kind} request carries {len(value)} bytes in {name}, expected none")


def decode_request_fields(strings: Sequence[bytes]) -> Request:
    """Turn the inner strings of an intact frame into a typed request."""
    if len(strings) != FIELD_COUNT:
        raise UnknownMessage(f"request has {len(strings)} strings, expected {FIELD_COUNT}")
    header = RequestHeader.decode(strings[0])
    f1, f2, f3 = strings[1], strings[2], strings[3]
    key = (header.action, header.system)
    if key == (ACTION_NUL, SYSTEM_NONE):
        if header != RequestHeader(action=ACTION_NUL, system=SYSTEM_NONE):
            raise UnknownMessage(f"NUL request with non-zero header {header.encode().hex()}")
        _require_empty("NUL", {"field2": f2, "field3": f3})
        return NulRequest(timestamp=f1)
    if key == (ACTION_SIGN, SYSTEM_X509):
        return SignX509Request(
            csr=f1,
            san=f2,
            subject=f3,
            root=header.root,
            profile=header.profile,
            digest=header.digest,
            days=header.days,
            keytype=header.keytype,
        )
    if key == (ACTION_SIGN, SYSTEM_OPENPGP):
        _require_empty("OpenPGP", {"field2": f2, "field3": f3})
        return SignOpenPGPRequest(
            key=f1,
            days=header.days,
            root=header.root,
            profile=header.profile,
            digest=header.digest,
            keytype=header.keytype,
        )
    if key == (ACTION_REVOKE, SYSTEM_X509):
        _require_empty("revoke", {"field2": f2})
        return RevokeRequest(
            certificate=f1,
            crl_sha1=f3,
            root=header.root,
            days=header.days,
            profile=header.profile,
            digest=header.digest,
            keytype=header.keytype,
        )
    raise UnknownMessage(f"unknown action {header.action} / system {header.system}")


def encode_request(request: Request) -> bytes:
    """The complete frame for ``request``."""
    return encode_frame((request.header().encode(), *request.fields()))


def decode_request(frame: bytes, max_length: int = DEFAULT_MAX_FRAME_LENGTH) -> Request:
    """Parse and decode one complete request frame."""
    return decode_request_fields(parse_frame(frame, max_length))


# -- responses -------------------------------------------------------------


@dataclass(frozen=True)
class NulResponse:
    """Answer to a NUL request: header ``01 00 00 00``, all fields empty."""

    action: ClassVar[int] = ACTION_NUL

    @property
    def payload(self) -> bytes:
        return b""


@dataclass(frozen=True)
class SignX509Response:
    """The certificate (PEM, or DER from some servers); empty = not signed."""

    certificate: bytes
    action: ClassVar[int] = ACTION_SIGN

    @property
    def payload(self) -> bytes:
        return self.certificate


@dataclass(frozen=True)
class SignOpenPGPResponse:
    """The armored key with the CA's certifications; empty = not signed."""

    key: bytes
    action: ClassVar[int] = 2  # the legacy server answers with action byte 2

    @property
    def payload(self) -> bytes:
        return self.key


@dataclass(frozen=True)
class RevokeResponse:
    """How to reach the new CRL: xdelta patch, PEM or DER CRL; empty = no help."""

    crl_update: bytes
    action: ClassVar[int] = ACTION_REVOKE

    @property
    def payload(self) -> bytes:
        return self.crl_update


Response = Union[NulResponse, SignX509Response, SignOpenPGPResponse, RevokeResponse]

_RESPONSE_FOR: dict[type, type] = {
    NulRequest: NulResponse,
    SignX509Request: SignX509Response,
    SignOpenPGPRequest: SignOpenPGPResponse,
    RevokeRequest: RevokeResponse,
}


def response_type_for(request: Request) -> type:
    """The response class that answers ``request``."""
    return _RESPONSE_FOR[type(request)]


def make_response(request: Request, payload: bytes = b"") -> Response:
    """The typed response to ``request`` carrying ``payload`` (empty = refused)."""
    kind = response_type_for(request)
    if kind is NulResponse:
        return NulResponse()
    return kind(payload)  # type: ignore[no-any-return]


def empty_response_for_header(raw_header: bytes) -> bytes:
    """The frame of an empty answer to a request we could not decode.

    Echoes the action byte when there is one, as the legacy server would.
    """
    action = raw_header[1] if len(raw_header) >= 2 else 0
    return encode_frame((ResponseHeader(action=action).encode(), b"", b"", b""))


def encode_response(response: Response) -> bytes:
    """The complete frame for ``response``."""
    header = ResponseHeader(action=response.action).encode()
    return encode_frame((header, response.payload, b"", b""))


def decode_response_fields(strings: Sequence[bytes], answering: Request) -> Response:
    """Turn the inner strings of an intact frame into the response to ``answering``.

    Like the legacy client we rely on field 1 only; the action byte is not
    checked, but the version and the shape are.
    """
    if len(strings) != FIELD_COUNT:
        raise UnknownMessage(f"response has {len(strings)} strings, expected {FIELD_COUNT}")
    ResponseHeader.decode(strings[0])
    return make_response(answering, strings[1])


def decode_response(
    frame: bytes, answering: Request, max_length: int = DEFAULT_MAX_FRAME_LENGTH
) -> Response:
    """Parse and decode one complete response frame."""
    return decode_response_fields(parse_frame(frame, max_length), answering)


# -- NUL timestamps --------------------------------------------------------


def format_nul_timestamp(moment: datetime.datetime) -> bytes:
    """``moment`` (UTC) in the ``date`` command's set-time format."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime(NUL_TIMESTAMP_FORMAT).encode("ascii")


def parse_nul_timestamp(raw: bytes) -> datetime.datetime:
    """Strictly parse ``MMDDhhmmYYYY.SS`` into an aware UTC datetime.

    Raises :class:`MessageError` on anything but 15 ASCII characters forming a
    real date.
    """
    if len(raw) != 15 or raw[12:13] != b"." or not (raw[:12] + raw[13:]).isdigit():
        raise MessageError(f"NUL timestamp {raw[:40]!r} is not MMDDhhmmYYYY.SS")
    try:
        moment = datetime.datetime.strptime(raw.decode("ascii"), NUL_TIMESTAMP_FORMAT)
    except ValueError as exc:
        raise MessageError(f"NUL timestamp {raw!r} is not a real date: {exc}") from None
    return moment.replace(tzinfo=datetime.timezone.utc)
