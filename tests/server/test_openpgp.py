"""OpenPGP certification against the real gpg, with throw-away keys."""

from __future__ import annotations

import json
import shutil
import stat
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import pytest_twisted

from signer.protocol import codec
from signer.server.errors import RequestRefused
from signer.server.openpgp import (
    DEFAULT_FORBIDDEN_UID_CHARACTERS,
    Gpg,
    KeyListing,
    OpenPGPCertifier,
    create_ca_key,
    load_ca_key,
    parse_listing,
    throwaway_home,
    uid_problem,
)
from tests.support.gpg import GPG_BINARY, DAY, KeyMaker, check_sigs, list_packets, short_tempdir

CPS = "http://www.cacert.org/cps.php"


# -- fixtures ----------------------------------------------------------------------


class Ca:
    """The session's throw-away OpenPGP CA."""

    def __init__(self, home: Path, fingerprint: str, public_key: bytes, now: float) -> None:
        self.home = home
        self.fingerprint = fingerprint
        self.public_key = public_key
        self.now = now


@pytest.fixture(scope="session")
def ca() -> Iterator[Ca]:
    base = short_tempdir("sgca")
    home = base / "ca"
    fingerprint = create_ca_key(home)
    gpg = Gpg(home, binary=GPG_BINARY)
    public_key = gpg.run(["--export", fingerprint]).stdout
    gpg.kill_agent()
    # The clock every test uses: just after the CA key was made (gpg refuses
    # to sign with a key "from the future").
    yield Ca(home, fingerprint, public_key, now=float(int(time.time()) + 60))
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def keys(ca: Ca) -> Iterator[KeyMaker]:
    base = short_tempdir("sgkeys")
    maker = KeyMaker(base / "k", now=ca.now)
    yield maker
    maker.close()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def work_dir() -> Iterator[Path]:
    path = short_tempdir("sgw")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_certifier(ca: Ca, work_dir: Path) -> Callable[..., OpenPGPCertifier]:
    def make(**overrides: object) -> OpenPGPCertifier:
        options: dict[str, object] = {"work_dir": work_dir, "now": lambda: ca.now, "gpg_binary": GPG_BINARY}
        options.update(overrides)
        home = options.pop("gnupg_home", ca.home)
        key_id = options.pop("key_id", ca.fingerprint)
        return OpenPGPCertifier(home, key_id, CPS, **options)  # type: ignore[arg-type]

    return make


@pytest.fixture
def certifier(make_certifier: Callable[..., OpenPGPCertifier]) -> OpenPGPCertifier:
    return make_certifier()


def request(key: bytes, days: int = 366, root: int = 0) -> codec.SignOpenPGPRequest:
    return codec.SignOpenPGPRequest(key=key, days=days, root=root)


def ca_certifications(listing: KeyListing, ca: Ca) -> dict[bytes, list]:  # type: ignore[type-arg]
    """User ID -> the CA's certifications on it."""
    return {
        uid.raw: [sig for sig in uid.certifications if sig.made_by(ca.fingerprint)] for uid in listing.uids
    }


def agent_processes_under(path: Path) -> list[str]:
    """Command lines of running processes that mention ``path`` (left-over agents)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(cmdline)
    return found


# -- certification ---------------------------------------------------------------------


def test_every_user_id_gets_a_sha256_certification_with_expiry_and_policy(
    certifier: OpenPGPCertifier, keys: KeyMaker, ca: Ca, work_dir: Path
) -> None:
    """A valid key with two user IDs and a subkey comes back armored, each user
    ID certified by the CA key: good signature, class 0x10, created now,
    expiring after ``days``, SHA-256, the CPS as policy URL; nothing left in
    the work dir."""
    key = keys.make(keys.unique_uid("Alice Example"), keys.unique_uid("Alice Work"))
    answer = certifier.certify(request(key.armored, days=366))

    assert answer.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    [listing] = check_sigs(answer, ca.public_key)
    assert listing.fingerprint == key.fingerprint
    by_uid = ca_certifications(listing, ca)
    assert set(by_uid) == {uid.encode() for uid in key.uids}
    for sigs in by_uid.values():
        [sig] = sigs
        assert sig.check == "!"
        assert sig.sig_class == "10x"
        assert sig.created == int(ca.now)
        assert sig.expires == int(ca.now) + 366 * DAY
        assert sig.digest_algo == 8
    packets = list_packets(answer)
    certification_packets = [p for p in packets.split(":signature packet:") if "sigclass 0x10" in p]
    assert len(certification_packets) == 2
    for packet in certification_packets:
        assert "digest algo 8," in packet
        assert f"policy: {CPS}" in packet
        assert ca.fingerprint in packet
    assert list(work_dir.iterdir()) == []
    assert agent_processes_under(work_dir) == []


def test_binary_request_is_accepted(certifier: OpenPGPCertifier, keys: KeyMaker, ca: Ca) -> None:
    """field1 may hold the key in binary OpenPGP form, not only armored."""
    key = keys.make()
    [listing] = check_sigs(certifier.certify(request(key.binary)), ca.public_key)
    assert all(sigs for sigs in ca_certifications(listing, ca).values())


def test_days_sets_the_certification_expiry(certifier: OpenPGPCertifier, keys: KeyMaker, ca: Ca) -> None:
    """The header's days become the signature expiry (here 30 days)."""
    key = keys.make()
    [listing] = check_sigs(certifier.certify(request(key.armored, days=30)), ca.public_key)
    [[sig]] = ca_certifications(listing, ca).values()
    assert sig.expires - sig.created == 30 * DAY


