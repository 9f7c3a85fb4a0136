"""The wake-up trigger: matching job at once, coalescing, never two conversations, fallback poll.

Real :class:`~signer.client.jobs.Jobs` over a sqlite WebDB and the fake
signer; the signer can be held so a test decides when an answer arrives.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater

from signer.client.service import PollingService
from signer.client.wakeup import WakeupSource
from signer.client.wakeup_config import WakeupConfig
from signer.client.wakeup_trigger import WakeupService, WakeupTrigger
from signer.protocol import codec
from tests.client.conftest import World
from tests.support.testca import make_csr


class GatedSigner:
    """The fake signer behind a gate: while ``held``, answers wait for :meth:`release`.

    Records the highest number of conversations open at once.
    """

    def __init__(self, signer: Any) -> None:
        self.signer = signer
        self.held = False
        self.waiting: list[tuple[Deferred[Any], codec.Request]] = []
        self.open = 0
        self.max_open = 0
        self.requests: list[codec.Request] = []

    def request(self, message: codec.Request) -> Deferred[codec.Response]:
        self.requests.append(message)
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        d: Deferred[Any] = Deferred()
        if self.held:
            self.waiting.append((d, message))
        else:
            self._forward(d, message)

        def closed(result: Any) -> Any:
            self.open -= 1
            return result

        return d.addBoth(closed)

    def _forward(self, d: Deferred[Any], message: codec.Request) -> None:
        self.signer.request(message).chainDeferred(d)

    def release(self) -> None:
        self.held = False
        waiting, self.waiting = self.waiting, []
        for d, message in waiting:
            self._forward(d, message)

    def of_kind(self, kind: type) -> list[Any]:
        return [request for request in self.requests if isinstance(request, kind)]


@inlineCallbacks
def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> Any:
    """Let the real reactor run (database threads) until ``condition`` holds."""
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError("condition not reached in time")
        yield deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


def seed(world: World, table: str, row_id: int, name: str, index: int) -> None:
    prefix = {"emailcerts": "client", "domaincerts": "server", "orgemailcerts": "orgclient",
              "orgdomaincerts": "orgserver"}[table]
    owner = {"emailcerts": 10, "domaincerts": 5, "orgemailcerts": 7, "orgdomaincerts": 7}[table]
    world.db.add_cert(table, row_id, owner, f"/CN={name}")
    world.write_csr(prefix, row_id, make_csr(name, index=index))


def members(world: World) -> None:
    world.db.add_user(10, "ann@example.org", "Ann")
    world.db.add_domain(5, 10)
    world.db.add_org_admin(7, 10)


@pytest_twisted.inlineCallbacks
def test_wake_runs_only_the_matching_job(world: World) -> None:
    """A wake for emailcerts signs the emailcerts row at once; the domaincerts row waits; no keep-alive."""
    members(world)
    gated = GatedSigner(world.signer)
    trigger = WakeupTrigger(world.jobs(requester=gated), world.clock)
    yield trigger.run_round()  # the first round (journal recovery, CRL check)
    before = len(gated.requests)
    seed(world, "emailcerts", 1, "Ann", 3)
    seed(world, "domaincerts", 2, "www.example.org", 4)
    trigger.wake("emailcerts", 1)
    yield trigger.when_idle()
    assert world.db.row("emailcerts", 1)["crt_name"] == "../crt/client/0/client-1.crt"
    assert world.db.row("domaincerts", 2)["crt_name"] == ""
    new = gated.requests[before:]
    assert [type(r) for r in new] == [codec.SignX509Request]
    assert trigger.last_job is not None and trigger.last_job.signed == [("emailcerts", 1)]
    assert trigger.last_job_kinds == ("emailcerts",)
    trigger.wake("domaincerts", None)
    yield trigger.when_idle()
    assert world.db.row("domaincerts", 2)["crt_name"] == "../crt/server/0/server-2.crt"


@pytest_twisted.inlineCallbacks
def test_wakes_during_a_job_coalesce_into_one_run_right_after(world: World) -> None:
    """Ten wakes while a job waits for its answer give one more run, for all their kinds; never two conversations."""
    members(world)
    gated = GatedSigner(world.signer)
    trigger = WakeupTrigger(world.jobs(requester=gated), world.clock)
    yield trigger.run_round()
    seed(world, "emailcerts", 1, "Ann", 3)
    gated.held = True
    trigger.wake("emailcerts", 1)
    yield wait_until(lambda: len(gated.waiting) == 1)
    seed(world, "emailcerts", 2, "Ben", 4)
    seed(world, "orgdomaincerts", 3, "org.example.org", 5)
    for row_id in range(10):
        trigger.wake("emailcerts" if row_id % 2 else "orgdomaincerts", row_id + 2)
    assert trigger.busy() and trigger.job_runs == 1
    assert trigger.coalesced == 8  # after the first of each kind, the rest were already due
    gated.release()
    yield trigger.when_idle()
    assert trigger.job_runs == 2
    assert trigger.last_job_kinds == ("emailcerts", "orgdomaincerts")
    for table, row_id in (("emailcerts", 1), ("emailcerts", 2), ("orgdomaincerts", 3)):
        assert world.db.row(table, row_id)["crt_name"], (table, row_id)
    assert gated.max_open == 1


@pytest_twisted.inlineCallbacks
def test_polling_round_waits_for_the_woken_job(world: World) -> None:
    """A polling round due while a woken job runs starts only after it; the round's Deferred has its report."""
    members(world)
    gated = GatedSigner(world.signer)
    trigger = WakeupTrigger(world.jobs(requester=gated), world.clock)
    yield trigger.run_round()
    rounds = trigger.rounds
    seed(world, "emailcerts", 1, "Ann", 3)
    gated.held = True
    trigger.wake("emailcerts", 1)
    yield wait_until(lambda: len(gated.waiting) == 1)
    round_done = trigger.run_round()
    yield deferLater(reactor, 0.05, lambda: None)
    assert not round_done.called and trigger.rounds == rounds
    gated.release()
    report = yield round_done
    assert trigger.rounds == rounds + 1
    assert report.signed == []  # row 1 was done by the woken job before the round read the table
    assert gated.max_open == 1


