"""Health report and Prometheus metrics of a signer daemon, served by twisted.web.

Two pages on one small site:

- ``GET /health``: a JSON object (``application/json``) with the role, an
  overall ``status`` (``"ok"``, or ``"warning"`` with a list of ``problems``),
  the link (state, last successful round trip as ISO 8601 UTC time and seconds
  ago, counters), and whatever sections the role adds (requests served /
  refused / failed, CRL age per root, pending requests per table...).
- ``GET /metrics``: the same figures in the Prometheus text format (or
  OpenMetrics when the scraper asks for it in ``Accept``), rendered by
  ``prometheus_client``.

A role plugs in through a :class:`HealthSource`: ``health()`` gives the JSON
dict and ``metrics()`` the samples; either may return a ``Deferred`` (e.g. to
count rows in a database first). The figures are read at request time, never
cached here. :func:`link_section` and :func:`link_samples` give the part every
role shares, from a link protocol (``ServerLinkProtocol`` or
``ClientLinkProtocol``: ``stats``, ``link_state``, ``last_success``).

Addresses are Twisted endpoint descriptions (``tcp:8081:interface=127.0.0.1``,
``tcp6:8081:interface=\\:\\:1``, ``unix:/run/signer/health.sock``); a TCP
description without ``interface=`` is bound to the loopback address, so the
pages are local unless an operator names another interface on purpose.

Why ``prometheus_client`` but not its ``twisted.MetricsResource``: that
resource renders a global registry in a thread, while our figures live on the
reactor thread and may need a ``Deferred`` first. So each scrape gathers the
samples on the reactor thread, puts them in a fresh registry (with the
process collector: CPU, memory, open files, start time) and lets
``prometheus_client`` do the exposition format and content negotiation.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Iterable, Mapping, NamedTuple, Protocol, runtime_checkable

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

__all__ = [
    "HealthService",
    "HealthSource",
    "Sample",
    "health_site",
    "iso_time",
    "link_samples",
    "link_section",
    "local_description",
]

JSON_TYPE = b"application/json"
#: Prefix of every metric name of ours.
PREFIX = "signer_"


class Sample(NamedTuple):
    """One metric sample: ``(name, help, type, labels, value)``.

    ``type`` is ``"gauge"`` or ``"counter"``; a counter's name ends in
    ``_total``. Samples sharing a name form one metric family (the first
    one's help and type count).
    """

    name: str
    help: str
    type: str
    labels: Mapping[str, str]
    value: float


@runtime_checkable
class HealthSource(Protocol):
    """What a role gives the health pages."""

    def health(self) -> "dict[str, Any] | Deferred[dict[str, Any]]":
        """The JSON report: a dict; keys ``status`` and ``problems`` are honoured."""

    def metrics(self) -> "Iterable[Sample] | Deferred[Iterable[Sample]]":
        """The samples of ``/metrics``."""


# -- shared building blocks ------------------------------------------------------------


def iso_time(seconds: float | None) -> str | None:
    """``seconds`` since the epoch as ISO 8601 UTC (``...Z``), None stays None."""
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def link_section(link: Any, now: float) -> dict[str, Any]:
    """The ``link`` section of a report from a link protocol.

    ``link`` has ``link_state`` (str), ``last_success`` (reactor seconds or
    None) and ``stats`` (a :class:`~signer.protocol.link.LinkStats`).
    """
    last = link.last_success
    return {
        "state": link.link_state,
        "last_success": iso_time(last),
        "last_success_seconds_ago": None if last is None else round(now - last, 3),
        "counters": link.stats.as_dict(),
    }


_LINK_HELP = {
    "garbage_bytes": "Bytes discarded while waiting for a frame or resynchronising",
    "naks_sent": "NAKs sent for damaged or incomplete frames",
    "naks_received": "NAKs received from the peer",
    "resends": "Frames sent again after a NAK",
    "timeouts": "Exchanges abandoned after a timeout",
    "resets": "Exchanges reset (START in the middle of an exchange, cancel)",
    "failures": "Exchanges that failed for any reason",
    "frames_in": "Intact frames received",
    "frames_out": "Frames sent",
    "bytes_in": "Bytes received on the serial line",
    "bytes_out": "Bytes written to the serial line",
}


def link_samples(link: Any, now: float) -> list[Sample]:
    """The link's samples: its state, last success and every counter."""
    samples = [
        Sample(
            PREFIX + "link_state",
            "Current state of the link machine (1 for the current state)",
            "gauge",
            {"state": link.link_state},
            1,
        )
    ]
    if link.last_success is not None:
        samples.append(
            Sample(
                PREFIX + "link_last_success_timestamp_seconds",
                "Time of the last successful round trip (Unix seconds)",
                "gauge",
                {},
                link.last_success,
            )
        )
        samples.append(
            Sample(
                PREFIX + "link_last_success_age_seconds",
                "Seconds since the last successful round trip",
                "gauge",
                {},
                now - link.last_success,
            )
        )
    for name, value in link.stats.as_dict().items():
        samples.append(
            Sample(
                f"{PREFIX}link_{name}_total",
                _LINK_HELP.get(name, f"Link counter {name}"),
                "counter",
                {},
                value,
            )
        )
    return samples


# -- exposition ---------------------------------------------------------------------


class _SnapshotCollector:
    """Hands ``prometheus_client`` samples gathered beforehand."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        self._samples = list(samples)

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        label_names: dict[str, list[str]] = {}
        for sample in self._samples:
            family = families.get(sample.name)
            if family is None:
                names = sorted(sample.labels)
                kind = CounterMetricFamily if sample.type == "counter" else GaugeMetricFamily
                family = kind(sample.name, sample.help, labels=names)
                families[sample.name] = family
                label_names[sample.name] = names
            names = label_names[sample.name]
            if sorted(sample.labels) != names:
                raise ValueError(f"metric {sample.name}: labels {sorted(sample.labels)} != {names}")
            family.add_metric([str(sample.labels[n]) for n in names], float(sample.value))
        return list(families.values())


def render_metrics(samples: Iterable[Sample], accept: str | None = None) -> tuple[bytes, str]:
    """The exposition of ``samples`` (plus process metrics) and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(samples))
    ProcessCollector(registry=registry)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


