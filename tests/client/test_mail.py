"""Member mails through a real in-process SMTP server, in English and German."""

from __future__ import annotations

import pytest
import pytest_twisted

from signer.client.config import MailConfig
from signer.client.mailer import BadAddress, MailRenderer, check_address
from signer.client.webdb import REVOKE_REQUESTED
from tests.client.conftest import World
from tests.support.testca import make_csr


@pytest_twisted.inlineCallbacks
def test_issued_mails_in_the_members_language(mail_world: World, backend: str) -> None:
    """Client cert mail in German for de_DE, server cert mail in English; MIME UTF-8 with encoded subject."""
    w = mail_world
    w.db.add_user(10, "juergen@example.org", "Jürgen", "de_DE")
    w.db.add_user(11, "ann@example.org", "Ann", "en_US")
    w.db.add_domain(5, 11)
    w.db.add_cert("emailcerts", 1, 10, "/CN=Jürgen/emailAddress=juergen@example.org", cn="juergen@example.org")
    w.db.add_cert("domaincerts", 2, 5, "/CN=www.example.org", cn="www.example.org")
    w.write_csr("client", 1, make_csr("J", index=4))
    w.write_csr("server", 2, make_csr("www.example.org", index=5))
    jobs = w.jobs()
    yield jobs.run_round()
    yield jobs.when_mails_sent()
    yield w.sink.wait_for(2)
    [german] = w.sink.to("juergen@example.org")
    assert german.subject == "[CAcert.org] Ihr Zertifikat"
    assert b"\r\r" not in german.raw
    assert german.message.get_content_charset() == "utf-8"
    assert "Hallo Jürgen," in german.body
    assert "https://www.cacert.org/account.php?id=6&cert=1" in german.body
    assert "juergen@example.org" in german.body
    assert "https://www.cacert.org/index.php?id=3" in german.body
    assert "13:5C:EC:36" in german.body
    assert german.sender == "support@cacert.example"
    [english] = w.sink.to("ann@example.org")
    assert english.subject == "[CAcert.org] Your certificate"
    assert "Hi Ann," in english.body and "www.example.org" in english.body
    assert "https://www.cacert.org/account.php?id=15&cert=2" in english.body
    assert "CAcert.org Support" in english.body


@pytest_twisted.inlineCallbacks
def test_revocation_mail_goes_to_every_org_admin(mail_world: World) -> None:
    """Revoking an org certificate mails every admin of the org, with name and serial."""
    w = mail_world
    w.db.add_user(10, "admin1@example.org", "One", "en")
    w.db.add_user(11, "admin2@example.org", "Zwei", "de")
    w.db.add_org_admin(7, 10)
    w.db.add_org_admin(7, 11)
    w.db.add_cert("orgdomaincerts", 4, 7, "/CN=org.example.org", cn="org.example.org")
    w.write_csr("orgserver", 4, make_csr("org.example.org", index=5))
    jobs = w.jobs()
    yield jobs.run_round()
    yield jobs.when_mails_sent()
    serial = w.db.row("orgdomaincerts", 4)["serial"]
    w.db.execute("UPDATE orgdomaincerts SET revoked = ? WHERE id = 4", (REVOKE_REQUESTED,))
    yield jobs.run_round()
    yield jobs.when_mails_sent()
    yield w.sink.wait_for(4)
    revoked = [m for m in w.sink.messages if serial in m.body]
    assert sorted(m.recipient for m in revoked) == ["admin1@example.org", "admin2@example.org"]
    by = {m.recipient: m for m in revoked}
    assert "has been revoked" in by["admin1@example.org"].body
    assert "widerrufen" in by["admin2@example.org"].body
    assert "org.example.org" in by["admin2@example.org"].body