@pytest_twisted.inlineCallbacks
def test_first_wake_runs_a_full_round_with_journal_recovery(world: World) -> None:
    """Before any round, a wake runs the full round: the crash journal is read first (a warning is counted)."""
    members(world)
    seed(world, "emailcerts", 1, "Ann", 3)
    journal = world.tmp / "state" / "in-flight"
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_text("emailcerts 1\n")
    trigger = WakeupTrigger(world.jobs(), world.clock)
    trigger.wake("gpg", None)
    yield trigger.when_idle()
    assert trigger.rounds == 1 and trigger.job_runs == 0
    row = world.db.row("emailcerts", 1)
    assert row["warning"] == 1 and row["crt_name"]
    assert not journal.exists()


@pytest_twisted.inlineCallbacks
def test_revoke_and_crl_wakes(world: World) -> None:
    """'revoke' runs the revocations of the four tables; 'crl' refreshes a stale CRL at once."""
    members(world)
    trigger = WakeupTrigger(world.jobs(), world.clock)
    seed(world, "orgemailcerts", 4, "Org Person", 6)
    yield trigger.run_round()
    assert world.db.row("orgemailcerts", 4)["crt_name"]
    world.db.execute("UPDATE orgemailcerts SET revoked = '1970-01-01 10:00:01' WHERE id = 4")
    trigger.wake("revoke", 4)
    yield trigger.when_idle()
    assert trigger.last_job is not None and trigger.last_job.revoked == [("orgemailcerts", 4)]
    assert not world.db.row("orgemailcerts", 4)["revoked"].startswith("1970")
    root = world.root_config(2)
    root.crl.write_bytes(world.signer.stale_crl(1))
    trigger.wake("crl")
    yield trigger.when_idle()
    assert trigger.last_job.crl_refreshed == [2]


@pytest_twisted.inlineCallbacks
def test_unknown_kind_and_stopping_start_nothing(world: World) -> None:
    """A wake for an unknown kind, or after stop(), sends nothing to the signer."""
    gated = GatedSigner(world.signer)
    trigger = WakeupTrigger(world.jobs(requester=gated), world.clock)
    yield trigger.run_round()
    sent = len(gated.requests)
    seed(world, "emailcerts", 1, "Ann", 3)
    trigger.wake("certificates", 1)
    assert not trigger.busy()
    trigger.stop()
    trigger.wake("emailcerts", 1)
    yield trigger.when_idle()
    assert len(gated.requests) == sent and trigger.wakes == 0
    assert world.db.row("emailcerts", 1)["crt_name"] == ""


