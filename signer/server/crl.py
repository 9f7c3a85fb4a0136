"""CRL production for one root, fast enough for a million entries.

``cryptography``'s ``CertificateRevocationListBuilder`` is quadratic when fed
entry by entry and still re-encodes every entry on every CRL when fed all at
once. A CA that revokes one certificate at a time can do better: the
revokedCertificates entries are DER-encoded once, kept sorted by serial in one
``bytearray`` (:class:`RevokedList`), and a new CRL is that byte string with a
fresh header and extensions around it, signed. One more revocation is a binary
search, one ``memmove`` and one signature (:class:`CrlSigner` assembles the
TBSCertList by hand).

Entry order is serial order, so two consecutive CRLs differ only in the new
entry, the header times, the CRL number and the signature: xdelta patches stay
tiny. Entries whose certificate expired more than the configured grace before
thisUpdate are left out (RFC 5280, 3.3 allows it).

:class:`RootCrl` ties it to the CA database: it loads the revoked entries of
one root at start (or whenever the database has moved on without it), takes
new revocations incrementally and stores every produced CRL in the history.
Everything here blocks; the server runs it in a thread.
"""

from __future__ import annotations

import array
import base64
import bisect
import datetime
import hashlib
import time
from dataclasses import dataclass
from typing import Any, Iterable, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from signer.server.cadb import (
    MAX_SERIAL,
    REASON_CODES,
    CADatabase,
    RevokedEntry,
    check_reason,
    epoch,
    from_epoch,
)

SigningKey = Union[
    rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey
]

DEFAULT_LIFETIME = datetime.timedelta(days=7)
DEFAULT_GRACE = datetime.timedelta(days=90)

_KEY_WIDTH = 20  # serials are at most 160 bits: fixed-width big-endian sorts numerically


class CrlError(Exception):
    """A CRL cannot be produced with this material (unsupported key or digest...)."""


# -- DER ---------------------------------------------------------------------


def der_length(length: int) -> bytes:
    """The DER length octets of ``length``."""
    if length < 0x80:
        return bytes((length,))
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def der_tlv(tag: int, content: bytes) -> bytes:
    """A DER element with a one-byte ``tag``."""
    return bytes((tag,)) + der_length(len(content)) + content


def der_integer(value: int) -> bytes:
    """A DER INTEGER (any sign)."""
    size = (value.bit_length() + 8) // 8  # room for the sign bit
    return der_tlv(0x02, value.to_bytes(size, "big", signed=True))


def der_oid(dotted: str) -> bytes:
    """A DER OBJECT IDENTIFIER from its dotted form."""
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray((40 * arcs[0] + arcs[1],))
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return der_tlv(0x06, bytes(body))


_DAY_PREFIXES: dict[int, bytes] = {}


def _day_prefix(day: int) -> bytes:
    """Tag, length and date digits of the Time of a day (cached: entries share days)."""
    prefix = _DAY_PREFIXES.get(day)
    if prefix is None:
        moment = time.gmtime(day * 86400)
        if 1950 <= moment.tm_year < 2050:
            prefix = b"\x17\x0d" + time.strftime("%y%m%d", moment).encode("ascii")
        else:
            prefix = b"\x18\x0f" + f"{moment.tm_year:04d}".encode("ascii") + time.strftime(
                "%m%d", moment
            ).encode("ascii")
        if len(_DAY_PREFIXES) < 100000:
            _DAY_PREFIXES[day] = prefix
    return prefix


def der_time(seconds: int) -> bytes:
    """An X.509 Time: UTCTime for 1950-2049, GeneralizedTime otherwise (RFC 5280)."""
    day, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return _day_prefix(day) + b"%02d%02d%02dZ" % (hours, minutes, secs)


