"""The signing host's figures for the health pages (:mod:`signer.health`).

:class:`ServerHealth` reports the link (state, last successful round trip,
counters), the requests answered (served / refused / failed, per kind and
outcome), and per configured root the newest CRL in the CA database: its
number, thisUpdate, age and nextUpdate. A CRL past its nextUpdate is a
``problem`` (status ``"warning"``): relying parties hold an expired CRL until
the client asks for a fresh one.

The CRL figures come from the CA database in a thread and are cached for
``crl_refresh`` seconds (a history row carries the whole CRL, which can be
large), or until the next revoke request is answered (a new CRL is made only
then); ages are computed at request time from the cached thisUpdate.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from signer.health import PREFIX, Sample, iso_time, link_samples, link_section
from signer.server.cadb import CADatabase
from signer.server.dispatcher import ServedCounters

__all__ = ["CrlFacts", "ServerHealth"]

#: Seconds the CRL figures read from the CA database are reused.
DEFAULT_CRL_REFRESH = 30.0

BlockingRunner = Callable[..., "Deferred[Any]"]


@dataclass(frozen=True)
class CrlFacts:
    """What the health pages say about the newest CRL of one root."""

    crl_number: int
    this_update: float  # Unix seconds


def read_crl_facts(database: CADatabase, roots: Iterable[int]) -> dict[int, CrlFacts | None]:
    """Blocking: the newest CRL's number and thisUpdate per root (None: no CRL yet)."""
    facts: dict[int, CrlFacts | None] = {}
    for root in roots:
        stored = database.latest_crl(root)
        facts[root] = (
            None if stored is None else CrlFacts(stored.crl_number, stored.this_update.timestamp())
        )
    return facts


