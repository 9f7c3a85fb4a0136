"""Health pages: /health (JSON) and /metrics (Prometheus) with live figures.

In memory first (task.Clock, DummyRequest, a real CA database), then the site
on a real loopback port fetched with twisted.web's Agent, then a real
``twistd signer-server`` over a socat pty pair answering after ``signer ping``;
last the client's figures (:class:`~signer.client.health.ClientHealth`) over a
real sqlite WebDB and a real ``ClientLinkProtocol`` joined in memory to a
``ServerLinkProtocol`` (the twistd client end to end is in
``tests/client/test_tap.py``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from signer.health import HealthService, Sample, health_resource, iso_time, local_description
from signer.protocol.link import LinkStats
from signer.server.cadb import CADatabase
from signer.server.dispatcher import ServedCounters
from signer.server.health import ServerHealth
from tests.support.pty import pty_pair, socat_available

BIN = Path(sys.executable).parent
UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=UTC).timestamp()
WEEK = datetime.timedelta(days=7)


@dataclass
class Link:
    """Stands in for a link protocol: the four attributes the health pages read."""

    link_state: str = "idle"
    last_success: float | None = None
    requests_served: int = 0
    stats: LinkStats = field(default_factory=LinkStats)


def synchronous(function: Callable[..., Any], *args: Any) -> "Deferred[Any]":
    """Runs blocking work at once (the thread pool's stand-in in unit tests)."""
    try:
        return succeed(function(*args))
    except Exception:
        return fail()


def get(resource: Any, path: bytes, accept: bytes | None = None) -> DummyRequest:
    """GET ``path`` from ``resource``; the answer must be complete synchronously."""
    request = DummyRequest([path])
    if accept is not None:
        request.requestHeaders.setRawHeaders(b"accept", [accept])
    child = getChildForRequest(resource, request)
    result = child.render(request)
    if result is not NOT_DONE_YET:
        request.write(result)
        request.finish()
    assert request.finished == 1, "the page did not finish"
    return request


def body(request: DummyRequest) -> bytes:
    return b"".join(request.written)


def metrics_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples by (name, sorted labels) from a Prometheus text exposition."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.fixture
def database(tmp_path: Path) -> Iterator[CADatabase]:
    db = CADatabase(tmp_path / "ca.sqlite3")
    yield db
    db.close()


def store_crl(db: CADatabase, root: int, number: int, this_update: float) -> None:
    moment = datetime.datetime.fromtimestamp(this_update, UTC)
    db.store_crl(root, number, f"{number:040x}", b"DER of CRL %d" % number, moment)


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(T0)
    return clock


def make_health(
    link: Link, counters: ServedCounters, database: CADatabase, clock: Clock, run: Any = synchronous
) -> ServerHealth:
    return ServerHealth(link, counters, database, [0, 1], WEEK, clock, run, crl_refresh=30.0)


# -- /health ------------------------------------------------------------------------


def test_health_reports_link_requests_and_crl_age(database: CADatabase, clock: Clock) -> None:
    """The JSON carries the link state, last round trip (ISO and seconds ago),
    counters, requests by outcome and the CRL age per root, as they are now."""
    link = Link(link_state="processing", last_success=T0 - 12.5, requests_served=7)
    link.stats.naks_sent, link.stats.resends, link.stats.timeouts = 2, 3, 1
    link.stats.resets, link.stats.garbage_bytes = 4, 99
    counters = ServedCounters(served=5, refused=2, failed=1, by_kind={"nul:served": 5, "sign-x509:refused": 2})
    store_crl(database, 1, 3, T0 - 3600)
    resource = health_resource(make_health(link, counters, database, clock))
    clock.advance(100)

    request = get(resource, b"health")
    assert request.responseCode in (None, 200)
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json"]
    report = json.loads(body(request))
    assert report["role"] == "server"
    assert report["status"] == "ok" and report["problems"] == []
    assert report["uptime_seconds"] == 100
    assert report["link"]["state"] == "processing"
    assert report["link"]["last_success"] == "2026-12-04T11:59:47.500Z"
    assert report["link"]["last_success_seconds_ago"] == 112.5
    counters_out = report["link"]["counters"]
    assert (counters_out["naks_sent"], counters_out["resends"], counters_out["timeouts"]) == (2, 3, 1)
    assert (counters_out["resets"], counters_out["garbage_bytes"]) == (4, 99)
    assert report["requests"] == {
        "served": 5,
        "refused": 2,
        "failed": 1,
        "answers_acknowledged": 7,
        "by_kind": {"nul:served": 5, "sign-x509:refused": 2},
    }
    assert report["crl"]["0"] is None  # no CRL yet on root 0
    assert report["crl"]["1"] == {
        "crl_number": 3,
        "this_update": "2026-12-04T11:00:00.000Z",
        "age_seconds": 3700,
        "next_update": "2026-12-11T11:00:00.000Z",
    }

    # live: the next request sees what changed since
    link.last_success = clock.seconds()
    counters.served += 1
    report = json.loads(body(get(resource, b"health")))
    assert report["link"]["last_success_seconds_ago"] == 0
    assert report["requests"]["served"] == 6


def test_expired_crl_is_a_problem(database: CADatabase, clock: Clock) -> None:
    """A newest CRL past its nextUpdate turns the status to "warning" and says which root."""
    store_crl(database, 0, 1, T0)
    resource = health_resource(make_health(Link(), ServedCounters(), database, clock))
    assert json.loads(body(get(resource, b"health")))["status"] == "ok"
    clock.advance(WEEK.total_seconds() + 1)
    report = json.loads(body(get(resource, b"health")))
    assert report["status"] == "warning"
    assert report["problems"] == ["the newest CRL of root 0 is past its nextUpdate"]


def test_crl_figures_cached_then_reread(database: CADatabase, clock: Clock) -> None:
    """The CRL history is read at most once per refresh interval unless a revoke
    request was answered since (a new CRL); the age keeps moving."""
    reads: list[int] = []

    def counting(function: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        reads.append(1)
        return synchronous(function, *args)

    store_crl(database, 1, 1, T0)
    counters = ServedCounters()
    resource = health_resource(make_health(Link(), counters, database, clock, counting))
    assert json.loads(body(get(resource, b"health")))["crl"]["1"]["crl_number"] == 1
    store_crl(database, 1, 2, T0 + 5)
    clock.advance(10)
    report = json.loads(body(get(resource, b"health")))
    assert report["crl"]["1"]["crl_number"] == 1  # cached
    assert report["crl"]["1"]["age_seconds"] == 10
    assert len(reads) == 1
    clock.advance(30)
    assert json.loads(body(get(resource, b"health")))["crl"]["1"]["crl_number"] == 2
    assert len(reads) == 2
    store_crl(database, 1, 3, T0 + 41)
    counters.by_kind["revoke:served"] = 1  # the dispatcher answered a revoke request
    clock.advance(1)
    assert json.loads(body(get(resource, b"health")))["crl"]["1"]["crl_number"] == 3
    assert len(reads) == 3
    assert json.loads(body(get(resource, b"health")))["crl"]["1"]["crl_number"] == 3
    assert len(reads) == 3


def test_concurrent_requests_share_one_database_read(database: CADatabase, clock: Clock) -> None:
    """Two pages asked while the CRL read is in flight wait for that single read."""
    started: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def later(function: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        d: Deferred[Any] = Deferred()
        started.append((d, function, args))
        return d

    store_crl(database, 0, 9, T0)
    source = make_health(Link(), ServedCounters(), database, clock, later)
    first, second = source.health(), source.metrics()
    assert len(started) == 1 and not first.called and not second.called
    d, function, args = started[0]
    d.callback(function(*args))
    report, samples = first.result, second.result
    assert report["crl"]["0"]["crl_number"] == 9
    assert Sample("signer_crl_number", "Number of the newest CRL", "gauge", {"root": "0"}, 9) in samples


def test_unreadable_crl_history_is_reported_not_fatal(database: CADatabase, clock: Clock) -> None:
    """A failing CRL read gives a problem and crl_history_readable 0, the page still answers."""

    def broken(function: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        return fail(OSError("disk on fire"))

    resource = health_resource(make_health(Link(), ServedCounters(), database, clock, broken))
    request = get(resource, b"health")
    report = json.loads(body(request))
    assert request.responseCode in (None, 200)
    assert report["status"] == "warning"
    assert report["problems"] == ["CRL history unreadable: disk on fire"]
    samples = metrics_of(body(get(resource, b"metrics")).decode())
    assert samples[("signer_crl_history_readable", ())] == 0


def test_failing_source_answers_500_with_json() -> None:
    """A source whose health() fails gives HTTP 500 with a JSON error, not a hang."""

    class Broken:
        def health(self) -> Any:
            raise RuntimeError("no figures")

        def metrics(self) -> Any:
            return fail(RuntimeError("no samples"))

    resource = health_resource(Broken())
    request = get(resource, b"health")
    assert request.responseCode == 500
    assert json.loads(body(request)) == {"status": "error", "problems": ["no figures"]}
    assert get(resource, b"metrics").responseCode == 500


# -- /metrics ------------------------------------------------------------------------


def test_metrics_in_prometheus_text_format(database: CADatabase, clock: Clock) -> None:
    """/metrics parses as Prometheus text and carries the live link, request and CRL figures."""
    link = Link(last_success=T0 - 2, requests_served=4)
    link.stats.naks_sent, link.stats.resends, link.stats.bytes_in = 1, 2, 300
    counters = ServedCounters(served=3, refused=1, by_kind={"nul:served": 3, "revoke:refused": 1})
    store_crl(database, 1, 5, T0 - 60)
    resource = health_resource(make_health(link, counters, database, clock))
    request = get(resource, b"metrics")
    content_type = request.responseHeaders.getRawHeaders(b"content-type")[0]
    assert content_type.startswith(b"text/plain; version=0.0.4")
    samples = metrics_of(body(request).decode())
    assert samples[("signer_link_state", (("state", "idle"),))] == 1
    assert samples[("signer_link_naks_sent_total", ())] == 1
    assert samples[("signer_link_resends_total", ())] == 2
    assert samples[("signer_link_bytes_in_total", ())] == 300
    assert samples[("signer_link_timeouts_total", ())] == 0
    assert samples[("signer_link_last_success_age_seconds", ())] == 2
    assert samples[("signer_answers_acknowledged_total", ())] == 4
    assert samples[("signer_requests_total", (("kind", "nul"), ("outcome", "served")))] == 3
    assert samples[("signer_requests_total", (("kind", "revoke"), ("outcome", "refused")))] == 1
    assert samples[("signer_crl_age_seconds", (("root", "1"),))] == 60
    assert samples[("signer_crl_number", (("root", "1"),))] == 5
    assert ("signer_crl_number", (("root", "0"),)) not in samples  # no CRL on root 0
    assert any(name.startswith("process_") for name, _ in samples)

    link.stats.resends += 1
    again = metrics_of(body(get(resource, b"metrics")).decode())
    assert again[("signer_link_resends_total", ())] == 3


def test_metrics_openmetrics_on_request(database: CADatabase, clock: Clock) -> None:
    """A scraper asking for OpenMetrics gets it (content type and the # EOF trailer)."""
    resource = health_resource(make_health(Link(), ServedCounters(), database, clock))
    request = get(resource, b"metrics", accept=b"application/openmetrics-text; version=1.0.0")
    assert request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(
        b"application/openmetrics-text"
    )
    assert body(request).endswith(b"# EOF\n")


def test_samples_with_inconsistent_labels_are_an_error() -> None:
    """Two samples of one family with different label names are refused (500), not mangled."""

    class Source:
        def health(self) -> dict[str, Any]:
            return {}

        def metrics(self) -> list[Sample]:
            return [Sample("x", "h", "gauge", {"a": "1"}, 1), Sample("x", "h", "gauge", {"b": "1"}, 2)]

    assert get(health_resource(Source()), b"metrics").responseCode == 500


# -- addresses and a real port ------------------------------------------------------------


@pytest.mark.parametrize(
    "given, bound",
    [
        ("tcp:8081", "tcp:8081:interface=127.0.0.1"),
        ("8081", "tcp:8081:interface=127.0.0.1"),
        ("tcp6:8081", "tcp6:8081:interface=\\:\\:1"),
        ("tcp:8081:interface=10.0.0.5", "tcp:8081:interface=10.0.0.5"),
        ("unix:/run/signer/health.sock", "unix:/run/signer/health.sock"),
    ],
)
def test_tcp_without_interface_binds_loopback(given: str, bound: str) -> None:
    """Only local addresses by default: a TCP description without interface= gets loopback."""
    assert local_description(given) == bound


def test_iso_time() -> None:
    """Times are ISO 8601 UTC with a Z and milliseconds; None stays None."""
    assert iso_time(T0 + 0.25) == "2026-12-04T12:00:00.250Z"
    assert iso_time(None) is None


@pytest.mark.filterwarnings("ignore:Using readBody with a transport:DeprecationWarning")
@pytest_twisted.inlineCallbacks
def test_health_service_on_a_loopback_port(database: CADatabase) -> Any:
    """The service listens on 127.0.0.1 (port 0 = any free), answers both pages, and
    closes the port when stopped."""
    from twisted.internet import reactor
    from twisted.internet.error import ConnectionRefusedError
    from twisted.web.client import Agent, readBody

    link = Link(last_success=reactor.seconds() - 1, requests_served=1)
    health = ServerHealth(link, ServedCounters(served=1, by_kind={"nul:served": 1}), database, [0], WEEK,
                          reactor, synchronous)
    service = HealthService("tcp:0", health, reactor)
    service.startService()
    try:
        port = yield service.when_listening()
        address = port.getHost()
        assert address.host == "127.0.0.1"
        agent = Agent(reactor)
        response = yield agent.request(b"GET", f"http://127.0.0.1:{address.port}/health".encode())
        assert response.code == 200
        report = json.loads((yield readBody(response)))
        assert report["requests"]["served"] == 1
        response = yield agent.request(b"GET", f"http://127.0.0.1:{address.port}/metrics".encode())
        samples = metrics_of((yield readBody(response)).decode())
        assert samples[("signer_requests_total", (("kind", "nul"), ("outcome", "served")))] == 1
    finally:
        yield service.stopService()
    with pytest.raises(ConnectionRefusedError):
        yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{address.port}/health".encode())


# -- end to end: twistd signer-server ------------------------------------------------------


@dataclass
class RunningServer:
    """A ``twistd signer-server`` started by :func:`running_server`."""

    directory: Path
    device: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / "signer"), args[0], "--device", self.device, "--timeout", "30", *args[1:]]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.log_text())
            if found:
                return found
            assert self.process.poll() is None, self.log_text()
            assert time.monotonic() < deadline, self.log_text()
            time.sleep(0.05)


def make_signer(base: Path, extra_config: str = "", openpgp: bool = False) -> Path:
    """A throw-away signer under ``base/signer`` (no OpenPGP key unless asked);
    ``extra_config`` is appended to its TOML file."""
    directory = base / "signer"
    if openpgp:
        created = subprocess.run(
            [str(BIN / "signer"), "init-test-signer", str(directory)],
            capture_output=True, text=True, timeout=120,
        )
        assert created.returncode == 0, created.stderr
    else:
        from signer.server.testsigner import create_test_signer

        create_test_signer(directory)
    config = directory / "signer-server.toml"
    config.write_text(config.read_text() + extra_config)
    return directory


@contextlib.contextmanager
def running_server(
    base: Path,
    extra_config: str = "",
    twistd_options: tuple[str, ...] = (),
    wrapper: tuple[str, ...] = (),
    ready: str = "serving on",
    openpgp: bool = False,
) -> Iterator[RunningServer]:
    """``twistd -n signer-server`` of a fresh test signer over a socat pty pair.

    ``twistd_options`` go before the subcommand (e.g. ``--logger``);
    ``wrapper`` is a command prefix (e.g. a program that restricts the process);
    ``openpgp`` gives the signer an OpenPGP CA key.
    """
    directory = make_signer(base, extra_config, openpgp)
    with pty_pair() as pair:
        serial = base / "serial.conf"
        serial.write_text(f'[serial]\ndevice = "{pair.a}"\nbaudrate = 115200\n')
        log = base / "server.log"
        command = [
            *wrapper, sys.executable, str(BIN / "twistd"), "-n", "--pidfile=", *twistd_options,
            "signer-server", "--config", str(directory / "signer-server.toml"),
            "--serial-config", str(serial),
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=base, stdout=out, stderr=subprocess.STDOUT)
        server = RunningServer(directory, pair.b, log, process)
        try:
            server.wait_for(ready)
            yield server
        finally:
            process.terminate()
            process.wait(timeout=15)


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, answer.headers["content-type"], answer.read()


@pytest.mark.skipif(not socat_available(), reason="socat is not installed")
def test_twistd_server_serves_health_after_ping(tmp_path: Path) -> None:
    """A real twistd signer-server with [health] listen answers /health and /metrics on
    loopback, and the figures reflect three pings and a CRL refresh; with
    --logger signer.logging.json_observer every request is one JSON line with
    named fields."""
    with running_server(
        tmp_path,
        '\n[health]\nlisten = "tcp:0"\n',
        twistd_options=("--logger", "signer.logging.json_observer"),
        ready=r"health pages on http://127\.0\.0\.1:\d+",
    ) as server:
        port = int(server.wait_for(r"health pages on http://127\.0\.0\.1:(\d+)").group(1))
        status, content_type, raw = fetch(f"http://127.0.0.1:{port}/health")
        before = json.loads(raw)
        assert status == 200 and content_type == "application/json"
        assert before["link"]["last_success"] is None
        assert before["requests"]["served"] == 0

        ping = server.cli("ping", "--count", "3")
        assert ping.returncode == 0, ping.stderr
        crl = tmp_path / "root1.crl"
        revoke = server.cli("revoke", "--root", "1", "--crl", str(crl))
        assert revoke.returncode == 0, revoke.stderr
        server.wait_for(r'"kind": "revoke", "outcome": "served"')

        report = json.loads(fetch(f"http://127.0.0.1:{port}/health")[2])
        assert report["status"] == "ok"
        assert report["link"]["state"] == "idle"
        assert report["link"]["last_success"] is not None
        assert 0 <= report["link"]["last_success_seconds_ago"] < 30
        assert report["link"]["counters"]["frames_in"] == 4
        assert report["requests"]["by_kind"] == {"nul:served": 3, "revoke:served": 1}
        assert report["requests"]["answers_acknowledged"] == 4
        assert report["crl"]["0"] is None
        assert report["crl"]["1"]["crl_number"] == 1
        assert 0 <= report["crl"]["1"]["age_seconds"] < 60

        status, content_type, raw = fetch(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        samples = metrics_of(raw.decode())
        assert samples[("signer_requests_total", (("kind", "nul"), ("outcome", "served")))] == 3
        assert samples[("signer_link_frames_in_total", ())] == 4
        assert samples[("signer_crl_number", (("root", "1"),))] == 1

        lines = [json.loads(line) for line in server.log_text().splitlines() if line.strip()]
        served = [line for line in lines if line.get("namespace") == "signer.server.dispatcher.Dispatcher"]
        assert [line["kind"] for line in served] == ["nul", "nul", "nul", "revoke"]
        for line in served:
            assert line["outcome"] == "served" and line["level"] == "info"
            assert isinstance(line["ms"], float) and line["bytes_on_wire"] > 0
        assert served[0]["bytes_on_wire"] == 76  # NUL request + answer frames
        assert any(line["message"].startswith("serving on") and "device" in line for line in lines)


# -- the client's figures (ClientHealth) ----------------------------------------------------


@dataclass
class ClientSetup:
    """A client's parts over a real sqlite WebDB, its link a real ClientLinkProtocol
    joined in memory to a ServerLinkProtocol, reports read on a ``task.Clock``."""

    db: Any
    parts: Any
    line: Any
    clock: Clock
    resource: Any


@pytest.fixture
def client_setup(tmp_path: Path) -> Iterator[ClientSetup]:
    from twisted.internet import reactor

    from signer.client.health import ClientHealth
    from signer.client.service import ClientParts
    from signer.protocol.transport import ClientLinkProtocol, ServerLinkProtocol
    from tests.client.conftest import make_world
    from tests.protocol.test_transport import Line
    from tests.support.responder import ScriptedHandler
    from tests.support.webdb import sqlite_webdb

    db = sqlite_webdb(tmp_path / "webdb.sqlite")
    world = make_world(tmp_path, db, reactor, None)
    clock = Clock()
    clock.advance(T0)
    protocol = ClientLinkProtocol(clock)
    line = Line(protocol, ServerLinkProtocol(ScriptedHandler(), clock))
    parts = ClientParts(world.config, None, reactor, requester=protocol)
    resource = health_resource(ClientHealth(parts, clock=clock))
    yield ClientSetup(db, parts, line, clock, resource)
    parts.webdb.close()
    db.close()


@inlineCallbacks
def get_later(resource: Any, path: bytes) -> Any:
    """GET ``path`` from ``resource`` and wait for the answer (the WebDB answers from a thread)."""
    request = DummyRequest([path])
    finished = request.notifyFinish()
    result = getChildForRequest(resource, request).render(request)
    assert result is NOT_DONE_YET
    yield finished
    return request


@pytest_twisted.inlineCallbacks
def test_client_health_reports_pending_rows_crl_age_and_link(client_setup: ClientSetup) -> Any:
    """The client's /health has the pending rows per table (below the warning
    threshold) and revocations per table, read from the WebDB at the request, the
    CRL age per root, the rounds and the link; /metrics has the same figures."""
    from signer.client.jobs import RoundReport
    from signer.protocol import codec
    from tests.support.webdb import REVOKE_REQUESTED

    setup = client_setup
    db = setup.db
    db.add_cert("emailcerts", 1, 10, "/CN=a")
    db.add_cert("emailcerts", 2, 10, "/CN=b")
    db.add_cert("emailcerts", 3, 10, "/CN=c", warning=3)  # given up: not pending
    db.add_cert("emailcerts", 4, 10, "/CN=d", crt_name="../crt/d.crt", revoked=REVOKE_REQUESTED)
    db.add_cert("orgdomaincerts", 5, 7, "/CN=e")
    db.add_gpg(1, 10, "a@example.org")
    # what the jobs recorded: a NUL round trip now, a CRL of rootcert 1 installed
    # an hour ago, four rounds, the last one cut short by the link
    setup.parts.protocol.request(codec.NulRequest(b"120420182026.49"))
    setup.line.pump()
    jobs = setup.parts.jobs
    jobs.crl_age[1] = T0 - 3600
    jobs.rounds = 4
    jobs.last_round = RoundReport(number=3, aborted="link: no ACK for START")
    setup.clock.advance(100)

    request = yield get_later(setup.resource, b"health")
    assert request.responseCode in (None, 200)
    report = json.loads(body(request))
    assert report["role"] == "client"
    assert report["pending"] == {
        "gpg": 1, "emailcerts": 2, "domaincerts": 0, "orgemailcerts": 0, "orgdomaincerts": 1,
    }
    assert report["pending_revocations"] == {
        "emailcerts": 1, "domaincerts": 0, "orgemailcerts": 0, "orgdomaincerts": 0,
    }
    assert report["crl"] == {
        "1": {"installed_at": "2026-12-04T11:00:00.000Z", "age_seconds": 3700},
        "2": None,  # configured, nothing installed since start
    }
    assert report["link"]["state"] == "idle"
    assert report["link"]["last_success"] == "2026-12-04T12:00:00.000Z"
    assert report["link"]["last_success_seconds_ago"] == 100
    assert report["link"]["counters"]["frames_in"] == 1
    assert report["rounds"] == 4 and report["last_round_aborted"] == "link: no ACK for START"
    assert report["wakeup"] is None
    assert report["status"] == "warning"
    assert report["problems"] == ["the last polling round ended early: link: no ACK for START"]

    db.add_cert("emailcerts", 6, 10, "/CN=f")  # live: the next scrape counts it
    request = yield get_later(setup.resource, b"metrics")
    samples = metrics_of(body(request).decode())
    assert samples[("signer_pending_requests", (("table", "emailcerts"),))] == 3
    assert samples[("signer_pending_requests", (("table", "gpg"),))] == 1
    assert samples[("signer_pending_revocations", (("table", "emailcerts"),))] == 1
    assert samples[("signer_webdb_readable", ())] == 1
    assert samples[("signer_crl_age_seconds", (("root", "1"),))] == 3700
    assert ("signer_crl_age_seconds", (("root", "2"),)) not in samples
    assert samples[("signer_polling_rounds_total", ())] == 4
    assert samples[("signer_polling_last_round_aborted", ())] == 1
    assert samples[("signer_link_state", (("state", "idle"),))] == 1
    assert samples[("signer_link_last_success_age_seconds", ())] == 100
    assert samples[("signer_info", (("role", "client"),))] == 1


@pytest_twisted.inlineCallbacks
def test_client_health_survives_a_database_error(client_setup: ClientSetup) -> Any:
    """A failing WebDB query does not fail the pages: /health answers 200 with the
    error in problems and no pending figures; /metrics leaves the pending gauges out
    and says signer_webdb_readable 0."""
    setup = client_setup
    setup.db.execute("DROP TABLE emailcerts")
    request = yield get_later(setup.resource, b"health")
    assert request.responseCode in (None, 200)
    report = json.loads(body(request))
    assert report["status"] == "warning"
    assert report["problems"] == ["WebDB unreadable: no such table: emailcerts"]
    assert report["pending"] is None and report["pending_revocations"] is None
    assert report["link"]["state"] == "idle"
    request = yield get_later(setup.resource, b"metrics")
    assert request.responseCode in (None, 200)
    samples = metrics_of(body(request).decode())
    assert samples[("signer_webdb_readable", ())] == 0
    assert not any(name == "signer_pending_requests" for name, _ in samples)
    assert samples[("signer_link_state", (("state", "idle"),))] == 1


def test_client_health_does_not_wait_for_a_locked_database(client_setup: ClientSetup) -> None:
    """A WebDB that does not answer (here: locked by another connection) gives a
    problem after db_timeout seconds instead of a page that never answers."""
    setup = client_setup
    locker = setup.db.connection  # the test's own connection, not the client's pool
    locker.execute("BEGIN EXCLUSIVE")
    try:
        request = DummyRequest([b"health"])
        assert getChildForRequest(setup.resource, request).render(request) is NOT_DONE_YET
        setup.clock.advance(9.9)
        assert not request.finished
        setup.clock.advance(0.1)
        assert request.finished
    finally:
        locker.rollback()
    report = json.loads(body(request))
    assert report["problems"] == ["WebDB unreadable: no answer within 10 s"]
    assert report["pending"] is None
