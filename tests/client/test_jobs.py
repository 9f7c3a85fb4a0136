"""The polling round against a fake signer: all five kinds, revocations, CRLs, keep-alive."""

from __future__ import annotations

import datetime

import pytest
import pytest_twisted
from cryptography import x509

from signer.client.webdb import REVOKE_REQUESTED
from signer.protocol import codec
from tests.client.conftest import World
from tests.support.testca import make_csr


def seed_member(world: World, memid: int = 10, points: int = 100, language: str = "en_US") -> None:
    world.db.add_user(memid, f"member{memid}@example.org", "Alice", language)
    if points:
        world.db.add_points(memid, points)


@pytest_twisted.inlineCallbacks
def test_client_certificate_is_signed_written_and_recorded(world: World, backend: str) -> None:
    """A pending emailcerts row is sent with profile 0 and the subject/SAN split, then completed."""
    seed_member(world)
    world.db.add_cert(
        "emailcerts", 1, 10,
        "/CN=Alice Tester/emailAddress=a@example.org/subjectAltName=email:a@example.org",
        cn="a@example.org", md="sha256",
    )
    world.write_csr("client", 1, make_csr("Alice Tester", index=3))
    jobs = world.jobs()
    report = yield jobs.run_round()
    assert report.signed == [("emailcerts", 1)], report
    [request] = world.signer.of_kind(codec.SignX509Request)
    assert request.subject == b"/CN=Alice Tester/emailAddress=a@example.org"
    assert request.san == b"email:a@example.org"
    assert (request.profile, request.root, request.digest, request.days) == (0, 0, 8, 366)
    row = world.db.row("emailcerts", 1)
    assert row["crt_name"] == "../crt/client/0/client-1.crt"
    certificate = x509.load_pem_x509_certificate(world.crt_path("client", 1).read_bytes())
    assert row["serial"] == format(certificate.serial_number, "X").zfill(len(row["serial"]))
    assert len(row["serial"]) % 2 == 0 and row["serial"] == row["serial"].upper()
    assert row["expire"] == certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S")
    assert row["modified"] != "0000-00-00 00:00:00"


def seed_all_kinds(world: World) -> None:
    """One pending row in each X.509 table plus owners; CSRs on disk."""
    seed_member(world, 10, points=100)
    seed_member(world, 11, points=20, language="de_DE")
    world.db.add_domain(5, 11, "example.org")
    world.db.add_org_admin(7, 10)
    world.db.add_org_admin(7, 11)
    world.db.add_cert("emailcerts", 1, 11, "/CN=Bob/emailAddress=b@example.org", md="sha512")
    world.db.add_cert(
        "domaincerts", 2, 5,
        "/CN=www.example.org/subjectAltName=DNS:www.example.org/subjectAltName=DNS:example.org",
        rootcert=2,
    )
    world.db.add_cert("orgemailcerts", 3, 7, "/CN=Org Person/O=Example Org", codesign=1)
    world.db.add_cert("orgdomaincerts", 4, 7, "/CN=org.example.org/O=Example Org")
    for prefix, row_id, index in (("client", 1, 4), ("server", 2, 5), ("orgclient", 3, 6), ("orgserver", 4, 7)):
        world.write_csr(prefix, row_id, make_csr(f"cn{row_id}", index=index))


@pytest_twisted.inlineCallbacks
def test_every_table_gets_its_profile_days_and_root(world: World, backend: str) -> None:
    """Profiles 0/5/2/6, validity per policy and wire root = rootcert - 1, in table order."""
    seed_all_kinds(world)
    report = yield world.jobs().run_round()
    assert report.signed == [("emailcerts", 1), ("domaincerts", 2), ("orgemailcerts", 3), ("orgdomaincerts", 4)]
    requests = world.signer.of_kind(codec.SignX509Request)
    summary = [(r.profile, r.days, r.root, r.digest) for r in requests]
    # member 11 has 20 points: unassured 180 days; orgs: client 365, server 730
    assert summary == [(0, 180, 0, 10), (5, 180, 1, 8), (2, 365, 0, 8), (6, 730, 0, 8)]
    assert requests[1].subject == b"/CN=www.example.org"
    assert requests[1].san == b"DNS:www.example.org,DNS:example.org"
    for table, row_id, prefix in (
        ("emailcerts", 1, "client"), ("domaincerts", 2, "server"),
        ("orgemailcerts", 3, "orgclient"), ("orgdomaincerts", 4, "orgserver"),
    ):
        assert world.db.row(table, row_id)["crt_name"] == f"../crt/{prefix}/0/{prefix}-{row_id}.crt"
        assert world.crt_path(prefix, row_id).exists()
    # nothing pending any more: the next round only keeps the line alive
    world.signer.requests.clear()
    report = yield world.jobs().run_round()
    assert [type(r) for r in world.signer.requests] == [codec.NulRequest]