def test_legacy_vector_key_is_certified(
    make_certifier: Callable[..., OpenPGPCertifier], ca: Ca, vectors_dir: Path, work_dir: Path
) -> None:
    """The key the legacy client sent in the recorded exchange gets certified,
    and the answer is the same key (same fingerprint as in the legacy answer)."""
    vector = json.loads((vectors_dir / "01_sign_openpgp.json").read_text())
    sent = vector["request"]["fields"][0]["text"].encode()
    legacy_answer = vector["response"]["fields"][0]["text"].encode()
    header = vector["request"]["header"]
    with throwaway_home(work_dir, GPG_BINARY) as gpg:
        [shown] = parse_listing(gpg.run(["--with-colons", "--show-keys"], stdin=sent).stdout)
    # Freeze the clock an hour after both the recorded key and the session's CA
    # key were made (gpg refuses keys "from the future"): the test does not
    # depend on the day it runs (the recorded key expires in 2028).
    when = max(float(shown.created), ca.now) + 3600
    certifier = make_certifier(now=lambda: when)
    answer = certifier.certify(request(sent, days=header["days"], root=header["root"]))

    [listing] = check_sigs(answer, ca.public_key)
    [legacy] = check_sigs(legacy_answer)
    assert listing.fingerprint == legacy.fingerprint == shown.fingerprint
    by_uid = ca_certifications(listing, ca)
    assert list(by_uid) == [b"Alice Tester <alice@example.org>"]
    [sig] = by_uid[b"Alice Tester <alice@example.org>"]
    assert (sig.created, sig.expires, sig.digest_algo) == (int(when), int(when) + 366 * DAY, 8)


def test_revoked_user_id_is_kept_but_not_certified(
    certifier: OpenPGPCertifier, keys: KeyMaker, ca: Ca
) -> None:
    """Only usable user IDs are certified; a revoked one stays revoked, unsigned."""
    key, kept, dropped = keys.with_revoked_uid()
    [listing] = check_sigs(certifier.certify(request(key.armored)), ca.public_key)
    by_uid = ca_certifications(listing, ca)
    assert len(by_uid[kept.encode()]) == 1
    assert by_uid[dropped.encode()] == []
    assert [uid.validity for uid in listing.uids if uid.raw == dropped.encode()] == ["r"]


def test_renewal_replaces_the_earlier_certification(
    make_certifier: Callable[..., OpenPGPCertifier], keys: KeyMaker, ca: Ca
) -> None:
    """A key that already carries a valid CA certification (and one by a third
    party) gets a fresh one; the answer holds only the new CA certification
    and the self-signatures."""
    key = keys.make()
    first = make_certifier().certify(request(key.armored))
    later = ca.now + 100 * DAY
    second = make_certifier(now=lambda: later).certify(request(first))
    [listing] = check_sigs(second, ca.public_key)
    [[sig]] = ca_certifications(listing, ca).values()
    assert sig.created == int(later)
    assert sig.expires == int(later) + 366 * DAY
    [uid] = listing.uids
    assert {s.issuer_fingerprint for s in uid.certifications} == {ca.fingerprint, key.fingerprint}


