"""A minimal signer peer for the CLI tests, run in its own process.

``python -m tests.cli.fake_signer --device PATH [--answer FILE] [--log FILE]``

It is written independently of :mod:`signer.protocol.link` (plain blocking
reads on the device, like the legacy ``server.pl``), so the CLI is tested
against a second implementation of the wire contract, not against itself:
START -> ACK, frame -> ACK (NAK when damaged), then START, wait ACK, send
the answer frame, wait ACK. Every request is decoded with the codec and
appended to ``--log`` as one JSON line; the answer's field 1 is the content
of ``--answer`` (empty when omitted: the signer "refuses"). NUL requests
always get the empty NUL answer. It serves until killed.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import termios
import tty
from pathlib import Path

from signer.protocol import codec

WAIT = 10.0


class Line:
    """Blocking byte-level access to the device with timeouts."""

    def __init__(self, device: str) -> None:
        self.fd = os.open(device, os.O_RDWR | os.O_NOCTTY)
        if os.isatty(self.fd):
            tty.setraw(self.fd, termios.TCSANOW)
            termios.tcflush(self.fd, termios.TCIOFLUSH)
        self.pending = bytearray()

    def read(self, timeout: float = WAIT) -> bytes:
        if self.pending:
            data, self.pending = bytes(self.pending), bytearray()
            return data
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            raise TimeoutError("peer silent")
        data = os.read(self.fd, 65536)
        if not data:
            raise EOFError("device closed")
        return data

    def unread(self, data: bytes) -> None:
        self.pending[:0] = data

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def wait_for(self, byte: int, timeout: float = WAIT) -> None:
        while True:
            data = self.read(timeout)
            where = data.find(bytes([byte]))
            if where >= 0:
                self.unread(data[where + 1 :])
                return

    def read_frame(self) -> bytes:
        buffer = codec.FrameBuffer()
        while True:
            frame, excess = buffer.feed(self.read())
            if frame is not None:
                self.unread(excess)
                return frame


def serve(line: Line, answer: bytes, log: Path | None) -> None:
    """Answer requests until the process is killed."""
    while True:
        try:
            line.wait_for(codec.START, timeout=3600)
            line.write(bytes([codec.ACK]))
            while True:
                frame = line.read_frame()
                try:
                    request = codec.decode_request(frame)
                except codec.FrameError:
                    line.write(bytes([codec.NAK]))
                    continue
                break
            line.write(bytes([codec.ACK]))
            if log is not None:
                header = request.header()
                entry = {
                    "kind": request.kind,
                    "header": header.encode().hex(),
                    "fields": [field.hex() for field in request.fields()],
                }
                with log.open("a") as out:
                    out.write(json.dumps(entry) + "\n")
            reply = codec.encode_response(codec.make_response(request, answer))
            line.write(bytes([codec.START]))
            line.wait_for(codec.ACK)
            line.write(reply)
            line.wait_for(codec.ACK)
        except (TimeoutError, codec.CodecError) as exc:
            print(f"fake signer: exchange abandoned: {exc}", file=sys.stderr, flush=True)
            line.pending.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", required=True)
    parser.add_argument("--answer", help="file whose bytes are every answer's field 1")
    parser.add_argument("--log", help="append each decoded request here as JSON")
    args = parser.parse_args()
    answer = Path(args.answer).read_bytes() if args.answer else b""
    line = Line(args.device)
    print("fake signer ready", flush=True)
    try:
        serve(line, answer, Path(args.log) if args.log else None)
    except (EOFError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