def encode_entry(serial: int, revoked_at: int, reason: str | None = None) -> bytes:
    """One revokedCertificates entry: serial, revocationDate, [reasonCode].

    ``serial`` must be positive and at most 160 bits (the entry then stays
    below 128 bytes, so every length fits one octet). ``unspecified`` is left
    out, as RFC 5280 5.3.1 asks.
    """
    size = (serial.bit_length() + 8) // 8  # room for the sign bit
    when = der_time(revoked_at)
    if reason is None or reason == "unspecified":
        return bytes((0x30, 2 + size + len(when), 0x02, size)) + serial.to_bytes(size, "big") + when
    extensions = _REASON_EXTENSIONS[reason]
    return (
        bytes((0x30, 2 + size + len(when) + len(extensions), 0x02, size))
        + serial.to_bytes(size, "big")
        + when
        + extensions
    )


_OID_REASON = der_oid("2.5.29.21")
#: crlEntryExtensions holding only a reasonCode, per reason name.
_REASON_EXTENSIONS = {
    name: der_tlv(0x30, der_tlv(0x30, _OID_REASON + der_tlv(0x04, bytes((0x0A, 0x01, code)))))
    for name, code in REASON_CODES.items()
}
_OID_CRL_NUMBER = der_oid("2.5.29.20")
_OID_AKI = der_oid("2.5.29.35")
_DER_NULL = b"\x05\x00"

_RSA_OIDS = {
    "sha1": "1.2.840.113549.1.1.5",
    "sha224": "1.2.840.113549.1.1.14",
    "sha256": "1.2.840.113549.1.1.11",
    "sha384": "1.2.840.113549.1.1.12",
    "sha512": "1.2.840.113549.1.1.13",
}
_ECDSA_OIDS = {
    "sha1": "1.2.840.10045.4.1",
    "sha224": "1.2.840.10045.4.3.1",
    "sha256": "1.2.840.10045.4.3.2",
    "sha384": "1.2.840.10045.4.3.3",
    "sha512": "1.2.840.10045.4.3.4",
}


# -- the sorted entries ------------------------------------------------------


class _Keys:
    """The fixed-width serial keys of a bytearray as a sequence for :mod:`bisect`."""

    __slots__ = ("_data",)

    def __init__(self, data: bytearray) -> None:
        self._data = data

    def __len__(self) -> int:
        return len(self._data) // _KEY_WIDTH

    def __getitem__(self, index: int) -> bytes:
        start = index * _KEY_WIDTH
        return bytes(self._data[start : start + _KEY_WIDTH])


def _serial_key(serial: int) -> bytes:
    if not 0 < serial <= MAX_SERIAL:
        raise CrlError(f"serial {serial:#x} is not a positive number of at most 160 bits")
    return serial.to_bytes(_KEY_WIDTH, "big")