def test_answer_is_usable_by_the_legacy_gpg_import(certifier: OpenPGPCertifier, keys: KeyMaker) -> None:
    """The armored answer imports cleanly into a fresh keyring (what the web
    host does with it)."""
    key = keys.make()
    answer = certifier.certify(request(key.armored))
    home = short_tempdir("sgi")
    try:
        result = Gpg(home, binary=GPG_BINARY).run(["--import"], stdin=answer)
        assert any(line[:1] == ["IMPORT_OK"] for line in result.status)
    finally:
        Gpg(home, binary=GPG_BINARY).kill_agent()
        shutil.rmtree(home, ignore_errors=True)


@pytest_twisted.inlineCallbacks
def test_certify_deferred_runs_in_a_thread(certifier: OpenPGPCertifier, keys: KeyMaker) -> Iterator[object]:
    """certify_deferred hands the blocking work to the thread pool and fires
    with the armored key."""
    key = keys.make()
    answer = yield certifier.certify_deferred(request(key.armored))
    assert answer.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")


# -- refusals ----------------------------------------------------------------------------


def refused(certifier: OpenPGPCertifier, req: codec.SignOpenPGPRequest, work_dir: Path) -> str:
    """Certify, expect a refusal, check the throw-away home is gone; return the reason."""
    with pytest.raises(RequestRefused) as info:
        certifier.certify(req)
    assert list(work_dir.iterdir()) == []
    assert agent_processes_under(work_dir) == []
    return info.value.reason


def test_two_keys_are_refused(certifier: OpenPGPCertifier, keys: KeyMaker, work_dir: Path) -> None:
    """A request carrying two public keys is refused."""
    bundle = keys.bundle(keys.make(), keys.make())
    assert "2 keys" in refused(certifier, request(bundle), work_dir)


def test_two_concatenated_armor_blocks_are_refused(
    certifier: OpenPGPCertifier, keys: KeyMaker, work_dir: Path
) -> None:
    """Two armored keys pasted one after the other are two keys as well."""
    data = keys.make().armored + keys.make().armored
    assert "2 keys" in refused(certifier, request(data), work_dir)


def test_expired_key_is_refused(certifier: OpenPGPCertifier, keys: KeyMaker, work_dir: Path) -> None:
    """A key past its expiry date is refused."""
    assert "expired" in refused(certifier, request(keys.expired().armored), work_dir)


def test_revoked_key_is_refused(certifier: OpenPGPCertifier, keys: KeyMaker, work_dir: Path) -> None:
    """A key carrying a revocation signature is refused."""
    assert "revoked" in refused(certifier, request(keys.revoked().armored), work_dir)


@pytest.mark.parametrize(
    "data",
    [
        b"garbage, not a key",
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnonsense\n-----END PGP PUBLIC KEY BLOCK-----\n",
        bytes(range(256)),
        b"\x99\x00\x05hello",
    ],
    ids=["text", "bad-armor", "binary-noise", "truncated-packet"],
)
def test_garbage_is_refused(certifier: OpenPGPCertifier, data: bytes, work_dir: Path) -> None:
    """Anything that is not an OpenPGP key is refused with 'no key'."""
    assert "no key" in refused(certifier, request(data), work_dir)


@pytest.mark.parametrize("data", [b"", b"  \n\r\n"], ids=["empty", "blank"])
def test_empty_field_is_refused(certifier: OpenPGPCertifier, data: bytes, work_dir: Path) -> None:
    """An empty (or blank) field 1 is refused before gpg runs."""
    assert "no key" in refused(certifier, request(data), work_dir)


@pytest.mark.parametrize(
    "uid",
    [
        "Evil\nLine <evil@example.org>",
        "Evil\rReturn <evil@example.org>",
        "Evil\tTab <evil@example.org>",
        'Quote " <evil@example.org>',
        "Miles O'Brien <evil@example.org>",
        "Back\\slash <evil@example.org>",
        "Del\x7f <evil@example.org>",
        "C1\u0085control <evil@example.org>",
    ],
    ids=["LF", "CR", "TAB", "dquote", "squote", "backslash", "DEL", "C1-NEL"],
)
def test_forbidden_characters_in_a_user_id_are_refused(
    certifier: OpenPGPCertifier, keys: KeyMaker, uid: str, work_dir: Path
) -> None:
    """A key with a user ID carrying a forbidden character is refused, even
    when its other user IDs are fine."""
    key = keys.make(keys.unique_uid("Fine Name"), uid)
    reason = refused(certifier, request(key.armored), work_dir)
    assert "user ID" in reason and ("forbidden" in reason or "control" in reason)


