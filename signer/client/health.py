"""The web host's figures for the health pages (:mod:`signer.health`).

:class:`ClientHealth` reports the link (state, last successful round trip,
counters), the polling rounds (how many, whether the last one ended early),
the rows waiting in the WebDB per table (signing and revocation), when this
client last installed a CRL per root, and the wake-up source's state when
one is configured.

The pending counts are read from the WebDB at every request (the connection
pool's threads do the blocking work). A database that fails or does not
answer within ``db_timeout`` seconds does not fail the page: the report says
so in ``problems`` (``status`` ``"warning"``), the ``pending`` section is
``null``, the pending gauges are left out and ``signer_webdb_readable`` is 0.

``/metrics`` samples, besides :func:`~signer.health.link_samples`:

- ``signer_info{role="client"}``, ``signer_uptime_seconds``;
- ``signer_polling_rounds_total`` (counter), ``signer_polling_last_round_aborted`` (0/1);
- ``signer_pending_requests{table}``: rows waiting to be signed (``gpg``,
  ``emailcerts``, ``domaincerts``, ``orgemailcerts``, ``orgdomaincerts``);
- ``signer_pending_revocations{table}``: rows waiting to be revoked;
- ``signer_webdb_readable`` (0/1);
- ``signer_crl_installed_timestamp_seconds{root}``, ``signer_crl_age_seconds{root}``:
  when this client last installed a CRL of the root (``root`` is the
  WebDB's ``rootcert`` number); roots without one since start are left out;
- with a wake-up source: ``signer_wakeup_connected{source}`` (0/1),
  ``signer_wakeup_messages_total``, ``signer_wakeup_wakes_total``,
  ``signer_wakeup_reconnects_total``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from signer.health import PREFIX, Sample, iso_time, link_samples, link_section

__all__ = ["ClientHealth", "DEFAULT_DB_TIMEOUT", "REVOKE_SUFFIX"]

#: Seconds a health request waits for the WebDB's pending counts.
DEFAULT_DB_TIMEOUT = 10.0
#: Suffix of the revocation counts in ``WebDB.pending_counts`` (``emailcerts.revoke``).
REVOKE_SUFFIX = ".revoke"


class _Counts:
    """The outcome of one pending-count query: counts or an error message."""

    def __init__(self, counts: Mapping[str, int] | None, error: str | None) -> None:
        self.counts = counts
        self.error = error

    def signing(self) -> dict[str, int]:
        return {t: n for t, n in (self.counts or {}).items() if not t.endswith(REVOKE_SUFFIX)}

    def revocations(self) -> dict[str, int]:
        return {
            t[: -len(REVOKE_SUFFIX)]: n for t, n in (self.counts or {}).items() if t.endswith(REVOKE_SUFFIX)
        }


class ClientHealth:
    """A :class:`~signer.health.HealthSource` for ``twistd signer-client``.

    :param parts: the client's :class:`~signer.client.service.ClientParts`
        (``config``, ``protocol``, ``webdb``, ``jobs``, ``wakeup``, ``reactor``).
    :param clock: reactor time (default ``parts.reactor``).
    :param db_timeout: seconds to wait for the pending counts.
    """

    log = Logger()
    role = "client"

    def __init__(self, parts: Any, clock: IReactorTime | None = None, db_timeout: float = DEFAULT_DB_TIMEOUT) -> None:
        self._parts = parts
        self._clock: IReactorTime = clock if clock is not None else parts.reactor
        self._db_timeout = db_timeout
        self._started = self._clock.seconds()

    # -- reading -----------------------------------------------------------------------

    def _pending(self) -> "Deferred[_Counts]":
        """The WebDB's pending counts; an error or a timeout becomes a message."""
        parts = self._parts
        d: Deferred[Mapping[str, int]] = parts.webdb.pending_counts(parts.config.polling.warning_threshold)
        d.addTimeout(self._db_timeout, self._clock)

        def read(counts: Mapping[str, int]) -> _Counts:
            return _Counts(dict(counts), None)

        def failed(failure: Failure) -> _Counts:
            if failure.check(TimeoutError):
                message = f"no answer within {self._db_timeout:g} s"
            else:
                assert failure.type is not None  # a Failure always has its exception type
                message = failure.getErrorMessage() or failure.type.__name__
            self.log.warn("health page: WebDB pending counts unreadable: {error}", error=message)
            return _Counts(None, message)

        return d.addCallbacks(read, failed)

    def _link(self) -> Any:
        """The link protocol, or None when a test requester stands in for it."""
        protocol = self._parts.protocol
        return protocol if hasattr(protocol, "stats") else None

    def _wakeup(self) -> dict[str, Any] | None:
        wakeup = self._parts.wakeup
        return None if wakeup is None else dict(wakeup.health())

    def _crls(self) -> dict[int, float | None]:
        """When a CRL was last installed, by configured rootcert (None: not since start)."""
        installed = self._parts.jobs.crl_age
        roots = [root.rootcert for root in self._parts.config.roots]
        return {root: installed.get(root) for root in sorted(set(roots) | set(installed))}

    # -- HealthSource ------------------------------------------------------------------

    def health(self) -> "Deferred[dict[str, Any]]":
        """The report, with the pending counts read now."""
        return self._pending().addCallback(self._report)

    def _report(self, pending: _Counts) -> dict[str, Any]:
        now = self._clock.seconds()
        jobs = self._parts.jobs
        problems: list[str] = []
        if pending.error is not None:
            problems.append(f"WebDB unreadable: {pending.error}")
        last_round = jobs.last_round
        aborted = last_round.aborted if last_round is not None else None
        if aborted and aborted != "stopping":
            problems.append(f"the last polling round ended early: {aborted}")
        wakeup = self._wakeup()
        if wakeup is not None and not wakeup.get("connected"):
            problems.append(f"the wake-up source is not connected: {wakeup.get('last_error') or 'not yet'}")
        link = self._link()
        if link is not None:
            link_report = link_section(link, now)
        else:
            link_report = {"state": "unknown", "last_success": None, "last_success_seconds_ago": None, "counters": {}}
        crls = {
            str(root): None
            if at is None
            else {"installed_at": iso_time(at), "age_seconds": round(now - at, 3)}
            for root, at in self._crls().items()
        }
        return {
            "role": self.role,
            "status": "warning" if problems else "ok",
            "problems": problems,
            "time": iso_time(now),
            "uptime_seconds": round(now - self._started, 3),
            "link": link_report,
            "rounds": jobs.rounds,
            "last_round_aborted": aborted if aborted else (None if last_round is None else False),
            "pending": None if pending.counts is None else pending.signing(),
            "pending_revocations": None if pending.counts is None else pending.revocations(),
            "crl": crls,
            "wakeup": wakeup,
        }

    def metrics(self) -> "Deferred[Iterable[Sample]]":
        """The samples, with the pending counts read now."""
        return self._pending().addCallback(self._samples)

    def _samples(self, pending: _Counts) -> list[Sample]:
        now = self._clock.seconds()
        jobs = self._parts.jobs
        samples = [
            Sample(PREFIX + "info", "Role of this signer daemon", "gauge", {"role": self.role}, 1),
            Sample(PREFIX + "uptime_seconds", "Seconds since the daemon started", "gauge", {}, now - self._started),
        ]
        link = self._link()
        if link is not None:
            samples += link_samples(link, now)
        samples.append(
            Sample(PREFIX + "polling_rounds_total", "Polling rounds completed", "counter", {}, jobs.rounds)
        )
        last_round = jobs.last_round
        samples.append(
            Sample(
                PREFIX + "polling_last_round_aborted",
                "1 when the last polling round ended early (link, database or file error)",
                "gauge",
                {},
                1 if last_round is not None and last_round.aborted else 0,
            )
        )
        if pending.counts is not None:
            for table, count in sorted(pending.signing().items()):
                samples.append(
                    Sample(
                        PREFIX + "pending_requests",
                        "WebDB rows waiting to be signed, by table",
                        "gauge",
                        {"table": table},
                        count,
                    )
                )
            for table, count in sorted(pending.revocations().items()):
                samples.append(
                    Sample(
                        PREFIX + "pending_revocations",
                        "WebDB rows waiting to be revoked, by table",
                        "gauge",
                        {"table": table},
                        count,
                    )
                )
        samples.append(
            Sample(
                PREFIX + "webdb_readable",
                "1 when the WebDB's pending counts could be read for this scrape",
                "gauge",
                {},
                0 if pending.error is not None else 1,
            )
        )
        for root, at in self._crls().items():
            if at is None:
                continue
            labels = {"root": str(root)}
            samples += [
                Sample(
                    PREFIX + "crl_installed_timestamp_seconds",
                    "When this client last installed a CRL of the root (Unix seconds)",
                    "gauge",
                    labels,
                    at,
                ),
                Sample(
                    PREFIX + "crl_age_seconds",
                    "Seconds since this client last installed a CRL of the root",
                    "gauge",
                    labels,
                    now - at,
                ),
            ]
        wakeup = self._wakeup()
        if wakeup is not None:
            samples += [
                Sample(
                    PREFIX + "wakeup_connected",
                    "1 when the wake-up source is connected to its broker",
                    "gauge",
                    {"source": str(wakeup.get("source", "unknown"))},
                    1 if wakeup.get("connected") else 0,
                ),
                Sample(
                    PREFIX + "wakeup_messages_total",
                    "Wake-up messages received",
                    "counter",
                    {},
                    wakeup.get("messages", 0),
                ),
                Sample(
                    PREFIX + "wakeup_wakes_total",
                    "Jobs started by wake-up messages",
                    "counter",
                    {},
                    wakeup.get("wakes", 0),
                ),
                Sample(
                    PREFIX + "wakeup_reconnects_total",
                    "Connections to the wake-up broker after the first",
                    "counter",
                    {},
                    wakeup.get("reconnects", 0),
                ),
            ]
        return samples