@pytest_twisted.inlineCallbacks
def test_user_without_language_gets_english(mail_world: World) -> None:
    """An empty users.language (or an unknown one) falls back to English."""
    w = mail_world
    w.db.add_user(10, "a@example.org", "Ann", "")
    w.db.add_user(11, "b@example.org", "Ben", "xx_YY")
    w.db.add_cert("emailcerts", 1, 10, "/CN=Ann")
    w.db.add_cert("emailcerts", 2, 11, "/CN=Ben")
    w.write_csr("client", 1, make_csr("Ann", index=4))
    w.write_csr("client", 2, make_csr("Ben", index=5))
    jobs = w.jobs()
    report = yield jobs.run_round()
    assert report.signed == [("emailcerts", 1), ("emailcerts", 2)]
    yield jobs.when_mails_sent()
    mails = yield w.sink.wait_for(2)
    assert all(m.subject == "[CAcert.org] Your certificate" for m in mails)


@pytest_twisted.inlineCallbacks
def test_invalid_address_is_logged_and_the_signing_stands(mail_world: World) -> None:
    """A member with a broken address gets no mail; the row is signed, the next member mailed."""
    w = mail_world
    w.db.add_user(10, "not an address\r\nBcc: x@evil.example", "Eve", "en")
    w.db.add_user(11, "ok@example.org", "Ok", "en")
    w.db.add_cert("emailcerts", 1, 10, "/CN=Eve")
    w.db.add_cert("emailcerts", 2, 11, "/CN=Ok")
    w.write_csr("client", 1, make_csr("Eve", index=4))
    w.write_csr("client", 2, make_csr("Ok", index=5))
    jobs = w.jobs()
    report = yield jobs.run_round()
    yield jobs.when_mails_sent()
    assert report.signed == [("emailcerts", 1), ("emailcerts", 2)]
    assert w.db.row("emailcerts", 1)["crt_name"] != ""
    yield w.sink.wait_for(1)
    assert [m.recipient for m in w.sink.messages] == ["ok@example.org"]


@pytest_twisted.inlineCallbacks
def test_smtp_refusal_neither_undoes_nor_repeats_the_signing(mail_world: World) -> None:
    """A refused delivery is logged; the row stays signed and is not sent to the signer again."""
    from signer.protocol import codec

    w = mail_world
    w.sink.refuse = True
    w.db.add_user(10, "a@example.org", "Ann", "en")
    w.db.add_cert("emailcerts", 1, 10, "/CN=Ann")
    w.write_csr("client", 1, make_csr("Ann", index=4))
    jobs = w.jobs()
    yield jobs.run_round()
    yield jobs.when_mails_sent()
    assert w.db.row("emailcerts", 1)["crt_name"] != ""
    yield jobs.run_round()
    assert len(w.signer.of_kind(codec.SignX509Request)) == 1
    assert w.sink.messages == []


@pytest.mark.parametrize(
    "address",
    ["", "plain", "a@b", "a b@example.org", "a@example.org\r\nBcc: x@y.org", "a..b@example.org",
     "<a@example.org>", "a@-example.org"],
)
def test_bad_addresses_are_refused(address: str) -> None:
    """Only plain local@domain.tld addresses pass."""
    with pytest.raises(BadAddress):
        check_address(address)


def test_openpgp_mail_text_and_german_catalogue() -> None:
    """The OpenPGP mail carries the download URL, key id and fingerprint, in German for 'de'."""
    renderer = MailRenderer(MailConfig(sender="support@cacert.example"))
    mail = renderer.openpgp_signed("a@example.org", "Anna", "de", "a@example.org", 42)
    assert mail.subject == "[CAcert.org] Ihr GPG/PGP-Schlüssel"
    headers = mail.message.split(b"\n\n", 1)[0]
    assert b"=?utf-8?q?GPG/PGP-Schl=C3=BCssel?=" in headers and max(headers) < 128  # RFC 2047, 7-bit headers
    assert "https://www.cacert.org/gpg.php?id=3&cert=42" in mail.body
    assert "65D0FD58" in mail.body and "A31D 4F81" in mail.body
    english = renderer.openpgp_signed("a@example.org", "Anna", "en_GB", "a@example.org", 42)
    assert english.subject == "[CAcert.org] Your GPG/PGP Key"
    assert "sign our key" in english.body


def test_compiled_catalogues_are_current() -> None:
    """The committed .mo files match their .po sources (tools/compile_catalogs.py --check)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, str(repo / "tools" / "compile_catalogs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