class RevokedList:
    """DER-encoded CRL entries sorted by serial, without a Python object per entry.

    Four parallel flat arrays: serial keys (20 bytes each), the concatenated
    entries, each entry's length (entries are shorter than 128 bytes) and each
    certificate's notAfter. About 70 bytes per entry in all.
    """

    def __init__(self) -> None:
        self._keys = bytearray()
        self._entries = bytearray()
        self._lengths = bytearray()
        self._not_after = array.array("q")
        self._earliest: int | None = None

    def __len__(self) -> int:
        return len(self._lengths)

    @property
    def nbytes(self) -> int:
        """Size of the encoded entries (the revokedCertificates content)."""
        return len(self._entries)

    def _find(self, key: bytes) -> tuple[int, bool]:
        index = bisect.bisect_left(_Keys(self._keys), key)
        start = index * _KEY_WIDTH
        return index, self._keys[start : start + _KEY_WIDTH] == key

    def __contains__(self, serial: object) -> bool:
        return isinstance(serial, int) and 0 < serial <= MAX_SERIAL and self._find(
            _serial_key(serial)
        )[1]

    def add(self, serial: int, revoked_at: int, not_after: int, reason: str | None = None) -> bool:
        """Inserts an entry in serial order; False (and no change) when present."""
        key = _serial_key(serial)
        check_reason(reason)
        index, present = self._find(key)
        if present:
            return False
        entry = encode_entry(serial, revoked_at, reason)
        offset = sum(memoryview(self._lengths)[:index])
        self._keys[index * _KEY_WIDTH : index * _KEY_WIDTH] = key
        self._entries[offset:offset] = entry
        self._lengths.insert(index, len(entry))
        self._not_after.insert(index, not_after)
        if self._earliest is None or not_after < self._earliest:
            self._earliest = not_after
        return True

    def extend_sorted(self, entries: Iterable[RevokedEntry]) -> int:
        """Appends entries given in strictly increasing serial order (a bulk load)."""
        keys, data, lengths, not_afters = self._keys, self._entries, self._lengths, self._not_after
        last = keys[-_KEY_WIDTH:] if keys else b""
        earliest = self._earliest
        count = 0
        for serial, revoked_at, not_after, reason in entries:
            key = _serial_key(serial)
            if key <= last:
                raise CrlError(f"entries out of serial order at {serial:#x}")
            entry = encode_entry(serial, revoked_at, reason)
            keys += key
            data += entry
            lengths.append(len(entry))
            not_afters.append(not_after)
            if earliest is None or not_after < earliest:
                earliest = not_after
            last = key
            count += 1
        self._earliest = earliest
        return count

    def extend_sorted_raw(self, batches: Iterable[list[tuple[str, int, int, str | None]]]) -> int:
        """Like :meth:`extend_sorted` for rows as the database stores them
        (:meth:`RevokedEntries.raw_batches`): serials as 40 hex digits, which
        are the sort keys already. About twice as fast for a big start-up load."""
        keys, data, lengths, not_afters = self._keys, self._entries, self._lengths, self._not_after
        last = bytes(keys[-_KEY_WIDTH:]) if keys else b""
        earliest = self._earliest
        count = 0
        reasons = _REASON_EXTENSIONS
        for batch in batches:
            for serial_hex, revoked_at, not_after, reason in batch:
                key = bytes.fromhex(serial_hex)
                if len(key) != _KEY_WIDTH or key <= last:
                    raise CrlError(f"bad or out-of-order serial {serial_hex}")
                content = key.lstrip(b"\x00")
                if not content:
                    raise CrlError("serial 0 cannot be listed")
                if content[0] & 0x80:
                    content = b"\x00" + content
                when = der_time(revoked_at)
                extensions = b"" if reason is None or reason == "unspecified" else reasons[reason]
                size = len(content)
                entry = (
                    bytes((0x30, 2 + size + len(when) + len(extensions), 0x02, size))
                    + content
                    + when
                    + extensions
                )
                keys += key
                data += entry
                lengths.append(len(entry))
                not_afters.append(not_after)
                if earliest is None or not_after < earliest:
                    earliest = not_after
                last = key
                count += 1
        self._earliest = earliest
        return count

    def drop_expired(self, cutoff: int) -> int:
        """Removes entries whose notAfter lies before ``cutoff``; returns how many."""
        if self._earliest is None or self._earliest >= cutoff:
            return 0
        doomed = [index for index, not_after in enumerate(self._not_after) if not_after < cutoff]
        keys, data = bytearray(), bytearray()
        lengths, not_afters = bytearray(), array.array("q")
        previous, offset = 0, 0
        lengths_view = memoryview(self._lengths)
        for index in doomed:
            span = sum(lengths_view[previous:index])
            keys += self._keys[previous * _KEY_WIDTH : index * _KEY_WIDTH]
            data += self._entries[offset : offset + span]
            lengths += self._lengths[previous:index]
            not_afters.extend(self._not_after[previous:index])
            offset += span + self._lengths[index]
            previous = index + 1
        keys += self._keys[previous * _KEY_WIDTH :]
        data += self._entries[offset:]
        lengths += self._lengths[previous:]
        not_afters.extend(self._not_after[previous:])
        lengths_view.release()
        self._keys, self._entries, self._lengths, self._not_after = keys, data, lengths, not_afters
        self._earliest = min(not_afters) if not_afters else None
        return len(doomed)

    def serials(self) -> list[int]:
        """The serials, in order (for tests and tools)."""
        return [
            int.from_bytes(self._keys[i : i + _KEY_WIDTH], "big")
            for i in range(0, len(self._keys), _KEY_WIDTH)
        ]

    def encoded(self) -> memoryview:
        """A read-only view of the concatenated entries (valid until the next change)."""
        return memoryview(self._entries).toreadonly()


