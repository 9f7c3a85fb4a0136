"""OpenPGP rows: the key goes to a real gpg certifier, the signed key is stored, expiry read, member mailed."""

from __future__ import annotations

import dataclasses
import datetime

import pytest_twisted

from signer.client.config import OpenPGPConfig
from signer.protocol import codec
from tests.client.conftest import OpenPGPCA, World, with_config


@pytest_twisted.inlineCallbacks
def test_openpgp_key_is_signed_stored_and_mailed(mail_world: World, openpgp_ca: OpenPGPCA, backend: str) -> None:
    """gpg row -> 366-day request -> key file with the CA certification -> crt, issued, expire -> German mail."""
    w = mail_world
    with_config(w, openpgp=OpenPGPConfig(ca_key_id=openpgp_ca.fingerprint))
    w.signer.certifier = openpgp_ca.certifier
    key = openpgp_ca.keys.make()
    w.db.add_user(10, "gpguser@example.org", "Grete", "de_DE")
    w.db.add_gpg(1, 10, "gpguser@example.org")
    w.write_csr("gpg", 1, key.armored)
    jobs = w.jobs()
    report = yield jobs.run_round()
    assert report.signed == [("gpg", 1)], report
    [request] = w.signer.of_kind(codec.SignOpenPGPRequest)
    assert request.days == 366 and request.key == key.armored
    row = w.db.row("gpg", 1)
    assert row["crt"] == "../crt/gpg/0/gpg-1.crt"
    assert row["issued"] != "0000-00-00 00:00:00"
    expire = datetime.datetime.strptime(row["expire"], "%Y-%m-%d %H:%M:%S")
    expected = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(days=366)
    assert abs((expire - expected).total_seconds()) < 3600
    assert w.crt_path("gpg", 1).read_bytes().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    yield jobs.when_mails_sent()
    [mail] = yield w.sink.wait_for(1)
    assert mail.subject == "[CAcert.org] Ihr GPG/PGP-Schlüssel"
    assert "https://www.cacert.org/gpg.php?id=3&cert=1" in mail.body


@pytest_twisted.inlineCallbacks
def test_refused_key_counts_a_warning(world: World, openpgp_ca: OpenPGPCA) -> None:
    """An expired key is refused by the signer: warning + 1, nothing stored."""
    world.signer.certifier = openpgp_ca.certifier
    world.db.add_user(10, "a@example.org", "A")
    world.db.add_gpg(1, 10, "a@example.org")
    world.write_csr("gpg", 1, openpgp_ca.keys.expired().armored)
    report = yield world.jobs().run_round()
    assert report.warned == [("gpg", 1)]
    assert world.db.row("gpg", 1)["warning"] == 1 and world.db.row("gpg", 1)["crt"] == ""


@pytest_twisted.inlineCallbacks
def test_missing_and_empty_key_files_count_warnings(world: World) -> None:
    """No key file or an empty one: warning + 1 without asking the signer."""
    world.db.add_gpg(1, 10, "a@example.org")
    world.db.add_gpg(2, 10, "a@example.org")
    world.write_csr("gpg", 2, b"  \n")
    report = yield world.jobs().run_round()
    assert report.warned == [("gpg", 1), ("gpg", 2)]
    assert world.signer.of_kind(codec.SignOpenPGPRequest) == []


@pytest_twisted.inlineCallbacks
def test_answer_without_ca_certification_is_refused(world: World, openpgp_ca: OpenPGPCA) -> None:
    """A key that comes back without the configured CA's certification is not stored."""
    with_config(world, openpgp=dataclasses.replace(world.config.openpgp, ca_key_id="0123456789ABCDEF"))
    world.signer.certifier = openpgp_ca.certifier
    world.db.add_gpg(1, 10, "a@example.org")
    world.write_csr("gpg", 1, openpgp_ca.keys.make().armored)
    report = yield world.jobs().run_round()
    assert report.warned == [("gpg", 1)]
    assert not world.crt_path("gpg", 1).exists()
