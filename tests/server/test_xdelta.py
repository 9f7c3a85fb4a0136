"""xdelta 1 through the real /usr/bin/xdelta: the legacy vectors and our own deltas."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from signer.server.xdelta import PATCH_MAGIC, XdeltaError, apply_patch, make_delta
from tests.support.crl_fixtures import XDELTA, xdelta_patch_cli

pytestmark = pytest.mark.skipif(not os.access(XDELTA, os.X_OK), reason="needs xdelta 1.1.3")

VECTOR_NAMES = [
    "05_revoke_root0_delta",
    "06_crl_refresh_root1_delta",
    "08_revoke_root0_delta",
    "11_revoke_root1_delta",
]


def load_vector(vectors_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((vectors_dir / f"{name}.json").read_text())


def crl_pair(vector: dict[str, Any]) -> tuple[bytes, bytes]:
    crl = vector["crl"]
    return bytes.fromhex(crl["old_crl_der_hex"]), bytes.fromhex(crl["new_crl_der_hex"])


def response_field1(vector: dict[str, Any]) -> bytes:
    field = vector["response"]["fields"][0]
    return bytes.fromhex(field["hex"]) if "hex" in field else field.get("text", "").encode()


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary files of this test go to its own folder (to check clean-up)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", VECTOR_NAMES)
@pytest_twisted.ensureDeferred
async def test_legacy_patches_apply(vectors_dir: Path, name: str) -> None:
    """The legacy server's patches turn the recorded old CRL into the recorded new one."""
    from twisted.internet import reactor

    vector = load_vector(vectors_dir, name)
    old, new = crl_pair(vector)
    patch = response_field1(vector)
    assert patch.startswith(PATCH_MAGIC)
    result = await apply_patch(reactor, old, patch)
    assert result == new
    assert hashlib.sha1(result).hexdigest() == vector["crl"]["new_crl_sha1"]


@pytest.mark.parametrize("name", VECTOR_NAMES)
@pytest_twisted.ensureDeferred
async def test_our_delta_works_with_xdelta_patch(vectors_dir: Path, name: str) -> None:
    """Our delta between the recorded CRLs, fed to `xdelta patch` as the legacy client does,
    gives exactly the new CRL."""
    from twisted.internet import reactor

    old, new = crl_pair(load_vector(vectors_dir, name))
    patch = await make_delta(reactor, old, new)
    assert patch.startswith(PATCH_MAGIC)
    assert xdelta_patch_cli(patch, old) == new
    assert await apply_patch(reactor, old, patch) == new


@pytest_twisted.ensureDeferred
async def test_identical_files(private_tmp: Path) -> None:
    """A delta between identical files (xdelta exits 1 there too) is still a valid patch."""
    from twisted.internet import reactor

    data = os.urandom(5000)
    patch = await make_delta(reactor, data, data)
    assert await apply_patch(reactor, data, patch) == data
    assert list(private_tmp.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_large_files_with_one_insertion() -> None:
    """A 4 MB file with 40 bytes inserted in the middle yields a patch of well under 1 kB."""
    from twisted.internet import reactor

    old = os.urandom(4 * 1024 * 1024)
    middle = len(old) // 2
    new = old[:middle] + os.urandom(40) + old[middle:]
    patch = await make_delta(reactor, old, new)
    assert len(patch) < 1024
    assert await apply_patch(reactor, old, patch) == new


@pytest_twisted.ensureDeferred
async def test_patch_for_another_file_refused(vectors_dir: Path, private_tmp: Path) -> None:
    """A patch applied to a file it was not made for fails with XdeltaError (MD5 check)."""
    from twisted.internet import reactor

    vector = load_vector(vectors_dir, "05_revoke_root0_delta")
    old, new = crl_pair(vector)
    with pytest.raises(XdeltaError, match="status 2"):
        await apply_patch(reactor, new, response_field1(vector))
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize(
    "garbage",
    [b"", b"0\x82\x02\xcd not a patch", PATCH_MAGIC + b"\x00" * 64, PATCH_MAGIC],
)
@pytest_twisted.ensureDeferred
async def test_garbage_patch_refused(garbage: bytes) -> None:
    """Anything that is not a valid patch fails with XdeltaError."""
    from twisted.internet import reactor

    with pytest.raises(XdeltaError):
        await apply_patch(reactor, b"old file", garbage)


@pytest_twisted.ensureDeferred
async def test_missing_tool(private_tmp: Path) -> None:
    """A missing xdelta binary is an XdeltaError, not a crash, and leaves no files."""
    from twisted.internet import reactor

    with pytest.raises(XdeltaError, match="no executable xdelta"):
        await make_delta(reactor, b"a", b"b", executable=str(private_tmp / "no-such-xdelta"))
    assert list(private_tmp.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_hanging_tool_is_killed(private_tmp: Path) -> None:
    """A tool that never ends is killed after the timeout and reported as XdeltaError."""
    from twisted.internet import reactor

    hanging = private_tmp / "hanging-xdelta"
    hanging.write_text("#!/bin/sh\nexec sleep 60\n")
    hanging.chmod(0o755)
    with pytest.raises(XdeltaError, match="killed"):
        await make_delta(reactor, b"a", b"b", executable=str(hanging), timeout=0.2)
    assert [path.name for path in private_tmp.iterdir()] == ["hanging-xdelta"]