@pytest_twisted.inlineCallbacks
def test_type_column_selects_ocsp_and_timestamp_profiles(world: World) -> None:
    """``type`` 8 or 9 is sent as the profile whatever the table."""
    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, "/CN=ocsp.example.org", type=8)
    world.db.add_cert("orgdomaincerts", 2, 7, "/CN=tsa.example.org", type=9)
    world.write_csr("client", 1, make_csr("ocsp", index=4))
    world.write_csr("orgserver", 2, make_csr("tsa", index=5))
    yield world.jobs().run_round()
    assert [r.profile for r in world.signer.of_kind(codec.SignX509Request)] == [8, 9]


@pytest_twisted.inlineCallbacks
def test_assured_member_and_deleted_points(world: World) -> None:
    """50 points (deleted assurances not counted) give the assured validity."""
    world.db.add_user(20, "c@example.org", "Carol")
    world.db.add_points(20, 35)
    world.db.add_points(20, 35, deleted="2020-01-01 00:00:00")
    world.db.add_user(21, "d@example.org", "Dave")
    world.db.add_points(21, 25)
    world.db.add_points(21, 25)
    world.db.add_cert("emailcerts", 1, 20, "/CN=Carol")
    world.db.add_cert("emailcerts", 2, 21, "/CN=Dave")
    world.write_csr("client", 1, make_csr("Carol", index=4))
    world.write_csr("client", 2, make_csr("Dave", index=5))
    yield world.jobs().run_round()
    assert [r.days for r in world.signer.of_kind(codec.SignX509Request)] == [180, 366]


@pytest_twisted.inlineCallbacks
def test_spkac_rows_carry_keytype_1(world: World) -> None:
    """``keytype = 'NS'`` is sent as keytype byte 1 (the request itself decides at the server)."""
    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, "/CN=Alice", keytype="NS")
    world.write_csr("client", 1, make_csr("Alice", index=4))
    yield world.jobs().run_round()
    [request] = world.signer.of_kind(codec.SignX509Request)
    assert request.keytype == 1


@pytest_twisted.inlineCallbacks
def test_empty_answer_counts_a_warning_until_the_threshold(world: World, backend: str) -> None:
    """A refused request raises ``warning``; at 3 the row is no longer tried."""
    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, "/CN=Alice")
    world.write_csr("client", 1, make_csr("Alice", index=4))
    world.signer.refuse = lambda request: isinstance(request, codec.SignX509Request)
    jobs = world.jobs()
    for expected in (1, 2, 3):
        report = yield jobs.run_round()
        assert report.warned == [("emailcerts", 1)]
        assert world.db.row("emailcerts", 1)["warning"] == expected
    world.signer.requests.clear()
    yield jobs.run_round()
    assert world.signer.of_kind(codec.SignX509Request) == []
    assert world.db.row("emailcerts", 1)["crt_name"] == ""


BAD_SUBJECTS = [
    ("/CN=evil\"name", "subject"),
    ("/CN=a#b", "subject"),
    ("/CN=tab\there", "subject"),
    ("/CN=a\\x27b", "subject"),  # an escaped quote is decoded, then refused
    ("/CN=ok/subjectAltName=DNS:a b.example.org", "space"),
    ("/CN=ok/subjectAltName=DNS:a'b.example.org", "subjectAltName"),
]


@pytest.mark.parametrize(("subject", "reason"), BAD_SUBJECTS)
@pytest_twisted.inlineCallbacks
def test_forbidden_characters_are_not_sent(world: World, subject: str, reason: str) -> None:
    """A subject/SAN the server would refuse is counted a warning and never sent."""
    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, subject)
    world.write_csr("client", 1, make_csr("x", index=4))
    report = yield world.jobs().run_round()
    assert report.warned == [("emailcerts", 1)]
    assert world.signer.of_kind(codec.SignX509Request) == []
    assert world.db.row("emailcerts", 1)["warning"] == 1


