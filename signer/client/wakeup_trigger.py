"""Glue between a wake-up source and the client's jobs: run the matching job at once.

:class:`WakeupTrigger` owns the one :class:`~signer.client.jobs.Jobs` of the
client and serialises everything that talks to the signer:

- ``run_round()`` is the polling round. The
  :class:`~signer.client.service.PollingService` is given the trigger in
  place of the jobs (it has the same ``run_round``/``stop``/``stopping``/
  ``when_mails_sent``), so its LoopingCall keeps running, at
  ``[wakeup] fallback_interval`` instead of ``[polling] interval``;
- ``wake(kind, row_id)`` (the sources' callback) runs the job of that kind
  at once: ``gpg`` the OpenPGP requests, ``emailcerts`` … ``orgdomaincerts``
  the certificate requests of that table, ``revoke`` the revocations of the
  four tables, ``crl`` the CRL freshness check. The row id is only logged:
  the job reads every pending row of its kind from the database (the source
  of truth), which includes that row.

Never two conversations at once: while a round or a job runs, further wakes
only mark their kind dirty, and one run for all dirty kinds follows right
after (coalescing: a burst of 100 messages costs one or two runs). A polling
round due while a job runs waits for it, then runs; a full round clears the
dirty kinds it covers (not ``crl``, which a round only checks every
``crl_check_every``-th time). Before the first full round (journal recovery
after a crash) a wake runs a full round instead of a single job.

:class:`WakeupService` runs the source under the client's service tree, and
on stop waits for the job in flight (up to ``stop_grace``, then cancels it,
like the polling service does).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from signer.client.jobs import Jobs, RoundReport, _Stopping
from signer.client.wakeup import KINDS, WakeupSource, make_wakeup_source
from signer.client.wakeup_config import WakeupConfig
from signer.client.webdb import CERT_TABLES
from signer.protocol.link import LinkError

#: Kinds a full polling round covers (``crl`` only every n-th round).
ROUND_KINDS = frozenset({"gpg", *CERT_TABLES, "revoke"})


class WakeupTrigger:
    """Runs polling rounds and woken jobs one at a time over one :class:`Jobs`."""

    log = Logger()

    def __init__(self, jobs: Jobs, clock: IReactorTime) -> None:
        self.jobs = jobs
        self.clock = clock
        self.wakes = 0
        self.coalesced = 0
        self.job_runs = 0
        self.last_job: RoundReport | None = None
        self.last_job_kinds: tuple[str, ...] = ()
        self.last_wake_at: float | None = None
        self._dirty: set[str] = set()
        self._round_waiters: list[Deferred[Any]] = []
        self._busy = False
        self._inflight: Deferred[Any] | None = None
        self._idle_waiters: list[Deferred[None]] = []

    # -- what PollingService calls (same names as Jobs) ----------------------

    def run_round(self) -> Deferred[Any]:
        """A full polling round, after whatever runs now; fires with its report.

        Cancelling the returned Deferred cancels the conversation in flight
        (the polling service does so when the stop grace is over).
        """
        waiter: Deferred[Any] = Deferred(lambda _: self.cancel_inflight())
        self._round_waiters.append(waiter)
        self._kick()
        return waiter

    @property
    def stopping(self) -> bool:
        return self.jobs.stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self.jobs.stopping = value

    def stop(self) -> None:
        """Start no new conversation; drop the dirty kinds."""
        self.jobs.stop()
        self._dirty.clear()

    def when_mails_sent(self) -> Deferred[Any]:
        return self.jobs.when_mails_sent()

    @property
    def rounds(self) -> int:
        return self.jobs.rounds

    # -- wake-up ---------------------------------------------------------------

    def wake(self, kind: str, row_id: int | None = None) -> None:
        """Run the job of ``kind`` now, or right after the run in progress."""
        if kind not in KINDS:
            self.log.warn("Wake-up for unknown kind {kind!r} ignored", kind=kind)
            return
        if self.jobs.stopping:
            return
        self.wakes += 1
        self.last_wake_at = self.clock.seconds()
        if kind in self._dirty:
            self.coalesced += 1  # already due: costs nothing
        self.log.debug("Wake-up: {kind} {id}", kind=kind, id=row_id)
        self._dirty.add(kind)
        self._kick()

    def busy(self) -> bool:
        """A round or a job is running (or about to)."""
        return self._busy

    def when_idle(self) -> Deferred[None]:
        """Fires when nothing runs and nothing is queued."""
        if not self._busy:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        return d

    def cancel_inflight(self) -> None:
        """Cancel the round or job in flight (resets the link)."""
        if self._inflight is not None:
            self._inflight.cancel()

    def health(self) -> dict[str, Any]:
        now = self.clock.seconds()
        last = self.last_job
        return {
            "wakes": self.wakes,
            "coalesced": self.coalesced,
            "job_runs": self.job_runs,
            "seconds_since_last_wake": None if self.last_wake_at is None else round(now - self.last_wake_at, 1),
            "last_job": None
            if last is None
            else {
                "kinds": list(self.last_job_kinds),
                "sent": last.sent,
                "signed": len(last.signed) + len(last.recovered),
                "revoked": len(last.revoked),
                "warned": len(last.warned),
                "aborted": last.aborted,
            },
            "dirty": sorted(self._dirty),
        }

    # -- the one runner ----------------------------------------------------------

    def _kick(self) -> None:
        if not self._busy:
            self._drain()

    def _has_work(self) -> bool:
        return bool(self._round_waiters) or (bool(self._dirty) and not self.jobs.stopping)

    @inlineCallbacks
    def _drain(self) -> Any:
        """Run rounds and dirty kinds until none is left (``_run`` never fails)."""
        self._busy = True
        while self._has_work():
            waiters: list[Deferred[Any]] = []
            report: Any = None
            if self._round_waiters:
                waiters, self._round_waiters = self._round_waiters, []
                # the round reads every pending row now: wakes so far are covered
                self._dirty -= ROUND_KINDS
                report = yield self._run(self.jobs.run_round())
            else:
                kinds = tuple(kind for kind in KINDS if kind in self._dirty)
                self._dirty.clear()
                if not getattr(self.jobs, "_recovered_journal", True):
                    # the first round recovers the in-flight journal first
                    yield self._run(self.jobs.run_round())
                else:
                    yield self._run(self.run_kinds(kinds))
            if not self._has_work():
                # idle before the callbacks run, so that they may wake/poll again
                self._busy = False
                self._dirty.clear()
                idle, self._idle_waiters = self._idle_waiters, []
                for waiter in waiters:
                    if not waiter.called:
                        waiter.callback(report)
                for d in idle:
                    d.callback(None)
                return
            for waiter in waiters:
                if not waiter.called:
                    waiter.callback(report)
        self._busy = False
        self._dirty.clear()
        idle, self._idle_waiters = self._idle_waiters, []
        for d in idle:
            d.callback(None)

    @inlineCallbacks
    def _run(self, d: Deferred[Any]) -> Any:
        self._inflight = d
        try:
            result = yield d
        except CancelledError:
            result = None
        except Exception:
            # run_round and run_kinds never fail; be safe anyway
            self.log.failure("Wake-up: a run failed")
            result = None
        finally:
            self._inflight = None
        return result

    @inlineCallbacks
    def run_kinds(self, kinds: tuple[str, ...]) -> Any:
        """The jobs of ``kinds`` in the order of a round; never fails (like ``run_round``)."""
        jobs = self.jobs
        report = RoundReport(number=jobs.rounds)
        started = self.clock.seconds()
        self.job_runs += 1
        try:
            if "gpg" in kinds:
                yield jobs._openpgp(report)
            for table in CERT_TABLES:
                if table in kinds:
                    yield jobs._certificates(table, report)
            if "revoke" in kinds:
                for table in CERT_TABLES:
                    yield jobs._revocations(table, report)
            if "crl" in kinds:
                yield jobs._crl_check(report)
        except LinkError as error:
            report.aborted = f"link: {error}"
            self.log.warn("Woken job {kinds} ended early: {error}", kinds=",".join(kinds), error=str(error))
        except _Stopping:
            report.aborted = "stopping"
        except CancelledError:
            report.aborted = "abandoned while stopping"
            self.log.warn("Woken job {kinds} abandoned: the service is stopping", kinds=",".join(kinds))
        except Exception as error:
            report.aborted = f"{type(error).__name__}: {error}"
            self.log.failure("Woken job {kinds} failed", kinds=",".join(kinds))
        finally:
            self.last_job = report
            self.last_job_kinds = kinds
        self.log.info(
            "Woken job {kinds}: {sent} requests, signed {signed}, revoked {revoked}, warnings {warned}, "
            "in {seconds:.2f} s",
            kinds=",".join(kinds),
            sent=report.sent,
            signed=len(report.signed) + len(report.recovered),
            revoked=len(report.revoked),
            warned=len(report.warned),
            seconds=self.clock.seconds() - started,
        )
        return report


class WakeupService(MultiService):
    """The wake-up source as part of the client; waits for the woken job on stop."""

    log = Logger()

    def __init__(
        self,
        config: WakeupConfig,
        trigger: WakeupTrigger,
        reactor: Any,
        stop_grace: float = 30.0,
        source: WakeupSource | None = None,
    ) -> None:
        super().__init__()
        self.setName("wakeup")
        self.config = config
        self.trigger = trigger
        self.reactor = reactor
        self.stop_grace = stop_grace
        made = source or make_wakeup_source(config, trigger.wake, reactor)
        if made is None:
            raise ValueError("wake-up source is 'off'")
        self.source = made
        made.setServiceParent(self)

    def health(self) -> dict[str, Any]:
        """Source state (connection, messages) and trigger state (wakes, jobs)."""
        body = self.source.health()
        body["fallback_interval"] = self.config.fallback_interval
        body.update(self.trigger.health())
        return body

    @inlineCallbacks
    def stopService(self) -> Any:  # noqa: N802
        yield MultiService.stopService(self)
        self.trigger.stop()
        if not self.trigger.busy():
            return
        waiter: Deferred[Any] = Deferred()

        def fire(outcome: str) -> None:
            if not waiter.called:
                waiter.callback(outcome)

        self.trigger.when_idle().addCallback(lambda _: fire("idle"))
        timer = self.reactor.callLater(self.stop_grace, fire, "late")
        outcome = yield waiter
        if timer.active():
            timer.cancel()
        if outcome == "late":
            self.log.warn("Stopping: abandoning the woken job in flight")
            self.trigger.cancel_inflight()
