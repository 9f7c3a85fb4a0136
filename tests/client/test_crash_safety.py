"""Crash safety: the client is stopped between each pair of steps and restarted.

A crash is simulated by raising :class:`Crash` (a ``BaseException``, so no
``except Exception`` in the client runs, as with SIGKILL) at a step
boundary; the crashed client is abandoned and a fresh one (new pool, new
``Jobs``) runs against the same database, files and signer, as after a
restart. Each test states what the restart must find.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet.defer import Deferred, inlineCallbacks

from signer.client.webdb import REVOKE_REQUESTED, WebDB
from signer.protocol import codec
from tests.client.conftest import OpenPGPCA, World
from tests.support.testca import make_csr


class Crash(BaseException):
    """The process dies here."""


def expect_crash(d: Deferred[Any]) -> Deferred[None]:
    def ok(result: Any) -> None:
        pytest.fail(f"the round finished instead of crashing: {result}")

    def crashed(failure: Any) -> None:
        failure.trap(Crash)

    return d.addCallbacks(ok, crashed)


class CrashBeforeSigned(WebDB):
    """Dies after the certificate file was written, before the UPDATE."""

    def mark_signed(self, *args: Any) -> Any:
        raise Crash()

    def mark_openpgp_signed(self, *args: Any) -> Any:
        raise Crash()


class CrashAfterSigned(WebDB):
    """Dies right after the UPDATE went through (before the journal is cleared)."""

    @inlineCallbacks
    def mark_signed(self, *args: Any) -> Any:
        yield super().mark_signed(*args)
        raise Crash()


class CrashBeforeRevoked(WebDB):
    """Dies after the new CRL was installed, before revoked = NOW()."""

    def mark_revoked(self, *args: Any) -> Any:
        raise Crash()


class CrashingRenderer:
    """Dies when the mail is being prepared (after the row was completed)."""

    def __getattr__(self, name: str) -> Any:
        def crash(*args: Any, **kwargs: Any) -> Any:
            raise Crash()

        return crash


def pending_client_row(world: World) -> None:
    world.db.add_user(10, "a@example.org", "Ann", "en")
    world.db.add_cert("emailcerts", 1, 10, "/CN=Ann")
    world.write_csr("client", 1, make_csr("Ann", index=4))


def sign_requests(world: World) -> list[codec.SignX509Request]:
    return world.signer.of_kind(codec.SignX509Request)


@pytest_twisted.inlineCallbacks
def test_crash_after_file_written_before_update(world: World, backend: str) -> None:
    """The restart completes the row from the certificate file without asking the signer again."""
    pending_client_row(world)
    yield expect_crash(world.jobs(CrashBeforeSigned).run_round())
    assert world.crt_path("client", 1).exists()
    assert world.db.row("emailcerts", 1)["crt_name"] == ""
    assert len(sign_requests(world)) == 1
    report = yield world.jobs().run_round()
    assert report.recovered == [("emailcerts", 1)] and report.signed == []
    assert len(sign_requests(world)) == 1
    row = world.db.row("emailcerts", 1)
    certificate = x509.load_pem_x509_certificate(world.crt_path("client", 1).read_bytes())
    assert row["crt_name"] == "../crt/client/0/client-1.crt"
    assert int(row["serial"], 16) == certificate.serial_number
    assert row["warning"] == 0


@pytest_twisted.inlineCallbacks
def test_crash_after_update_before_journal_cleared(world: World) -> None:
    """The row is complete; the stale journal entry is dropped without a warning or a request."""
    pending_client_row(world)
    yield expect_crash(world.jobs(CrashAfterSigned).run_round())
    assert world.db.row("emailcerts", 1)["crt_name"] != ""
    assert (world.tmp / "state" / "in-flight").exists()
    report = yield world.jobs().run_round()
    assert report.signed == report.recovered == []
    assert len(sign_requests(world)) == 1
    assert world.db.row("emailcerts", 1)["warning"] == 0
    assert not (world.tmp / "state" / "in-flight").exists()


@pytest_twisted.inlineCallbacks
def test_crash_while_rendering_mails(mail_world: World) -> None:
    """Mails are prepared before the UPDATE: the restart completes the row from the file and mails once."""
    w = mail_world
    pending_client_row(w)
    yield expect_crash(w.jobs(renderer=CrashingRenderer()).run_round())
    assert w.db.row("emailcerts", 1)["crt_name"] == ""
    jobs = w.jobs()
    report = yield jobs.run_round()
    yield jobs.when_mails_sent()
    assert report.recovered == [("emailcerts", 1)]
    assert len(sign_requests(w)) == 1
    assert [m.recipient for m in w.sink.messages] == ["a@example.org"]


@pytest_twisted.inlineCallbacks
def test_crash_with_held_mail_before_update(mail_world: World, backend: str) -> None:
    """A held mail of a row still pending is dropped; completing the row mails exactly once."""
    w = mail_world
    pending_client_row(w)
    yield expect_crash(w.jobs(CrashBeforeSigned).run_round())
    assert [p.suffix for p in (w.tmp / "state" / "outbox").iterdir()] == [".hold"]
    jobs = w.jobs()
    yield jobs.run_round()
    yield jobs.when_mails_sent()
    assert len(sign_requests(w)) == 1
    assert [m.recipient for m in w.sink.messages] == ["a@example.org"]
    assert list((w.tmp / "state" / "outbox").iterdir()) == []


@pytest_twisted.inlineCallbacks
def test_crash_after_update_before_mail(mail_world: World, backend: str) -> None:
    """The row is complete and its mail held: the restart sends it, once, without a new request."""
    w = mail_world
    pending_client_row(w)
    yield expect_crash(w.jobs(CrashAfterSigned).run_round())
    assert w.db.row("emailcerts", 1)["crt_name"] != ""
    assert w.sink.messages == []
    jobs = w.jobs()
    yield jobs.run_round()
    yield jobs.when_mails_sent()
    yield w.sink.wait_for(1)
    assert len(sign_requests(w)) == 1
    assert [m.subject for m in w.sink.messages] == ["[CAcert.org] Your certificate"]
    jobs2 = w.jobs()
    yield jobs2.run_round()
    yield jobs2.when_mails_sent()
    assert len(w.sink.messages) == 1


class CrashingSender:
    """Dies when handing the mail to SMTP."""

    def send(self, mail: Any) -> Any:
        raise Crash()


@pytest_twisted.inlineCallbacks
def test_crash_while_sending_mail(mail_world: World) -> None:
    """A ready (.eml) mail left by a crash is sent after the restart."""
    w = mail_world
    pending_client_row(w)
    yield expect_crash(w.jobs(sender=CrashingSender()).run_round())
    assert [p.suffix for p in (w.tmp / "state" / "outbox").iterdir()] == [".eml"]
    jobs = w.jobs()
    yield jobs.run_round()
    yield jobs.when_mails_sent()
    assert [m.recipient for m in w.sink.messages] == ["a@example.org"]
    assert len(sign_requests(w)) == 1
    assert list((w.tmp / "state" / "outbox").iterdir()) == []


@pytest_twisted.inlineCallbacks
def test_crash_while_the_request_is_on_the_line(world: World, backend: str) -> None:
    """The answer died with the process: a warning is counted, then the row is retried once."""
    pending_client_row(world)

    def die(request: codec.Request, response: codec.Response) -> None:
        if isinstance(request, codec.SignX509Request):
            raise Crash()

    world.signer.before_answer = die
    yield expect_crash(world.jobs().run_round())
    assert (world.tmp / "state" / "in-flight").read_text() == "emailcerts 1\n"
    world.signer.before_answer = None
    report = yield world.jobs().run_round()
    assert world.db.row("emailcerts", 1)["warning"] == 1
    assert report.signed == [("emailcerts", 1)]
    assert len(sign_requests(world)) == 2


@pytest_twisted.inlineCallbacks
def test_request_that_keeps_killing_the_client_stops_at_the_threshold(world: World) -> None:
    """A poison row that crashes the client every time is given up after 3 attempts."""
    pending_client_row(world)

    def die(request: codec.Request, response: codec.Response) -> None:
        if isinstance(request, codec.SignX509Request):
            raise Crash()

    world.signer.before_answer = die
    for _ in range(3):
        yield expect_crash(world.jobs().run_round())
    report = yield world.jobs().run_round()
    assert world.db.row("emailcerts", 1)["warning"] == 3
    assert len(sign_requests(world)) == 3 and report.keepalive is False
    report = yield world.jobs().run_round()
    assert len(sign_requests(world)) == 3


@pytest_twisted.inlineCallbacks
def test_foreign_certificate_file_is_not_taken(world: World) -> None:
    """A certificate file for another key (left over) is ignored and replaced by a real signing."""
    pending_client_row(world)
    other = make_csr("Other", index=9)
    path = world.crt_path("client", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(world.signer.sign_x509(codec.SignX509Request(csr=other, days=10)))
    report = yield world.jobs().run_round()
    assert report.signed == [("emailcerts", 1)] and report.recovered == []
    assert len(sign_requests(world)) == 1


@pytest_twisted.inlineCallbacks
def test_openpgp_crash_after_file_before_update(world: World, openpgp_ca: OpenPGPCA) -> None:
    """A signed key file for a pending gpg row completes the row on restart, no second request."""
    world.signer.certifier = openpgp_ca.certifier
    world.db.add_gpg(1, 10, "a@example.org")
    world.write_csr("gpg", 1, openpgp_ca.keys.make().armored)
    yield expect_crash(world.jobs(CrashBeforeSigned).run_round())
    assert world.db.row("gpg", 1)["crt"] == ""
    report = yield world.jobs().run_round()
    assert report.recovered == [("gpg", 1)]
    assert len(world.signer.of_kind(codec.SignOpenPGPRequest)) == 1
    assert world.db.row("gpg", 1)["expire"] != "0000-00-00 00:00:00"


@inlineCallbacks
def _signed_and_marked_for_revocation(world: World) -> Any:
    pending_client_row(world)
    jobs = world.jobs()
    yield jobs.run_round()
    yield jobs.when_mails_sent()
    world.db.execute("UPDATE emailcerts SET revoked = ? WHERE id = 1", (REVOKE_REQUESTED,))
    world.signer.requests.clear()


@pytest_twisted.inlineCallbacks
def test_revocation_crash_after_crl_installed(world: World, backend: str) -> None:
    """The installed CRL already lists the serial: the restart only marks the row."""
    yield _signed_and_marked_for_revocation(world)
    yield expect_crash(world.jobs(CrashBeforeRevoked).run_round())
    assert len(world.signer.of_kind(codec.RevokeRequest)) == 1
    assert world.db.row("emailcerts", 1)["revoked"] == REVOKE_REQUESTED
    report = yield world.jobs().run_round()
    assert report.revoked == [("emailcerts", 1)]
    assert len(world.signer.of_kind(codec.RevokeRequest)) == 1
    assert world.db.row("emailcerts", 1)["revoked"] != REVOKE_REQUESTED


@pytest_twisted.inlineCallbacks
def test_revocation_mail_survives_a_crash_after_the_update(mail_world: World) -> None:
    """Crash right after revoked = NOW(): the held revocation mail goes out once after the restart."""
    w = mail_world

    class CrashAfterRevoked(WebDB):
        @inlineCallbacks
        def mark_revoked(self, *args: Any) -> Any:
            yield super().mark_revoked(*args)
            raise Crash()

    yield _signed_and_marked_for_revocation(w)
    yield w.sink.wait_for(1)
    yield expect_crash(w.jobs(CrashAfterRevoked).run_round())
    assert w.db.row("emailcerts", 1)["revoked"] != REVOKE_REQUESTED
    jobs = w.jobs()
    yield jobs.run_round()
    yield jobs.when_mails_sent()
    mails = yield w.sink.wait_for(2)
    assert len(mails) == 2 and "has been revoked" in mails[1].body
    assert len(w.signer.of_kind(codec.RevokeRequest)) == 1


@pytest_twisted.inlineCallbacks
def test_revocation_crash_while_on_the_line(world: World) -> None:
    """The CRL answer died with the process: the restart asks again (harmless) and completes."""
    yield _signed_and_marked_for_revocation(world)
    crl_before = world.root_config(1).crl.read_bytes()

    def die(request: codec.Request, response: codec.Response) -> None:
        if isinstance(request, codec.RevokeRequest):
            raise Crash()

    world.signer.before_answer = die
    yield expect_crash(world.jobs().run_round())
    assert world.root_config(1).crl.read_bytes() == crl_before
    world.signer.before_answer = None
    report = yield world.jobs().run_round()
    assert report.revoked == [("emailcerts", 1)]
    certificate = x509.load_pem_x509_certificate(world.crt_path("client", 1).read_bytes())
    crl = x509.load_der_x509_crl(world.root_config(1).crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