@pytest_twisted.inlineCallbacks
def test_polling_service_runs_at_the_fallback_interval_and_wakes_in_between(world: World) -> None:
    """With wake-up on, PollingService(trigger, 60 s): no round before 60 s, a wake signs at once, a round at 60 s."""
    members(world)
    gated = GatedSigner(world.signer)
    trigger = WakeupTrigger(world.jobs(requester=gated), world.clock)
    config = WakeupConfig(source="redis")
    interval = config.polling_interval(2.7)
    assert interval == 60.0
    polling = PollingService(trigger, interval, world.clock)  # type: ignore[arg-type]
    polling.startService()
    yield wait_until(lambda: trigger.rounds == 1 and not trigger.busy())
    world.clock.advance(59.0)
    yield deferLater(reactor, 0.05, lambda: None)
    assert trigger.rounds == 1
    seed(world, "emailcerts", 1, "Ann", 3)
    trigger.wake("emailcerts", 1)
    yield trigger.when_idle()
    assert world.db.row("emailcerts", 1)["crt_name"]
    seed(world, "domaincerts", 2, "www.example.org", 4)  # its message is lost
    world.clock.advance(1.0)
    yield wait_until(lambda: trigger.rounds == 2 and not trigger.busy())
    assert world.db.row("domaincerts", 2)["crt_name"]
    assert gated.max_open == 1
    yield polling.stopService()


class _SilentSource(WakeupSource):
    """A source that never connects (the trigger is driven directly)."""

    kind = "test"

    def describe(self) -> str:
        return "nowhere"

    def startService(self) -> None:  # noqa: N802
        self.running = 1

    def stopService(self) -> None:  # noqa: N802
        self.running = 0


@pytest_twisted.inlineCallbacks
def test_wakeup_service_stop_waits_for_the_woken_job(world: World) -> None:
    """Stopping the wake-up service waits for the woken conversation in flight, then nothing new starts."""
    members(world)
    gated = GatedSigner(world.signer)
    trigger = WakeupTrigger(world.jobs(requester=gated), world.clock)
    yield trigger.run_round()
    seed(world, "emailcerts", 1, "Ann", 3)
    seed(world, "emailcerts", 2, "Ben", 4)
    source = _SilentSource(trigger.wake, world.clock)
    service = WakeupService(WakeupConfig(source="redis"), trigger, world.clock, stop_grace=30.0, source=source)
    service.startService()
    gated.held = True
    source.message_received(b"emailcerts 1")
    yield wait_until(lambda: len(gated.waiting) == 1)
    stopped = service.stopService()
    assert not stopped.called
    gated.release()
    yield stopped
    assert world.db.row("emailcerts", 1)["crt_name"]
    assert world.db.row("emailcerts", 2)["crt_name"] == ""  # not started: stopping
    health = service.health()
    assert health["messages"] == 1 and health["wakes"] == 1 and health["source"] == "test"


@pytest_twisted.inlineCallbacks
def test_wakeup_service_abandons_a_hanging_job_after_the_grace(world: World) -> None:
    """A woken conversation that outlasts the stop grace is cancelled; its journal entry stays."""
    members(world)
    gated = GatedSigner(world.signer)
    trigger = WakeupTrigger(world.jobs(requester=gated), world.clock)
    yield trigger.run_round()
    seed(world, "emailcerts", 1, "Ann", 3)
    source = _SilentSource(trigger.wake, world.clock)
    service = WakeupService(WakeupConfig(source="redis"), trigger, world.clock, stop_grace=5.0, source=source)
    service.startService()
    gated.held = True
    trigger.wake("emailcerts", 1)
    yield wait_until(lambda: len(gated.waiting) == 1)
    stopped = service.stopService()
    yield deferLater(reactor, 0.01, lambda: None)
    world.clock.advance(4.9)
    assert not stopped.called
    world.clock.advance(0.2)
    yield stopped
    assert trigger.last_job is not None and trigger.last_job.aborted == "abandoned while stopping"
    assert (world.tmp / "state" / "in-flight").read_text() == "emailcerts 1\n"