# -- resources ----------------------------------------------------------------------


class _Page(Resource):
    isLeaf = True
    log = Logger()

    def __init__(self, source: HealthSource) -> None:
        super().__init__()
        self._source = source

    def _serve(self, request: Request, produce: Any, write: Any) -> Any:
        """Render what ``produce`` gives (maybe a Deferred) through ``write``."""
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def done(result: Any) -> None:
            if gone:
                return
            write(result, request)
            request.finish()

        def failed(failure: Failure) -> None:
            prepath = request.prepath
            assert prepath is not None  # the Site sets it before rendering
            self.log.failure(
                "health page /{page} failed", failure, page=b"/".join(prepath).decode(errors="replace")
            )
            if gone:
                return
            request.setResponseCode(500)
            request.setHeader(b"content-type", JSON_TYPE)
            body = {"status": "error", "problems": [failure.getErrorMessage()]}
            request.write(json.dumps(body).encode() + b"\n")
            request.finish()

        d = maybeDeferred(produce).addCallback(done).addErrback(failed)
        d.addErrback(lambda failure: self.log.failure("health page not answered", failure))
        return NOT_DONE_YET


class HealthPage(_Page):
    """``GET /health``: the source's report as JSON."""

    def render_GET(self, request: Request) -> Any:  # noqa: N802 (twisted.web's name)
        def write(report: dict[str, Any], request: Request) -> None:
            request.setHeader(b"content-type", JSON_TYPE)
            request.setHeader(b"cache-control", b"no-store")
            request.write(json.dumps(report, indent=1, sort_keys=True, default=str).encode() + b"\n")

        return self._serve(request, self._source.health, write)


