"""Fixtures of the client tests: a WebDB (sqlite and MariaDB), folders, roots, SMTP sink.

``webdb`` is parametrised over ``sqlite`` and ``mariadb`` for the tests that
ask for ``backend``; MariaDB tests carry the ``mariadb`` marker. When MariaDB
cannot be reached they are skipped with the reason, or fail when the
environment variable ``CI`` is set.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor as _reactor
from twisted.internet.task import Clock

from signer.client.config import (
    ClientConfig,
    FilesConfig,
    LinkConfig,
    MailConfig,
    RootConfig,
)
from signer.client.crlinstall import CrlInstaller
from signer.client.jobs import Jobs
from signer.client.mailer import MailRenderer, SMTPSender
from signer.client.webdb import WebDB
from tests.client.fakesigner import FakeSigner, test_roots
from tests.support.smtp import SMTPSink
from tests.support.webdb import MariaDBUnavailable, TestWebDB, mariadb_webdb, sqlite_webdb


def open_test_webdb(kind: str, tmp_path: Path) -> TestWebDB:
    """A fresh WebDB of ``kind``; skips or fails (with ``CI``) when MariaDB is away."""
    if kind == "sqlite":
        return sqlite_webdb(tmp_path / "webdb.sqlite")
    try:
        return mariadb_webdb()
    except MariaDBUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"MariaDB is required in CI: {exc}")
        pytest.skip(f"MariaDB not reachable: {exc}")


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def testdb(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestWebDB]:
    """The seeded-on-demand WebDB; sqlite unless the test asks for ``backend``."""
    kind = request.getfixturevalue("backend") if "backend" in request.fixturenames else "sqlite"
    db = open_test_webdb(kind, tmp_path)
    yield db
    db.drop()


@pytest.fixture
def smtp_sink() -> Iterator[SMTPSink]:
    sink = SMTPSink()
    sink.start(_reactor)
    yield sink
    pytest_twisted.blockon(sink.stop())


@dataclass
class World:
    """Everything a client round needs, pointing at temporary folders."""

    tmp: Path
    db: TestWebDB
    config: ClientConfig
    signer: FakeSigner
    clock: Clock
    sink: SMTPSink | None
    pools: list[WebDB]

    def jobs(self, webdb_class: type[WebDB] = WebDB, requester: Any = None, **kwargs: Any) -> Jobs:
        """A fresh client (as after a restart) over the same database and folders."""
        webdb = self.open_webdb(webdb_class)
        renderer = MailRenderer(self.config.mail)
        sender = SMTPSender(self.config.mail, _reactor) if self.sink else None
        return Jobs(
            self.config,
            webdb,
            requester if requester is not None else self.signer,
            self.clock,
            CrlInstaller(_reactor),
            renderer=kwargs.pop("renderer", renderer),
            sender=kwargs.pop("sender", sender),
            **kwargs,
        )

    def open_webdb(self, webdb_class: type[WebDB] = WebDB) -> WebDB:
        plain = WebDB.from_config(self.db.config)
        webdb = webdb_class(plain.pool, plain.dialect, plain.retries)
        self.pools.append(webdb)
        return webdb

    def csr_path(self, prefix: str, row_id: int) -> Path:
        return self.config.files.csr_dir / prefix / str(row_id // 1000) / f"{prefix}-{row_id}.csr"

    def crt_path(self, prefix: str, row_id: int) -> Path:
        return self.config.files.crt_dir / prefix / str(row_id // 1000) / f"{prefix}-{row_id}.crt"

    def write_csr(self, prefix: str, row_id: int, data: bytes) -> Path:
        path = self.csr_path(prefix, row_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def root_config(self, rootcert: int) -> RootConfig:
        root = self.config.root(rootcert)
        assert root is not None
        return root


def make_world(tmp_path: Path, db: TestWebDB, reactor: Any, sink: SMTPSink | None) -> World:
    roots = []
    for index, root in enumerate(test_roots()):
        ca_path = tmp_path / "ca" / f"root{index}.crt"
        ca_path.parent.mkdir(parents=True, exist_ok=True)
        ca_path.write_bytes(root.certificate.public_bytes(serialization.Encoding.PEM))
        roots.append(RootConfig(rootcert=index + 1, crl=tmp_path / "www" / f"root{index}.crl", ca_certificate=ca_path))
    (tmp_path / "www").mkdir(exist_ok=True)
    mail = MailConfig(
        enabled=sink is not None,
        smtp_host="127.0.0.1",
        smtp_port=sink.port if sink else 25,
        sender="support@cacert.example",
        timeout=10.0,
    )
    config = ClientConfig(
        source="<test>",
        database=db.config,
        link=LinkConfig(serial_config=None),
        files=FilesConfig(
            csr_dir=tmp_path / "csr",
            crt_dir=tmp_path / "crt",
            crt_name_prefix="../crt",
            state_dir=tmp_path / "state",
        ),
        roots=tuple(roots),
        mail=mail,
    )
    clock = Clock()
    clock.advance(time.time())
    return World(tmp_path, db, config, FakeSigner(reactor), clock, sink, [])


@pytest.fixture
def world(tmp_path: Path, testdb: TestWebDB) -> Iterator[World]:
    """A client world without mail."""
    w = make_world(tmp_path, testdb, _reactor, None)
    yield w
    for pool in w.pools:
        pool.close()


@pytest.fixture
def mail_world(tmp_path: Path, testdb: TestWebDB, smtp_sink: SMTPSink) -> Iterator[World]:
    """A client world mailing to the in-process SMTP sink."""
    w = make_world(tmp_path, testdb, _reactor, smtp_sink)
    yield w
    for pool in w.pools:
        pool.close()


def with_config(world: World, **changes: Any) -> None:
    """Replace top-level fields of the world's configuration."""
    world.config = replace(world.config, **changes)


@dataclass(frozen=True)
class OpenPGPCA:
    """A throw-away OpenPGP CA (real gpg) and a maker of user keys."""

    certifier: Any
    fingerprint: str
    keys: Any


@pytest.fixture(scope="module")
def openpgp_ca() -> Iterator[OpenPGPCA]:
    import shutil

    from signer.server.openpgp import Gpg, OpenPGPCertifier, create_ca_key
    from tests.support.gpg import KeyMaker, short_tempdir

    home = short_tempdir("sgca")
    users = short_tempdir("sgus")
    fingerprint = create_ca_key(home / "ca")
    certifier = OpenPGPCertifier(home / "ca", fingerprint, "http://www.cacert.org/cps.php", work_dir=home)
    maker = KeyMaker(users / "home")
    yield OpenPGPCA(certifier, fingerprint, maker)
    maker.close()
    Gpg(home / "ca").kill_agent()
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(users, ignore_errors=True)