def test_user_id_that_is_not_utf8_is_refused(certifier: OpenPGPCertifier, keys: KeyMaker, work_dir: Path) -> None:
    """User IDs must be UTF-8 (RFC 4880); a Latin-1 user ID is refused."""
    key = keys.make()
    key = keys.add_uid(key, b"L\xe9on <leon@example.org>")
    assert "not valid UTF-8" in refused(certifier, request(key.armored), work_dir)


@pytest.mark.parametrize("root", [1, 2, 255])
def test_wrong_root_is_refused(certifier: OpenPGPCertifier, keys: KeyMaker, root: int, work_dir: Path) -> None:
    """Only OpenPGP root 0 exists."""
    assert "root" in refused(certifier, request(keys.make().armored, root=root), work_dir)


def test_zero_days_is_refused(certifier: OpenPGPCertifier, keys: KeyMaker, work_dir: Path) -> None:
    """days = 0 would be a certification that never expires: refused."""
    assert "0 days" in refused(certifier, request(keys.make().armored, days=0), work_dir)


def test_days_above_the_maximum_are_refused(
    make_certifier: Callable[..., OpenPGPCertifier], keys: KeyMaker, work_dir: Path
) -> None:
    """days above the configured maximum are refused."""
    certifier = make_certifier(max_days=400)
    assert "maximum" in refused(certifier, request(keys.make().armored, days=401), work_dir)


def test_secret_key_material_is_refused(certifier: OpenPGPCertifier, keys: KeyMaker, work_dir: Path) -> None:
    """A request carrying a secret key is refused before anything is imported."""
    key = keys.make()
    assert "secret" in refused(certifier, request(keys.export_secret(key.fingerprint)), work_dir)


def test_the_ca_key_itself_is_refused(certifier: OpenPGPCertifier, ca: Ca, work_dir: Path) -> None:
    """Nobody gets the CA key certified by itself."""
    assert "CA's own key" in refused(certifier, request(ca.public_key), work_dir)


def test_key_from_the_future_is_refused(
    make_certifier: Callable[..., OpenPGPCertifier], keys: KeyMaker, ca: Ca, work_dir: Path
) -> None:
    """A key created after the signing host's 'now' is refused with a hint at the clock."""
    key = keys.make()
    certifier = make_certifier(now=lambda: ca.now - 2 * DAY)
    assert "clock" in refused(certifier, request(key.armored), work_dir)


def test_a_refusal_does_not_stop_the_next_certification(
    certifier: OpenPGPCertifier, keys: KeyMaker, ca: Ca, work_dir: Path
) -> None:
    """After a refused request the same certifier serves the next one."""
    refused(certifier, request(b"garbage"), work_dir)
    [listing] = check_sigs(certifier.certify(request(keys.make().armored)), ca.public_key)
    assert all(sigs for sigs in ca_certifications(listing, ca).values())


# -- CA key configurations --------------------------------------------------------------


@pytest.fixture(scope="module")
def protected_ca(ca: Ca) -> Iterator[tuple[Path, str]]:
    """A CA home whose key is protected by the passphrase 'correct horse'."""
    base = short_tempdir("sgpca")
    home = base / "ca"
    home.mkdir(mode=0o700)
    gpg = Gpg(home, binary=GPG_BINARY, faked_time=None)
    gpg.run(
        ["--passphrase-fd", "0", "--quick-generate-key", "Protected CA <pca@example.org>", "ed25519", "cert", "never"],
        stdin=b"correct horse\n",
    )
    [listing] = parse_listing(gpg.run(["--with-colons", "--list-keys"]).stdout)
    gpg.kill_agent()
    yield home, listing.fingerprint
    shutil.rmtree(base, ignore_errors=True)


def test_passphrase_protected_ca_key(
    make_certifier: Callable[..., OpenPGPCertifier], protected_ca: tuple[Path, str], keys: KeyMaker, tmp_path: Path
) -> None:
    """A protected CA key signs with the configured passphrase or passphrase
    file, and a wrong passphrase ends in a refusal (not a hang: loopback
    pinentry, no prompt)."""
    home, fingerprint = protected_ca
    key = keys.make()
    good = make_certifier(gnupg_home=home, key_id=fingerprint, passphrase="correct horse")
    assert good.certify(request(key.armored)).startswith(b"-----BEGIN PGP")
    secret_file = tmp_path / "pgp-passphrase"
    secret_file.write_text("correct horse\n")
    from_file = make_certifier(gnupg_home=home, key_id=fingerprint, passphrase_file=secret_file)
    assert from_file.certify(request(key.armored)).startswith(b"-----BEGIN PGP")
    wrong = make_certifier(gnupg_home=home, key_id=fingerprint, passphrase="wrong")
    with pytest.raises(RequestRefused, match="could not certify"):
        wrong.certify(request(key.armored))
    missing = make_certifier(gnupg_home=home, key_id=fingerprint)
    with pytest.raises(RequestRefused):
        missing.certify(request(key.armored))