# -- signing -----------------------------------------------------------------


def _digest_name(digest: hashes.HashAlgorithm | str | None) -> str | None:
    if digest is None:
        return None
    return (digest if isinstance(digest, str) else digest.name).lower().replace("-", "")


class CrlSigner:
    """Assembles and signs CertificateLists for one CA (certificate + key)."""

    def __init__(
        self,
        certificate: x509.Certificate,
        key: SigningKey,
        digest: hashes.HashAlgorithm | str | None = "sha256",
    ) -> None:
        self.certificate = certificate
        self._key = key
        name = _digest_name(digest) or "sha256"
        self._hash: hashes.HashAlgorithm | None
        if isinstance(key, rsa.RSAPrivateKey):
            oid = _RSA_OIDS.get(name)
            self._algorithm = der_tlv(0x30, der_oid(oid) + _DER_NULL) if oid else b""
            self._hash = _hash_of(name)
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            oid = _ECDSA_OIDS.get(name)
            self._algorithm = der_tlv(0x30, der_oid(oid)) if oid else b""
            self._hash = _hash_of(name)
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            oid, self._hash = "1.3.101.112", None
            self._algorithm = der_tlv(0x30, der_oid(oid))
        elif isinstance(key, ed448.Ed448PrivateKey):
            oid, self._hash = "1.3.101.113", None
            self._algorithm = der_tlv(0x30, der_oid(oid))
        else:
            raise CrlError(f"cannot sign CRLs with a {type(key).__name__}")
        if not self._algorithm:
            raise CrlError(f"cannot sign CRLs with digest {name!r}")
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        ca_public = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if public != ca_public:
            raise CrlError("the private key does not belong to the CA certificate")
        self._issuer = certificate.subject.public_bytes()
        try:
            ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(
                certificate.public_key()  # type: ignore[arg-type]
            )
        self._aki_extension = der_tlv(0x30, _OID_AKI + der_tlv(0x04, aki.public_bytes()))

    def _signature(self, parts: list[bytes | bytearray | memoryview]) -> bytes:
        """The signature over the concatenation of ``parts``, without concatenating.

        RSA and ECDSA sign a digest computed piece by piece (``Prehashed``),
        which gives the same signature as signing the joined bytes; EdDSA
        needs the message in one piece.
        """
        key = self._key
        if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            assert self._hash is not None
            digest = hashlib.new(self._hash.name)
            for part in parts:
                digest.update(part)
            prehashed = Prehashed(self._hash)
            if isinstance(key, rsa.RSAPrivateKey):
                return key.sign(digest.digest(), padding.PKCS1v15(), prehashed)
            return key.sign(digest.digest(), ec.ECDSA(prehashed))
        return key.sign(b"".join(parts))

    def sign(
        self,
        entries: bytes | bytearray | memoryview,
        crl_number: int,
        this_update: int,
        next_update: int,
    ) -> bytes:
        """The DER CertificateList around the encoded ``entries`` (times in epoch seconds).

        The entries are copied once, into the result.
        """
        extensions = self._aki_extension + der_tlv(
            0x30, _OID_CRL_NUMBER + der_tlv(0x04, der_integer(crl_number))
        )
        head = (
            b"\x02\x01\x01"  # version v2
            + self._algorithm
            + self._issuer
            + der_time(this_update)
            + der_time(next_update)
        )
        entry_count = len(entries)
        revoked_head = b"\x30" + der_length(entry_count) if entry_count else b""
        tail = der_tlv(0xA0, der_tlv(0x30, extensions))
        tbs_length = len(head) + len(revoked_head) + entry_count + len(tail)
        tbs: list[bytes | bytearray | memoryview] = [
            b"\x30" + der_length(tbs_length),
            head,
            revoked_head,
            entries,
            tail,
        ]
        signature = der_tlv(0x03, b"\x00" + self._signature(tbs))
        body_length = len(tbs[0]) + tbs_length + len(self._algorithm) + len(signature)
        return b"".join([b"\x30" + der_length(body_length), *tbs, self._algorithm, signature])


