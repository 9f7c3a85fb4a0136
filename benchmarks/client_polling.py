"""Cost of one idle polling round of the client against a big MariaDB WebDB.

Usage (from the repository root)::

    .venv/bin/python benchmarks/client_polling.py [--rows 1000000] [--gpg-rows 1000000]
        [--rounds 30] [--keep]

Creates a throw-away database on MariaDB (127.0.0.1:3306, root; see
``tests/support/webdb.py`` for the environment variables) with the WebDB
schema of the tests (MyISAM, the ``crt_name`` and ``revoked`` indexes), fills
each of the four certificate tables with ``--rows`` issued certificates
(a few revoked long ago, none pending) and ``gpg`` with ``--gpg-rows`` signed
keys, then:

1. prints the ``EXPLAIN`` of every statement an idle round runs;
2. runs ``--rounds`` idle polling rounds of the real :class:`Jobs` (no CRL
   check round, NUL answered at once by an in-memory requester, so the figure
   is the client's own cost: nine queries through adbapi/PyMySQL plus the
   keep-alive) and prints median, p90, min and max in milliseconds, after
   the median time of each statement run directly;
3. drops the database (unless ``--keep``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FILL = {
    "emailcerts": ("memid", "client", "CONCAT('/CN=Member ', seq, '/emailAddress=m', seq, '@example.org')"),
    "domaincerts": ("domid", "server", "CONCAT('/CN=www', seq, '.example.org')"),
    "orgemailcerts": ("orgid", "orgclient", "CONCAT('/CN=Org Member ', seq, '/O=Org ', seq MOD 5000)"),
    "orgdomaincerts": ("orgid", "orgserver", "CONCAT('/CN=host', seq, '.example.com/O=Org ', seq MOD 5000)"),
}


def fill(db: Any, rows: int, gpg_rows: int) -> None:
    for table, (owner, prefix, subject) in FILL.items():
        started = time.monotonic()
        db.execute(f"ALTER TABLE {table} DISABLE KEYS")
        db.execute(
            f"INSERT INTO {table} (id, {owner}, CN, subject, csr_name, crt_name, serial, created, modified, "
            "revoked, expire, md, rootcert, warning) "
            f"SELECT seq, seq MOD 100000, CONCAT('cn', seq), {subject}, "
            f"CONCAT('../csr/{prefix}-', seq, '.csr'), "
            f"CONCAT('../crt/{prefix}/', seq DIV 1000, '/{prefix}-', seq, '.crt'), "
            "UPPER(LPAD(HEX(seq * 7919), 20, '0')), '2015-01-01 00:00:00', '2015-01-01 00:00:00', "
            "IF(seq MOD 50 = 0, '2016-06-01 12:00:00', '0000-00-00 00:00:00'), "
            "'2017-01-01 00:00:00', 'sha256', 1 + (seq MOD 2), IF(seq MOD 997 = 0, 3, 0) "
            f"FROM seq_1_to_{rows}"
        )
        db.execute(f"ALTER TABLE {table} ENABLE KEYS")
        print(f"filled {table}: {rows} rows in {time.monotonic() - started:.1f} s", flush=True)
    if gpg_rows:
        started = time.monotonic()
        db.execute(
            "INSERT INTO gpg (id, memid, email, csr, crt, issued, expire, warning) "
            "SELECT seq, seq MOD 100000, CONCAT('m', seq, '@example.org'), "
            "CONCAT('../csr/gpg-', seq, '.csr'), CONCAT('../crt/gpg/', seq DIV 1000, '/gpg-', seq, '.crt'), "
            "'2015-01-01 00:00:00', '2016-01-01 00:00:00', 0 "
            f"FROM seq_1_to_{gpg_rows}"
        )
        print(f"filled gpg: {gpg_rows} rows in {time.monotonic() - started:.1f} s", flush=True)
    for table in (*FILL, "gpg"):
        db.execute(f"ANALYZE TABLE {table}")


def explain(db: Any) -> None:
    from signer.client.webdb import polling_statements

    for statement, args in polling_statements(3):
        print(f"\nEXPLAIN {statement}  -- args {args}")
        cursor = db.connection.cursor()
        cursor.execute("EXPLAIN " + statement.replace("?", "%s"), args)
        names = [d[0] for d in cursor.description]
        for row in cursor.fetchall():
            facts = dict(zip(names, row))
            print("  " + ", ".join(f"{k}={facts[k]}" for k in ("table", "type", "possible_keys", "key", "rows", "Extra")))
        cursor.close()


def time_statements(db: Any, repeat: int = 10) -> None:
    """Median time of each polling statement run directly (no adbapi), in ms."""
    from signer.client.webdb import polling_statements

    print()
    for statement, args in polling_statements(3):
        cursor = db.connection.cursor()
        timings = []
        for _ in range(repeat):
            started = time.perf_counter()
            cursor.execute(statement.replace("?", "%s"), args)
            cursor.fetchall()
            timings.append((time.perf_counter() - started) * 1000)
        cursor.close()
        table = statement.split(" FROM ")[1].split()[0]
        kind = "revocations" if "revoked" in statement else "pending"
        print(f"  {table:15} {kind:12} median {statistics.median(timings):8.2f} ms")


def measure(db: Any, rounds: int) -> list[float]:
    from twisted.internet import reactor
    from twisted.internet.defer import inlineCallbacks, succeed

    from signer.client.config import ClientConfig, FilesConfig, LinkConfig, MailConfig
    from signer.client.crlinstall import CrlInstaller
    from signer.client.jobs import Jobs
    from signer.client.webdb import WebDB
    from signer.protocol import codec

    class Immediate:
        def request(self, message: codec.Request) -> Any:
            return succeed(codec.make_response(message, b""))

    config = ClientConfig(
        source="<benchmark>",
        database=db.config,
        link=LinkConfig(serial_config=None),
        files=FilesConfig(csr_dir=Path("/nonexistent/csr"), crt_dir=Path("/nonexistent/crt")),
        roots=(),
        mail=MailConfig(enabled=False),
    )
    webdb = WebDB.from_config(config.database)
    jobs = Jobs(config, webdb, Immediate(), reactor, CrlInstaller(reactor))
    jobs.rounds = 1  # skip the CRL check (no roots configured anyway)
    timings: list[float] = []
    failures: list[str] = []

    @inlineCallbacks
    def run() -> Any:
        try:
            yield jobs.run_round()  # warm-up (connections, caches)
            for _ in range(rounds):
                started = time.perf_counter()
                report = yield jobs.run_round()
                timings.append((time.perf_counter() - started) * 1000)
                if report.aborted or not report.keepalive or report.sent != 1:
                    failures.append(f"round was not idle: {report}")
        finally:
            webdb.close()
            reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()
    if failures:
        raise SystemExit(failures[0])
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per certificate table")
    parser.add_argument("--gpg-rows", type=int, default=1_000_000, help="rows in gpg")
    parser.add_argument("--rounds", type=int, default=30, help="measured idle rounds")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    from tests.support.webdb import mariadb_webdb

    db = mariadb_webdb()
    print(f"database {db.name}", flush=True)
    try:
        fill(db, args.rows, args.gpg_rows)
        explain(db)
        time_statements(db)
        timings = sorted(measure(db, args.rounds))
        p90 = timings[min(len(timings) - 1, int(len(timings) * 0.9))]
        print(
            f"\nidle polling round ({args.rows} rows per certificate table, {args.gpg_rows} gpg rows, "
            f"{len(timings)} rounds): median {statistics.median(timings):.2f} ms, p90 {p90:.2f} ms, "
            f"min {timings[0]:.2f} ms, max {timings[-1]:.2f} ms"
        )
    finally:
        if args.keep:
            db.close()
        else:
            db.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