def _bad_csr(world: World, case: str) -> None:
    path = world.csr_path("client", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64 at all\n-----END CERTIFICATE REQUEST-----\n")
    elif case == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif case == "unreadable":
        path.mkdir()  # reading a directory fails like an unreadable file
    elif case == "missing":
        pass


@pytest.mark.parametrize("case", ["missing", "unreadable", "empty", "garbage", "binary"])
@pytest_twisted.inlineCallbacks
def test_bad_request_files_count_a_warning_and_the_round_goes_on(world: World, case: str) -> None:
    """A missing, unreadable, empty or garbage CSR gives a warning; the next row is still signed."""
    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, "/CN=Broken")
    world.db.add_cert("emailcerts", 2, 10, "/CN=Fine")
    _bad_csr(world, case)
    world.write_csr("client", 2, make_csr("Fine", index=5))
    report = yield world.jobs().run_round()
    assert report.warned == [("emailcerts", 1)]
    assert report.signed == [("emailcerts", 2)]
    assert world.db.row("emailcerts", 1)["warning"] == 1
    assert len(world.signer.of_kind(codec.SignX509Request)) == 1


@pytest_twisted.inlineCallbacks
def test_unknown_digest_counts_a_warning(world: World, backend: str) -> None:
    """An ``md`` value outside md5/sha1/sha256/sha512 (and friends) is not sent."""
    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, "/CN=Alice", md="whirl")
    world.write_csr("client", 1, make_csr("Alice", index=4))
    report = yield world.jobs().run_round()
    assert report.warned == [("emailcerts", 1)]
    assert world.signer.of_kind(codec.SignX509Request) == []


@pytest_twisted.inlineCallbacks
def test_answer_for_another_key_is_not_stored(world: World) -> None:
    """A certificate whose key is not the request's is refused with a warning."""
    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, "/CN=Alice")
    world.write_csr("client", 1, make_csr("Alice", index=4))
    original = world.signer.sign_x509

    def wrong_key(message: codec.SignX509Request) -> bytes:
        return original(codec.SignX509Request(csr=make_csr("Other", index=9), days=message.days))

    world.signer.sign_x509 = wrong_key  # type: ignore[method-assign]
    report = yield world.jobs().run_round()
    assert report.warned == [("emailcerts", 1)]
    assert not world.crt_path("client", 1).exists()


@pytest_twisted.inlineCallbacks
def test_der_answer_is_stored_as_pem(world: World) -> None:
    """A DER certificate (legacy servers) is converted to PEM before writing."""
    from cryptography.hazmat.primitives import serialization

    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, "/CN=Alice")
    world.write_csr("client", 1, make_csr("Alice", index=4))
    original = world.signer.sign_x509
    world.signer.sign_x509 = lambda m: x509.load_pem_x509_certificate(original(m)).public_bytes(  # type: ignore[method-assign]
        serialization.Encoding.DER
    )
    yield world.jobs().run_round()
    assert world.crt_path("client", 1).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


# -- keep-alive, CRL freshness, link errors ---------------------------------


@pytest_twisted.inlineCallbacks
def test_idle_round_sends_one_nul_with_the_clock_time(world: World) -> None:
    """Nothing to do and fresh CRLs: exactly one NUL carrying the injected clock's UTC time."""
    jobs = world.jobs()
    jobs.rounds = 1  # not a CRL-check round
    yield jobs.run_round()
    [request] = world.signer.requests
    assert isinstance(request, codec.NulRequest)
    now = datetime.datetime.fromtimestamp(world.clock.seconds(), datetime.timezone.utc)
    assert request.timestamp == codec.format_nul_timestamp(now)


@pytest_twisted.inlineCallbacks
def test_no_keepalive_while_the_line_is_busy(world: World) -> None:
    """The NUL only fills idle time: a busy line gets none."""
    world.signer.idle = False
    jobs = world.jobs()
    jobs.rounds = 1
    report = yield jobs.run_round()
    assert world.signer.requests == [] and not report.keepalive


@pytest_twisted.inlineCallbacks
def test_crl_freshness_first_round_and_every_100th(world: World) -> None:
    """Missing/stale CRLs are refreshed in round 0 and round 100, not in between."""
    stale = world.signer.stale_crl(1)
    world.root_config(2).crl.write_bytes(stale)
    jobs = world.jobs()
    report = yield jobs.run_round()
    assert report.crl_refreshed == [1, 2]
    revokes = world.signer.of_kind(codec.RevokeRequest)
    assert [(r.root, r.certificate) for r in revokes] == [(0, b""), (1, b"")]
    assert revokes[0].crl_sha1 == codec.EMPTY_SHA1.encode()
    import hashlib

    assert revokes[1].crl_sha1 == hashlib.sha1(stale).hexdigest().encode()
    for rootcert in (1, 2):
        crl = x509.load_der_x509_crl(world.root_config(rootcert).crl.read_bytes())
        assert crl.last_update_utc.date() == datetime.datetime.now(datetime.timezone.utc).date()
    # stale again, but rounds 1..99 do not look
    world.root_config(2).crl.write_bytes(world.signer.stale_crl(1))
    for _ in range(99):
        report = yield jobs.run_round()
        assert report.crl_refreshed == []
    report = yield jobs.run_round()
    assert report.number == 100 and report.crl_refreshed == [2]


