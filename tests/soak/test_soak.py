"""The soak: nothing lost, nothing doubled, through bit flips, stalls and kill -9 of both daemons.

The short version runs in the normal suite (about 40 mixed requests over
``signer linksim`` at 921600 baud, bit flips, random stalls plus one scheduled
stall, one kill -9 and restart of each daemon). The long version (1,000
requests at 115200 baud, six kills of each daemon) runs only with
``SIGNER_SOAK=1``; ``python -m tests.soak.driver`` runs it by hand and prints
the figures (see ``docs/soak.md``).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

import pytest

import sqlite3

from tests.soak.driver import Soak, SoakResult, SoakSettings, run_soak

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")


def _split(value: str) -> tuple[int, int]:
    first, second = value.split("/")
    return int(first), int(second)


def check_guarantees(result: SoakResult, settings: SoakSettings, log: str) -> None:
    """The assertions shared by both versions (each names the guarantee)."""
    counts = result.counts
    # every guarantee the driver checks row by row (lost rows, unlogged
    # warnings, file/row/CA disagreement, missing mails, tracebacks)
    assert result.ok, result.render() + "\n" + log[-4000:]
    assert counts["lost rows"] == 0
    # the kills really happened, and the daemons never died by themselves
    assert counts["kills (server / client)"] == f"{settings.kills} / {settings.kills}", result.render()
    assert counts["daemon exits by themselves"] == 0, result.render()
    # the faults really happened
    assert counts["line: bits flipped"] > 0, result.render()
    assert counts["line: stalls"] > 0, result.render()
    # never double-issues: one certificate in the CA database per completed
    # X.509 row; an orphan (issued, never delivered) needs a kill or a lost
    # conversation, and the server's replay window answers a repeated request
    # with the certificate it already issued
    completed_x509 = int(counts["completed (x509 + openpgp)"].split("(")[1].split("+")[0])
    assert counts["CA certificates"] == completed_x509 + counts["orphans (issued, never delivered)"]
    assert counts["re-requested rows (>1 certificate issued)"] == 0, result.render()
    assert counts["orphans (issued, never delivered)"] <= 2 * settings.kills + counts[
        "client rounds ended by a link error"], result.render()
    # every poison row was given up with warnings, and nothing else was
    given_up = counts["given up with warnings (poison / other)"]
    assert given_up.startswith(f"{counts['poison rows']} ({counts['poison rows']} / 0)"), result.render()
    # revocations: all asked were done
    asked, done = _split(counts["revocations asked / done"])
    assert asked == done
    # mails: none missing; a duplicate needs a client kill after the SMTP
    # server took the mail and before its outbox file was removed
    assert counts["mails missing"] == 0
    assert counts["mails duplicated"] <= settings.kills, result.render()
    expected, received = _split(counts["mails expected / received"])
    assert received == expected + counts["mails duplicated"], result.render()
    for daemon in ("client", "server", "linksim"):
        assert counts[f"{daemon} log 'Traceback'"] == 0 and counts[f"{daemon} log 'Unhandled'"] == 0


def test_short_soak(tmp_path: Path) -> None:
    """About 40 mixed requests (four X.509 tables with SANs, OpenPGP, revocations, poison rows)
    over linksim with bit flips and stalls, one kill -9 + restart of each daemon: every row is
    completed exactly once or given up with logged warnings, one certificate per completed row in
    the CA database, one file and one mail each, no traceback in any log."""
    settings = SoakSettings(
        requests=40,
        seed=11,
        kills=1,
        flip_rate=1e-4,
        stall_rate=0.2,
        stall_ms=300.0,
        stall_at=("1.5:1.0",),
        baud=921600,
        revoke_share=0.12,
        poison_share=0.1,
        gpg_keys=3,
        timeout=120.0,
        workdir=tmp_path / "soak",
    )
    out = io.StringIO()
    soak = Soak(settings, out)
    result = soak.run()
    print(out.getvalue() + result.render())
    check_guarantees(result, settings, out.getvalue())
    assert result.counts["rows seeded"] == 40
    assert int(result.counts["poison rows"]) > 0
    assert _split(result.counts["revocations asked / done"])[0] > 0
    check_the_checker(soak)


def check_the_checker(soak: Soak) -> None:
    """The checker flags a lost row, a second certificate for one row, a missing mail, a traceback."""
    webdb = sqlite3.connect(str(soak.db_path), isolation_level=None)
    row_id, crt_name = webdb.execute(
        "SELECT id, crt_name FROM emailcerts WHERE crt_name != '' AND revoked = '0000-00-00 00:00:00'"
        " ORDER BY id LIMIT 1").fetchone()
    webdb.execute("UPDATE emailcerts SET crt_name = '' WHERE id = ?", (row_id,))
    assert any(p.startswith(f"emailcerts {row_id}: LOST (not completed") for p in soak.recheck().problems)
    webdb.execute("UPDATE emailcerts SET crt_name = ? WHERE id = ?", (crt_name, row_id))
    webdb.close()
    assert soak.recheck().ok

    ca = sqlite3.connect(str(soak.signer / "data" / "ca.sqlite3"), isolation_level=None)
    ca.execute("CREATE TEMP TABLE copy AS SELECT * FROM certificates LIMIT 1")
    ca.execute("UPDATE copy SET serial = '00' || substr(serial, 3)")
    ca.execute("INSERT INTO certificates SELECT * FROM copy")
    rechecked = soak.recheck()
    assert any("2 certificates issued for one request row" in p for p in rechecked.problems), rechecked.render()
    assert rechecked.counts["orphans (issued, never delivered)"] == 1
    ca.execute("DELETE FROM certificates WHERE serial IN (SELECT serial FROM copy)")
    ca.close()

    mail = soak.sink.mails.pop(0)
    assert any("mail" in p for p in soak.recheck().problems)
    soak.sink.mails.insert(0, mail)

    assert soak.client is not None
    with soak.client.log.open("a") as log:
        log.write("Traceback (most recent call last):\n")
    assert "client log has 1 'Traceback'" in soak.recheck().problems


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SIGNER_SOAK") != "1", reason="the long soak runs with SIGNER_SOAK=1")
def test_long_soak(tmp_path: Path) -> None:
    """1,000 mixed requests at 115200 baud with bit flips (1e-5 per byte), random stalls and six
    kill -9 restarts of each daemon: the same guarantees as the short soak."""
    settings = SoakSettings(
        requests=int(os.environ.get("SIGNER_SOAK_REQUESTS", "1000")),
        seed=int(os.environ.get("SIGNER_SOAK_SEED", "1")),
        kills=6,
        flip_rate=1e-5,
        baud=115200,
        timeout=3600.0,
        workdir=tmp_path / "soak",
    )
    result = run_soak(settings, sys.stdout)
    print(result.render())
    check_guarantees(result, settings, "")