def test_ca_key_found_by_user_id_and_the_keyring_left_untouched(
    make_certifier: Callable[..., OpenPGPCertifier], ca: Ca, keys: KeyMaker
) -> None:
    """The CA key may be named by its e-mail (legacy: gpg@cacert.org); the CA
    keyring is only read (no file in it changes)."""
    before = {p: p.stat().st_mtime_ns for p in ca.home.rglob("*") if p.is_file()}
    certifier = make_certifier(key_id="gpg@example.org")
    assert certifier.check() == ca.fingerprint
    certifier.certify(request(keys.make().armored))
    after = {p: p.stat().st_mtime_ns for p in ca.home.rglob("*") if p.is_file()}
    assert after == before


def test_gnupg1_keyring_layout_works_and_stays_untouched(
    make_certifier: Callable[..., OpenPGPCertifier], ca: Ca, keys: KeyMaker
) -> None:
    """The legacy signer's keyring (GnuPG 1.x pubring.gpg + secring.gpg, no
    private-keys-v1.d) is migrated in the scratch copy only and certifies."""
    base = short_tempdir("sgold")
    legacy = base / "gpg_root_0"
    legacy.mkdir(mode=0o700)
    exporter = Gpg(base / "x", binary=GPG_BINARY)
    try:
        shutil.copytree(ca.home, exporter.home, ignore=shutil.ignore_patterns("S.*"))
        (legacy / "pubring.gpg").write_bytes(exporter.run(["--export", ca.fingerprint]).stdout)
        (legacy / "secring.gpg").write_bytes(exporter.run(["--export-secret-keys", ca.fingerprint]).stdout)
        certifier = make_certifier(gnupg_home=legacy, key_id="gpg@example.org")
        [listing] = check_sigs(certifier.certify(request(keys.make().armored)), ca.public_key)
        assert all(len(sigs) == 1 for sigs in ca_certifications(listing, ca).values())
        assert sorted(p.name for p in legacy.iterdir()) == ["pubring.gpg", "secring.gpg"]
    finally:
        exporter.kill_agent()
        shutil.rmtree(base, ignore_errors=True)


def test_unknown_ca_key_is_a_configuration_error(
    make_certifier: Callable[..., OpenPGPCertifier], keys: KeyMaker, work_dir: Path
) -> None:
    """check() names a CA key that is not in the keyring; certify refuses."""
    certifier = make_certifier(key_id="nobody@example.org")
    with pytest.raises(ValueError, match="nobody@example.org"):
        certifier.check()
    assert "CA key unusable" in refused(certifier, request(keys.make().armored), work_dir)


def test_public_only_ca_keyring_is_a_configuration_error(ca: Ca, tmp_path: Path) -> None:
    """A keyring holding only the CA's public key cannot certify."""
    home = short_tempdir("sgpub")
    try:
        Gpg(home, binary=GPG_BINARY).run(["--import"], stdin=ca.public_key)
        with pytest.raises(ValueError):
            load_ca_key(home, ca.fingerprint, GPG_BINARY)
    finally:
        Gpg(home, binary=GPG_BINARY).kill_agent()
        shutil.rmtree(home, ignore_errors=True)


def test_wedged_gpg_times_out(
    make_certifier: Callable[..., OpenPGPCertifier], tmp_path: Path, keys: KeyMaker, work_dir: Path
) -> None:
    """A gpg that never finishes is killed after the timeout and the request
    refused quickly (stand-in binary that sleeps)."""
    sleeper = tmp_path / "gpg"
    sleeper.write_text("#!/bin/sh\nexec sleep 30\n")
    sleeper.chmod(0o755)
    certifier = make_certifier(gpg_binary=str(sleeper), timeout=0.5)
    started = time.monotonic()
    reason = refused(certifier, request(keys.make().armored), work_dir)
    assert "did not finish" in reason
    assert time.monotonic() - started < 10