@pytest.mark.parametrize("mode", ["empty", "garbage", "foreign"])
@pytest_twisted.inlineCallbacks
def test_bad_crl_answers_leave_the_old_file(world: World, mode: str) -> None:
    """Empty, garbage or wrongly signed CRL answers never replace the current CRL."""
    stale = world.signer.stale_crl(0)
    path = world.root_config(1).crl
    path.write_bytes(stale)
    world.signer.crl_mode = mode
    report = yield world.jobs().run_round()
    assert 1 not in report.crl_refreshed
    assert path.read_bytes() == stale


@pytest.mark.parametrize("mode", ["auto", "pem", "der"])
@pytest_twisted.inlineCallbacks
def test_crl_answers_as_patch_pem_or_der_are_installed(world: World, mode: str) -> None:
    """xdelta patch (real xdelta), PEM and DER answers all end in the signer's new DER CRL."""
    path = world.root_config(1).crl
    path.write_bytes(world.signer.stale_crl(0))
    world.signer.crl_mode = mode
    report = yield world.jobs().run_round()
    assert 1 in report.crl_refreshed
    newest = list(world.signer.roots[0].history.values())[-1]
    assert path.read_bytes() == newest


@pytest_twisted.inlineCallbacks
def test_link_error_ends_the_round_and_the_next_one_works(world: World) -> None:
    """A link failure ends the round without warnings; the next round signs the row."""
    from twisted.internet.defer import fail

    from signer.protocol.link import LinkTimeout

    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, "/CN=Alice")
    world.write_csr("client", 1, make_csr("Alice", index=4))

    class Flaky:
        def __init__(self) -> None:
            self.failures = 1

        def request(self, message: codec.Request):  # type: ignore[no-untyped-def]
            if self.failures:
                self.failures -= 1
                return fail(LinkTimeout("no ACK within 20 s"))
            return world.signer.request(message)

    jobs = world.jobs(requester=Flaky())
    report = yield jobs.run_round()
    assert report.aborted.startswith("link")
    assert world.db.row("emailcerts", 1)["warning"] == 0
    report = yield jobs.run_round()
    assert report.signed == [("emailcerts", 1)]


# -- revocations -------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_revocation_installs_the_crl_then_marks_the_row(world: World, backend: str) -> None:
    """A row with revoked = 1970-01-01 10:00:01 is revoked, the verified CRL lists it, revoked = NOW()."""
    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, "/CN=Alice")
    world.write_csr("client", 1, make_csr("Alice", index=4))
    jobs = world.jobs()
    yield jobs.run_round()  # signs it and fetches the CRLs
    world.db.execute("UPDATE emailcerts SET revoked = ? WHERE id = 1", (REVOKE_REQUESTED,))
    world.signer.requests.clear()
    report = yield jobs.run_round()
    assert report.revoked == [("emailcerts", 1)]
    [request] = world.signer.of_kind(codec.RevokeRequest)
    certificate = x509.load_pem_x509_certificate(world.crt_path("client", 1).read_bytes())
    assert request.certificate == world.crt_path("client", 1).read_bytes()
    crl = x509.load_der_x509_crl(world.root_config(1).crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
    revoked = world.db.row("emailcerts", 1)["revoked"]
    assert revoked not in (REVOKE_REQUESTED, "0000-00-00 00:00:00")
    # done: a further round does not revoke again
    world.signer.requests.clear()
    report = yield jobs.run_round()
    assert report.revoked == [] and world.signer.of_kind(codec.RevokeRequest) == []


@pytest_twisted.inlineCallbacks
def test_failed_revocation_keeps_the_row_pending(world: World) -> None:
    """An empty CRL answer leaves revoked at the request marker (retried next round)."""
    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, "/CN=Alice")
    world.write_csr("client", 1, make_csr("Alice", index=4))
    jobs = world.jobs()
    yield jobs.run_round()
    world.db.execute("UPDATE emailcerts SET revoked = ? WHERE id = 1", (REVOKE_REQUESTED,))
    world.signer.crl_mode = "empty"
    report = yield jobs.run_round()
    assert report.revoked == []
    assert world.db.row("emailcerts", 1)["revoked"] == REVOKE_REQUESTED
    world.signer.crl_mode = "auto"
    report = yield jobs.run_round()
    assert report.revoked == [("emailcerts", 1)]