class ServerHealth:
    """A :class:`~signer.health.HealthSource` for ``twistd signer-server``.

    :param link: the ``ServerLinkProtocol`` (``link_state``, ``last_success``,
        ``stats``, ``requests_served``).
    :param counters: the dispatcher's :class:`ServedCounters`.
    :param database: the CA database (read in ``run_blocking``).
    :param roots: the configured root indexes.
    :param crl_lifetime: thisUpdate to nextUpdate of the CRLs we produce.
    :param clock: reactor time.
    :param run_blocking: runs a blocking callable, returns a Deferred (a
        thread pool in production).
    """

    log = Logger()
    role = "server"

    def __init__(
        self,
        link: Any,
        counters: ServedCounters,
        database: CADatabase,
        roots: Iterable[int],
        crl_lifetime: datetime.timedelta,
        clock: IReactorTime,
        run_blocking: BlockingRunner,
        crl_refresh: float = DEFAULT_CRL_REFRESH,
    ) -> None:
        self._link = link
        self._counters = counters
        self._database = database
        self._roots = tuple(sorted(roots))
        self._lifetime = crl_lifetime.total_seconds()
        self._clock = clock
        self._run_blocking = run_blocking
        self._crl_refresh = crl_refresh
        self._started = clock.seconds()
        self._crls: dict[int, CrlFacts | None] | None = None
        self._crls_read_at: float | None = None
        self._crl_error: str | None = None
        self._reading: list[Deferred[None]] | None = None
        self._revocations_at_read = -1

    def _revocations(self) -> int:
        """Revoke requests answered so far: a new CRL may exist when this changed."""
        return sum(n for key, n in self._counters.by_kind.items() if key.startswith("revoke:"))

    @classmethod
    def from_parts(cls, parts: Any, crl_refresh: float = DEFAULT_CRL_REFRESH) -> "ServerHealth":
        """The health source of a :class:`~signer.server.service.ServerParts`."""
        return cls(
            parts.protocol,
            parts.dispatcher.counters,
            parts.database,
            parts.config.roots.keys(),
            parts.config.crl.lifetime,
            parts.reactor,
            lambda f, *args: deferToThreadPool(parts.reactor, parts.reactor.getThreadPool(), f, *args),
            crl_refresh,
        )

    # -- CRL cache -------------------------------------------------------------------

    def _refresh_crls(self) -> "Deferred[None]":
        """Read the CRL facts again when the cache is older than ``crl_refresh``."""
        now = self._clock.seconds()
        fresh = self._crls_read_at is not None and now - self._crls_read_at < self._crl_refresh
        if fresh and self._revocations() == self._revocations_at_read:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        if self._reading is not None:  # one read at a time; later callers wait for it
            self._reading.append(waiter)
            return waiter
        self._reading = [waiter]

        revocations = self._revocations()

        def read(facts: Mapping[int, CrlFacts | None]) -> None:
            self._revocations_at_read = revocations
            self._crls = dict(facts)
            self._crl_error = None

        def failed(failure: Failure) -> None:
            self.log.failure("could not read the CRL history for the health page", failure)
            self._crl_error = failure.getErrorMessage()

        def done(_: Any) -> None:
            self._crls_read_at = self._clock.seconds()
            waiters, self._reading = self._reading or [], None
            for d in waiters:
                d.callback(None)

        d = self._run_blocking(read_crl_facts, self._database, self._roots)
        d.addCallbacks(read, failed).addBoth(done)
        return waiter

    def _crl_section(self, now: float) -> tuple[dict[str, Any], list[str]]:
        section: dict[str, Any] = {}
        problems: list[str] = []
        if self._crl_error is not None:
            problems.append(f"CRL history unreadable: {self._crl_error}")
        for root, facts in sorted((self._crls or {}).items()):
            if facts is None:
                section[str(root)] = None
                continue
            next_update = facts.this_update + self._lifetime
            section[str(root)] = {
                "crl_number": facts.crl_number,
                "this_update": iso_time(facts.this_update),
                "age_seconds": round(now - facts.this_update, 3),
                "next_update": iso_time(next_update),
            }
            if now > next_update:
                problems.append(f"the newest CRL of root {root} is past its nextUpdate")
        return section, problems

    # -- HealthSource ------------------------------------------------------------------

    def health(self) -> "Deferred[dict[str, Any]]":
        """The report (after refreshing the CRL figures if they are stale)."""
        return self._refresh_crls().addCallback(lambda _: self._report())

    def _report(self) -> dict[str, Any]:
        now = self._clock.seconds()
        counters = self._counters
        crls, problems = self._crl_section(now)
        return {
            "role": self.role,
            "status": "warning" if problems else "ok",
            "problems": problems,
            "time": iso_time(now),
            "uptime_seconds": round(now - self._started, 3),
            "link": link_section(self._link, now),
            "requests": {
                "served": counters.served,
                "refused": counters.refused,
                "failed": counters.failed,
                "answers_acknowledged": self._link.requests_served,
                "by_kind": dict(sorted(counters.by_kind.items())),
            },
            "crl": crls,
        }

    def metrics(self) -> "Deferred[Iterable[Sample]]":
        """The samples (after refreshing the CRL figures if they are stale)."""
        return self._refresh_crls().addCallback(lambda _: self._samples())

    def _samples(self) -> list[Sample]:
        now = self._clock.seconds()
        samples = [Sample(PREFIX + "info", "Role of this signer daemon", "gauge", {"role": self.role}, 1)]
        samples.append(
            Sample(PREFIX + "uptime_seconds", "Seconds since the daemon started", "gauge", {}, now - self._started)
        )
        samples += link_samples(self._link, now)
        samples.append(
            Sample(
                PREFIX + "answers_acknowledged_total",
                "Answers the client acknowledged",
                "counter",
                {},
                self._link.requests_served,
            )
        )
        for key, count in sorted(self._counters.by_kind.items()):
            kind, _, outcome = key.partition(":")
            samples.append(
                Sample(
                    PREFIX + "requests_total",
                    "Requests answered, by kind and outcome (served, empty, refused, failed)",
                    "counter",
                    {"kind": kind, "outcome": outcome},
                    count,
                )
            )
        for root, facts in sorted((self._crls or {}).items()):
            if facts is None:
                continue
            labels = {"root": str(root)}
            samples += [
                Sample(PREFIX + "crl_number", "Number of the newest CRL", "gauge", labels, facts.crl_number),
                Sample(
                    PREFIX + "crl_this_update_timestamp_seconds",
                    "thisUpdate of the newest CRL (Unix seconds)",
                    "gauge",
                    labels,
                    facts.this_update,
                ),
                Sample(
                    PREFIX + "crl_age_seconds",
                    "Seconds since thisUpdate of the newest CRL",
                    "gauge",
                    labels,
                    now - facts.this_update,
                ),
                Sample(
                    PREFIX + "crl_next_update_timestamp_seconds",
                    "nextUpdate of the newest CRL (Unix seconds)",
                    "gauge",
                    labels,
                    facts.this_update + self._lifetime,
                ),
            ]
        samples.append(
            Sample(
                PREFIX + "crl_history_readable",
                "1 when the CRL history could be read at the last try",
                "gauge",
                {},
                0 if self._crl_error else 1,
            )
        )
        return samples