def _hash_of(name: str) -> hashes.HashAlgorithm:
    algorithms: dict[str, type[hashes.HashAlgorithm]] = {
        "sha1": hashes.SHA1,
        "sha224": hashes.SHA224,
        "sha256": hashes.SHA256,
        "sha384": hashes.SHA384,
        "sha512": hashes.SHA512,
    }
    try:
        return algorithms[name]()
    except KeyError:
        raise CrlError(f"cannot sign CRLs with digest {name!r}") from None


def signer_for(root: Any, digest: hashes.HashAlgorithm | str | None = None) -> CrlSigner:
    """A :class:`CrlSigner` from a root given as (certificate, key) or an object.

    Objects are read through ``certificate`` and ``private_key`` (or ``key``),
    and ``digest`` / ``default_digest`` / ``config.default_digest`` when
    present (a hash or its name): :class:`signer.server.config.LoadedRoot` fits.
    """
    if isinstance(root, CrlSigner):
        return root
    if isinstance(root, tuple):
        certificate, key = root[0], root[1]
        if digest is None and len(root) > 2:
            digest = root[2]
    else:
        certificate = root.certificate
        key = getattr(root, "private_key", None) or getattr(root, "key")
        if digest is None:
            digest = (
                getattr(root, "digest", None)
                or getattr(root, "default_digest", None)
                or getattr(getattr(root, "config", None), "default_digest", None)
            )
    return CrlSigner(certificate, key, digest or "sha256")


# -- one root's CRL ------------------------------------------------------------


@dataclass(frozen=True)
class ProducedCrl:
    """A CRL just made and stored in the history."""

    root: int
    crl_number: int
    der: bytes
    sha1: str
    this_update: datetime.datetime
    next_update: datetime.datetime
    entries: int

    def pem(self) -> bytes:
        """The CRL in PEM (``-----BEGIN X509 CRL-----``)."""
        return der_to_pem(self.der)


_PEM_HEADER = b"-----BEGIN X509 CRL-----\n"
_PEM_FOOTER = b"-----END X509 CRL-----\n"