def test_missing_gpg_binary_is_a_refusal(
    make_certifier: Callable[..., OpenPGPCertifier], keys: KeyMaker, work_dir: Path
) -> None:
    """A missing gpg program gives a refusal naming it, not a crash."""
    certifier = make_certifier(gpg_binary="/nonexistent/gpg")
    assert "/nonexistent/gpg" in refused(certifier, request(keys.make().armored), work_dir)


@pytest.mark.parametrize(
    "options",
    [
        {"digest": "SHA1"},
        {"digest": "MD5"},
        {"max_days": 0},
        {"cert_level": 4},
        {"passphrase": "a", "passphrase_file": Path("/x")},
        {"timeout": 0},
    ],
)
def test_bad_configuration_is_rejected(ca: Ca, options: dict[str, object]) -> None:
    """Invalid certifier settings raise ValueError at construction."""
    with pytest.raises(ValueError):
        OpenPGPCertifier(ca.home, ca.fingerprint, CPS, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["", "http://x y", "!http://critical", "http://x\n"])
def test_bad_cps_url_is_rejected(ca: Ca, url: str) -> None:
    """The policy URL goes into every certification: no spaces, no controls."""
    with pytest.raises(ValueError):
        OpenPGPCertifier(ca.home, ca.fingerprint, url)


def test_create_ca_key_makes_a_certification_key(tmp_path: Path) -> None:
    """create_ca_key makes a 0700 home holding one unprotected certify-capable
    secret key and returns its fingerprint; no agent is left running."""
    home = short_tempdir("sgnew") / "home"
    try:
        fingerprint = create_ca_key(home, name="Rehearsal CA", email="ca@example.org")
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        ca = load_ca_key(home, fingerprint, GPG_BINARY)
        assert ca.fingerprint == fingerprint and len(fingerprint) == 40
        assert agent_processes_under(home) == []
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)


# -- pure helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b"Alice <alice@example.org>", None),
        ("J\u00f6rg M\u00fcller <j@example.org>".encode(), None),
        (b"Hash # and (comment) <h@example.org>", None),
        (b"", "is empty"),
        (b"Nul\x00 <n@example.org>", "contains the control character U+0000"),
        (b"Cr\r <c@example.org>", "contains the control character U+000D"),
        (b"Lf\n <c@example.org>", "contains the control character U+000A"),
        (b"Q\" <q@example.org>", "contains the forbidden character '\"'"),
        (b"\xff\xfe", "is not valid UTF-8"),
    ],
)
def test_uid_problem(raw: bytes, problem: str | None) -> None:
    """The user ID rules: controls, quotes, backslash and non-UTF-8 refused."""
    assert uid_problem(raw) == problem


def test_forbidden_characters_default() -> None:
    """The documented default set: double quote, single quote, backslash."""
    assert set(DEFAULT_FORBIDDEN_UID_CHARACTERS) == {'"', "'", "\\"}


def test_parse_listing_unescapes_user_ids_and_skips_subkey_bindings() -> None:
    """gpg's colon escapes (\\xHH, \\n) are undone; subkey binding signatures
    are not counted as certifications of the last user ID."""
    output = (
        b"pub:-:255:22:AAAABBBBCCCCDDDD:1700000000:1800000000::-:::scSC:::::ed25519:::0:\n"
        b"fpr:::::::::0123456789ABCDEF0123456789ABCDEF01234567:\n"
        b"uid:-::::1700000000::X::Back\\x5cslash\\nNew\\x3a <a@b>::::::::::0:\n"
        b"sig:!::22:AAAABBBBCCCCDDDD:1700000000::::x:13x::0123456789ABCDEF0123456789ABCDEF01234567:::8:\n"
        b"sub:-:255:18:EEEEFFFF00001111:1700000000::::::e:::::cv25519::\n"
        b"fpr:::::::::FFFF456789ABCDEF0123456789ABCDEF01234567:\n"
        b"sig:!::22:AAAABBBBCCCCDDDD:1700000000::::x:18x::0123456789ABCDEF0123456789ABCDEF01234567:::8:\n"
    )
    [key] = parse_listing(output)
    assert key.fingerprint == "0123456789ABCDEF0123456789ABCDEF01234567"
    assert key.expires == 1800000000
    [uid] = key.uids
    assert uid.raw == b"Back\\slash\nNew: <a@b>"
    assert [sig.sig_class for sig in uid.certifications] == ["13x"]
