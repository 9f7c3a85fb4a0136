"""The shipped WebDB schema creates a database the client's queries run on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from signer.client.schema import create_sqlite_webdb


def test_create_sqlite_webdb_has_every_table_and_index(tmp_path: Path) -> None:
    """All nine tables exist, with the crt_name and revoked indexes of the certificate tables."""
    path = tmp_path / "webdb.sqlite"
    create_sqlite_webdb(path)
    connection = sqlite3.connect(path)
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    indexes = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"emailcerts", "domaincerts", "orgemailcerts", "orgdomaincerts", "gpg",
            "domains", "org", "users", "notary"} <= tables
    for table in ("emailcerts", "domaincerts", "orgemailcerts", "orgdomaincerts"):
        assert {f"{table}_crt_name", f"{table}_revoked"} <= indexes
    plan = connection.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM emailcerts WHERE crt_name = '' AND csr_name != ''"
    ).fetchall()
    assert any("emailcerts_crt_name" in str(step) for step in plan)


def test_create_sqlite_webdb_refuses_an_existing_file(tmp_path: Path) -> None:
    """An existing database is never overwritten."""
    path = tmp_path / "webdb.sqlite"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        create_sqlite_webdb(path)
    assert path.read_bytes() == b"precious"