class MetricsPage(_Page):
    """``GET /metrics``: the source's samples in the Prometheus text format."""

    def render_GET(self, request: Request) -> Any:  # noqa: N802
        raw_accept = request.getHeader(b"accept")
        accept = raw_accept.decode("latin-1") if raw_accept else None

        def write(samples: Iterable[Sample], request: Request) -> None:
            body, content_type = render_metrics(samples, accept)
            request.setHeader(b"content-type", content_type.encode())
            request.setHeader(b"cache-control", b"no-store")
            request.write(body)

        return self._serve(request, self._source.metrics, write)


class _Index(Resource):
    def render_GET(self, request: Request) -> bytes:  # noqa: N802
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"signer health: /health (JSON), /metrics (Prometheus)\n"


def health_resource(source: HealthSource) -> Resource:
    """The resource tree: ``/`` (a pointer), ``/health`` and ``/metrics``."""
    root = _Index()
    root.putChild(b"", _Index())
    root.putChild(b"health", HealthPage(source))
    root.putChild(b"metrics", MetricsPage(source))
    return root


def health_site(source: HealthSource) -> Site:
    """A twisted.web ``Site`` serving :func:`health_resource` (no access log)."""
    site = Site(health_resource(source))
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]  # scrapes are not news
    return site


# -- listening ----------------------------------------------------------------------

_LOOPBACK = {"tcp": "127.0.0.1", "tcp6": "\\:\\:1"}


def local_description(description: str) -> str:
    """``description`` bound to the loopback address when it is TCP without ``interface=``.

    A bare port number (``"8081"``) means ``tcp:8081``.
    """
    description = description.strip()
    if description.isdigit():
        description = f"tcp:{description}"
    kind = description.split(":", 1)[0]
    if kind in _LOOPBACK and "interface=" not in description:
        description = f"{description}:interface={_LOOPBACK[kind]}"
    return description


class HealthService(Service):
    """Listens on ``description`` with the health site while running.

    :ivar port: the listening port once listening, else None.
    """

    log = Logger()

    def __init__(self, description: str, source: HealthSource, reactor: Any) -> None:
        self.description = local_description(description)
        self.source = source
        self.reactor = reactor
        self.port: IListeningPort | None = None
        self._listening: Deferred[IListeningPort] | None = None
        self._waiters: list[Deferred[IListeningPort]] = []

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        super().startService()
        endpoint = serverFromString(self.reactor, self.description)
        d = endpoint.listen(health_site(self.source))
        d.addCallbacks(self._listened, self._failed)
        self._listening = d

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        address = port.getHost()
        host = getattr(address, "host", None)
        if host is not None:
            # the listening addresses with a host (TCP, SSL) are IPv4Address/IPv6Address
            assert isinstance(address, (IPv4Address, IPv6Address))
            where = f"{host}:{address.port}"
        else:
            where = str(getattr(address, "name", address))
        self.log.info("health pages on http://{address}/health and /metrics", address=where)
        if host not in (None, "127.0.0.1", "::1", "localhost"):
            self.log.warn("health pages are reachable from the network on {address}", address=where)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(port)
        return port

    def _failed(self, failure: Failure) -> None:
        self.log.error(
            "cannot serve health pages on {description}: {reason}",
            description=self.description,
            reason=failure.getErrorMessage(),
        )
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(failure)

    def when_listening(self) -> "Deferred[IListeningPort]":
        """A fresh Deferred firing with the port once listening."""
        if self.port is not None:
            d: Deferred[IListeningPort] = Deferred()
            d.callback(self.port)
            return d
        d = Deferred()
        self._waiters.append(d)
        return d

    def stopService(self) -> "Deferred[None] | None":  # noqa: N802
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            if self._listening is not None and not self._listening.called:
                self._listening.cancel()
            return None
        return port.stopListening()