def pem_length(der_length: int) -> int:
    """The size of :func:`der_to_pem` of a DER CRL of ``der_length`` bytes."""
    text = 4 * ((der_length + 2) // 3)
    return len(_PEM_HEADER) + text + (text + 63) // 64 + len(_PEM_FOOTER)


def der_to_pem(der: bytes | bytearray | memoryview) -> bytes:
    """PEM armour for a DER CRL, 64 base64 characters a line (RFC 7468).

    Written column by column with extended slices: no Python object per line,
    which matters for a 30 MB CRL (700,000 lines).
    """
    text = base64.b64encode(der)
    full, rest = divmod(len(text), 64)
    start = len(_PEM_HEADER)
    out = bytearray(pem_length(len(der)))
    out[:start] = _PEM_HEADER
    body_end = start + full * 65
    for column in range(64):
        out[start + column : body_end : 65] = text[column : full * 64 : 64]
    out[start + 64 : body_end : 65] = b"\n" * full
    if rest:
        out[body_end : body_end + rest] = text[full * 64 :]
        out[body_end + rest] = 0x0A
        body_end += rest + 1
    del text
    out[body_end:] = _PEM_FOOTER
    return bytes(out)


class RootCrl:
    """The CRL state of one root: its entries in memory, its history in the database.

    Not thread-safe: the owner serialises calls (the revocation service holds
    one lock per service).
    """

    def __init__(
        self,
        db: CADatabase,
        root: int,
        signer: CrlSigner,
        *,
        lifetime: datetime.timedelta = DEFAULT_LIFETIME,
        grace: datetime.timedelta | None = DEFAULT_GRACE,
    ) -> None:
        if lifetime <= datetime.timedelta(0):
            raise CrlError("the CRL lifetime must be positive")
        if grace is not None and grace < datetime.timedelta(0):
            raise CrlError("the expired-entry grace must not be negative")
        self.db = db
        self.root = root
        self.signer = signer
        self.lifetime = lifetime
        self.grace = grace
        self.entries = RevokedList()
        self.generation: int | None = None  # database revocation generation mirrored

    def _cutoff(self, now: int) -> int | None:
        """Entries whose notAfter lies before this are left out (None: keep all)."""
        return None if self.grace is None else now - int(self.grace.total_seconds())

    def load(self, now: datetime.datetime) -> None:
        """Rebuilds the entries from the database (entries expired past the grace left out)."""
        cutoff = self._cutoff(epoch(now))
        fresh = RevokedList()
        floor = None if cutoff is None else cutoff - 1
        with self.db.revoked_entries(self.root, not_after_after=floor) as snapshot:
            fresh.extend_sorted_raw(snapshot.raw_batches())
            generation = snapshot.generation
        self.entries = fresh
        self.generation = generation

    def ensure_current(self, now: datetime.datetime) -> bool:
        """Reloads when the database has revocations this cache has not seen; True if it did."""
        if self.generation is None or self.db.revocation_generation(self.root) != self.generation:
            self.load(now)
            return True
        return False

    def revoke(
        self,
        serial: int,
        when: datetime.datetime,
        *,
        reason: str | None = None,
        certificate: x509.Certificate | None = None,
        not_after: datetime.datetime | None = None,
    ) -> bool:
        """Marks ``serial`` revoked in the database and in memory; True if it already was.

        ``certificate`` records a serial the database does not know yet (see
        :meth:`CADatabase.mark_revoked`). ``not_after`` is needed only when
        neither the database nor ``certificate`` can tell it.
        """
        when = when.replace(microsecond=0)
        self.ensure_current(when)
        already = self.db.mark_revoked(
            self.root, serial, when, reason=reason, certificate=certificate
        )
        if already:
            return True
        if certificate is not None and not_after is None:
            not_after = certificate.not_valid_after_utc
        if not_after is None:
            record = self.db.get_certificate(self.root, serial)
            assert record is not None
            not_after = record.not_after
        self.entries.add(serial, epoch(when), epoch(not_after), reason)
        assert self.generation is not None
        self.generation += 1
        return False

    def produce(self, now: datetime.datetime, keep: int | None = None) -> ProducedCrl:
        """Makes, stores and returns a fresh CRL (next CRL number, thisUpdate = ``now``).

        With ``keep``, the stored history is pruned to that many CRLs.
        """
        produced = self.make(now)
        self.store(produced, now, keep)
        return produced

    def make(self, now: datetime.datetime) -> ProducedCrl:
        """Makes a fresh CRL (its number is allocated, the CRL not yet stored)."""
        self.ensure_current(now)
        this_update = epoch(now)
        next_update = this_update + int(self.lifetime.total_seconds())
        cutoff = self._cutoff(this_update)
        if cutoff is not None:
            self.entries.drop_expired(cutoff)
        number = self.db.next_crl_number(self.root)
        with self.entries.encoded() as entries:
            der = self.signer.sign(entries, number, this_update, next_update)
        return ProducedCrl(
            root=self.root,
            crl_number=number,
            der=der,
            sha1=hashlib.sha1(der).hexdigest(),
            this_update=from_epoch(this_update),
            next_update=from_epoch(next_update),
            entries=len(self.entries),
        )

    def store(self, produced: ProducedCrl, now: datetime.datetime, keep: int | None = None) -> None:
        """Keeps ``produced`` in the history (pruned to ``keep`` CRLs when given).

        Safe to run in another thread while the next CRL is not being made.
        """
        self.db.store_crl(
            self.root,
            produced.crl_number,
            produced.sha1,
            produced.der,
            produced.this_update,
            now,
            keep=keep,
        )


__all__ = [
    "CrlError",
    "CrlSigner",
    "DEFAULT_GRACE",
    "DEFAULT_LIFETIME",
    "ProducedCrl",
    "RevokedList",
    "RootCrl",
    "der_to_pem",
    "encode_entry",
    "signer_for",
]