@pytest_twisted.inlineCallbacks
def test_revocation_without_certificate_file_is_logged_not_sent(world: World) -> None:
    """A revocation whose certificate file is missing sends nothing and leaves the row."""
    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, "/CN=Alice", crt_name="../crt/client/0/client-1.crt",
                      revoked=REVOKE_REQUESTED)
    jobs = world.jobs()
    jobs.rounds = 1
    report = yield jobs.run_round()
    assert world.signer.of_kind(codec.RevokeRequest) == []
    assert report.keepalive
    assert world.db.row("emailcerts", 1)["revoked"] == REVOKE_REQUESTED


@pytest_twisted.inlineCallbacks
def test_revocation_on_an_unconfigured_root_is_logged_once(world: World) -> None:
    """A revocation for a rootcert without CRL configuration sends nothing and logs one error."""
    from twisted.internet.testing import EventLoggingObserver
    from twisted.logger import LogLevel, globalLogPublisher

    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    try:
        world.db.add_cert("emailcerts", 1, 10, "/CN=Alice", crt_name="x", rootcert=5, revoked=REVOKE_REQUESTED)
        jobs = world.jobs()
        jobs.rounds = 1
        yield jobs.run_round()
        yield jobs.run_round()
    finally:
        globalLogPublisher.removeObserver(observer)
    errors = [e for e in observer if e.get("log_level") == LogLevel.error and "rootcert" in e.get("log_format", "")]
    assert len(errors) == 1 and errors[0]["rootcert"] == 5
    assert world.signer.of_kind(codec.RevokeRequest) == []
    assert world.db.row("emailcerts", 1)["revoked"] == REVOKE_REQUESTED


@pytest_twisted.inlineCallbacks
def test_request_the_signer_never_answers_counts_a_warning(world: World) -> None:
    """A request the signer ACKed but never answered (the legacy server dies on
    bad input) raises the row's warning, so a poison request cannot block the queue."""
    from twisted.internet.defer import fail

    from signer.protocol.link import NoResponse

    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, "/CN=Alice")
    world.write_csr("client", 1, make_csr("Alice", index=4))

    class Dies:
        def request(self, message: codec.Request):  # type: ignore[no-untyped-def]
            if isinstance(message, codec.SignX509Request):
                return fail(NoResponse("no START from the responder within 120 s"))
            return world.signer.request(message)

    jobs = world.jobs(requester=Dies())
    for attempt in range(1, 4):
        report = yield jobs.run_round()
        assert report.aborted.startswith("link")
        assert world.db.row("emailcerts", 1)["warning"] == attempt
    # At the threshold the row is no longer tried: the round gets past it.
    report = yield jobs.run_round()
    assert not report.aborted and report.keepalive
    assert world.signer.of_kind(codec.SignX509Request) == []


@pytest_twisted.inlineCallbacks
def test_certificate_not_signed_by_the_root_is_not_stored(world: World) -> None:
    """An answer for the right key but not signed by the row's root (a forged or
    damaged certificate the XOR byte let through) is refused with a warning."""
    import datetime

    from cryptography.hazmat.primitives import hashes, serialization
    from twisted.internet.defer import succeed

    from tests.support.testca import make_root

    seed_member(world)
    world.db.add_cert("emailcerts", 1, 10, "/CN=Alice")
    world.write_csr("client", 1, make_csr("Alice", index=4))
    other = make_root("Somebody Else's Root")

    class Forger:
        def request(self, message: codec.Request):  # type: ignore[no-untyped-def]
            if not isinstance(message, codec.SignX509Request):
                return world.signer.request(message)
            csr = x509.load_pem_x509_csr(message.csr)
            now = datetime.datetime.now(datetime.timezone.utc)
            certificate = (
                x509.CertificateBuilder()
                .subject_name(csr.subject)
                .issuer_name(world.signer.roots[message.root].root.certificate.subject)
                .public_key(csr.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=30))
                .sign(other.key, hashes.SHA256())
            )
            return succeed(codec.SignX509Response(certificate.public_bytes(serialization.Encoding.PEM)))

    report = yield world.jobs(requester=Forger()).run_round()
    assert report.warned == [("emailcerts", 1)]
    row = world.db.row("emailcerts", 1)
    assert row["warning"] == 1 and row["crt_name"] == ""
    assert not world.crt_path("client", 1).exists()
    # The genuine signer's answer is taken.
    report = yield world.jobs().run_round()
    assert report.signed == [("emailcerts", 1)]
