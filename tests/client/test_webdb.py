"""The WebDB queries on sqlite and MariaDB, and recovery from a lost MySQL connection."""

from __future__ import annotations

import pytest
import pytest_twisted

from signer.client.config import DatabaseConfig
from signer.client.webdb import REVOKE_REQUESTED, WebDB, polling_statements
from tests.client.conftest import World
from tests.support.webdb import TestWebDB


@pytest.fixture
def webdb(world: World) -> WebDB:
    return world.open_webdb()


@pytest_twisted.inlineCallbacks
def test_pending_rows_honour_markers_and_threshold(testdb: TestWebDB, webdb: WebDB, backend: str) -> None:
    """Only crt_name = '' AND csr_name != '' AND warning < threshold are pending."""
    testdb.add_cert("emailcerts", 1, 10, "/CN=pending")
    testdb.add_cert("emailcerts", 2, 10, "/CN=done", crt_name="../crt/client/0/client-2.crt")
    testdb.add_cert("emailcerts", 3, 10, "/CN=no request", csr_name="")
    testdb.add_cert("emailcerts", 4, 10, "/CN=tired", warning=3)
    testdb.add_cert("emailcerts", 5, 10, "/CN=trying", warning=2, codesign=1, keytype="NS")
    rows = yield webdb.pending_certificates("emailcerts", 3)
    assert [row.id for row in rows] == [1, 5]
    assert rows[1].codesign and rows[1].keytype == "NS" and rows[1].warning == 2
    assert rows[0].owner == 10 and rows[0].subject == "/CN=pending" and rows[0].md == "sha256"
    testdb.add_gpg(1, 10, "a@example.org")
    testdb.add_gpg(2, 10, "a@example.org", warning=3)
    gpg = yield webdb.pending_openpgp(3)
    assert [row.id for row in gpg] == [1]


@pytest_twisted.inlineCallbacks
def test_revocations_and_updates(testdb: TestWebDB, webdb: WebDB, backend: str) -> None:
    """Revocation marker selects rows; mark_revoked sets NOW() once; warnings add up."""
    testdb.add_cert("domaincerts", 1, 5, "/CN=a", crt_name="x", revoked=REVOKE_REQUESTED)
    testdb.add_cert("domaincerts", 2, 5, "/CN=b", crt_name="y")
    rows = yield webdb.pending_revocations("domaincerts")
    assert [row.id for row in rows] == [1]
    yield webdb.mark_revoked("domaincerts", 1)
    first = testdb.row("domaincerts", 1)["revoked"]
    assert first not in (REVOKE_REQUESTED, "0000-00-00 00:00:00")
    rows = yield webdb.pending_revocations("domaincerts")
    assert rows == []
    yield webdb.add_warning("domaincerts", 2)
    yield webdb.add_warning("domaincerts", 2)
    assert testdb.row("domaincerts", 2)["warning"] == 2
    yield webdb.mark_signed("domaincerts", 2, "../crt/server/0/server-2.crt", "0A1B", "2030-01-01 00:00:00")
    row = testdb.row("domaincerts", 2)
    assert (row["crt_name"], row["serial"], row["expire"]) == ("../crt/server/0/server-2.crt", "0A1B", "2030-01-01 00:00:00")


@pytest_twisted.inlineCallbacks
def test_owners_points_and_users(testdb: TestWebDB, webdb: WebDB, backend: str) -> None:
    """Owners: member, domain owner, every org admin; points exclude deleted assurances."""
    testdb.add_user(10, "a@example.org", "Ä", "de_DE")
    testdb.add_user(11, "b@example.org", "Bob", "")
    testdb.add_points(10, 30)
    testdb.add_points(10, 30, deleted="2021-01-01 00:00:00")
    testdb.add_domain(5, 11)
    testdb.add_org_admin(7, 10)
    testdb.add_org_admin(7, 11)
    points = yield webdb.assurance_points(10)
    assert points == 30
    assert (yield webdb.assurance_points(99)) == 0
    testdb.add_cert("emailcerts", 1, 10, "/CN=a")
    testdb.add_cert("domaincerts", 2, 5, "/CN=b")
    testdb.add_cert("orgemailcerts", 3, 7, "/CN=c")
    testdb.add_cert("orgdomaincerts", 4, 8, "/CN=d")
    owners = []
    for table, row_id in (("emailcerts", 1), ("domaincerts", 2), ("orgemailcerts", 3), ("orgdomaincerts", 4)):
        row = yield webdb.certificate_row(table, row_id)
        owners.append((yield webdb.owners(row)))
    assert owners == [[10], [11], [10, 11], []]
    users = yield webdb.users([11, 10, 11, 12])
    assert [(u.memid, u.fname, u.language) for u in users] == [(11, "Bob", ""), (10, "Ä", "de_DE")]


@pytest.mark.parametrize("backend", [pytest.param("mariadb", marks=pytest.mark.mariadb)])
@pytest_twisted.inlineCallbacks
def test_lost_mysql_connection_is_retried(world: World, backend: str) -> None:
    """Killing every pooled connection (as a server restart does) costs a retry, not an error."""
    webdb = world.open_webdb()
    world.db.add_cert("emailcerts", 1, 10, "/CN=a")
    rows = yield webdb.pending_certificates("emailcerts", 3)
    assert len(rows) == 1
    victims = world.db.query(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID != CONNECTION_ID()",
        (world.db.name,),
    )
    assert victims
    for (victim,) in victims:
        world.db.execute(f"KILL {int(victim)}")
    rows = yield webdb.pending_certificates("emailcerts", 3)
    assert [row.id for row in rows] == [1]
    yield webdb.add_warning("emailcerts", 1)
    assert world.db.row("emailcerts", 1)["warning"] == 1


@pytest_twisted.inlineCallbacks
def test_unreachable_database_ends_the_round_not_the_client(world: World) -> None:
    """With MySQL down, a round reports the failure and returns; nothing is raised."""
    import dataclasses

    from tests.client.conftest import with_config

    down = DatabaseConfig(driver="mysql", host="127.0.0.1", port=1, user="x", database="x", retries=1)
    with_config(world, database=down)
    jobs = world.jobs()
    jobs.webdb = WebDB.from_config(down)
    world.pools.append(jobs.webdb)
    report = yield jobs.run_round()
    assert report.aborted.startswith("database:") and world.signer.requests == []
    assert dataclasses.is_dataclass(report)


def test_polling_statements_use_parameters_only() -> None:
    """Every polling statement takes its values as parameters (no literals from data)."""
    statements = polling_statements(3)
    assert len(statements) == 9
    for sql, args in statements:
        assert sql.count("?") == len(args)
