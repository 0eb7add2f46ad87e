from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from urllib.error import HTTPError

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from emailrouter.config.settings import loopback_host, parse_listen
from emailrouter.service.metrics import Metrics, MetricsServer, stale_mailboxes


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """render() parsed back: (sample name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def get(url: str) -> tuple[int, str, str]:
    """GET url: status, Content-Type and body, every response closed (4xx and 5xx too)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def serve() -> Iterator[Callable[..., MetricsServer]]:
    """Starts MetricsServers on 127.0.0.1, on a free port, and stops them all after the test."""
    started: list[MetricsServer] = []

    def start(metrics: Metrics | None = None, health: Callable[[], list[str]] = list) -> MetricsServer:
        server = MetricsServer(metrics or Metrics(), "127.0.0.1", 0, health)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def filled() -> Metrics:
    """A Metrics with one of everything."""
    m = Metrics()
    m.message("jkt", "retail", "complaint", "planned")
    m.message("jkt", "retail", "complaint", "planned")
    m.message("sby", "corporate", "billing", "duplicate")
    m.action("escalate", "complaints", "sent")
    m.action("reply", None, "deferred")
    m.outbox_pending(3)
    m.poll_success("jkt", when=1_780_000_000.0)
    m.reload("rejected")
    return m


def test_render_has_the_exact_names_and_labels() -> None:
    """Every counter and gauge appears in render() under its documented name, with its documented labels."""
    got = samples(filled())
    msg = (("intent", "complaint"), ("mailbox", "jkt"), ("outcome", "planned"), ("segment", "retail"))
    assert got[("emailrouter_messages_total", msg)] == 2
    dup = (("intent", "billing"), ("mailbox", "sby"), ("outcome", "duplicate"), ("segment", "corporate"))
    assert got[("emailrouter_messages_total", dup)] == 1
    assert got[("emailrouter_actions_total", (("result", "sent"), ("type", "escalate"), ("unit", "complaints")))] == 1
    assert got[("emailrouter_actions_total", (("result", "deferred"), ("type", "reply"), ("unit", "")))] == 1
    assert got[("emailrouter_outbox_pending", ())] == 3
    assert got[("emailrouter_last_poll_success_timestamp_seconds", (("mailbox", "jkt"),))] == 1_780_000_000.0
    assert got[("emailrouter_config_reloads_total", (("result", "rejected"),))] == 1
    assert got[("emailrouter_config_reloads_total", (("result", "ok"),))] == 0  # exported before the first reload
    text = filled().render().decode()
    for name, kind in [
        ("emailrouter_messages_total", "counter"),
        ("emailrouter_actions_total", "counter"),
        ("emailrouter_outbox_pending", "gauge"),
        ("emailrouter_last_poll_success_timestamp_seconds", "gauge"),
        ("emailrouter_config_reloads_total", "counter"),
    ]:
        assert f"# TYPE {name} {kind}\n" in text


def test_poll_success_defaults_to_now() -> None:
    """poll_success without `when` records the current unix time."""
    m = Metrics()
    m.poll_success("jkt")
    value = samples(m)[("emailrouter_last_poll_success_timestamp_seconds", (("mailbox", "jkt"),))]
    assert value > 1_700_000_000


def test_each_metrics_has_its_own_registry() -> None:
    """Two Metrics (or one on a given registry) share no global state: the names never clash."""
    first, second = Metrics(), Metrics()
    first.reload("ok")
    assert samples(second)[("emailrouter_config_reloads_total", (("result", "ok"),))] == 0
    registry = CollectorRegistry()
    third = Metrics(registry)
    third.outbox_pending(7)
    assert registry.get_sample_value("emailrouter_outbox_pending") == 7


def test_http_metrics(serve: Callable[..., MetricsServer], capfd: pytest.CaptureFixture[str]) -> None:
    """A real GET /metrics returns the exposition, on the port chosen for port 0, and nothing reaches stderr."""
    server = serve(filled())
    assert server.port != 0
    status, content_type, body = get(f"{server.url}/metrics")
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert "emailrouter_outbox_pending 3.0" in body
    assert 'emailrouter_last_poll_success_timestamp_seconds{mailbox="jkt"} 1.78e+09' in body
    assert get(f"{server.url}/metrics?x=1")[0] == 200
    assert capfd.readouterr().err == ""


def test_healthz_ok(serve: Callable[..., MetricsServer]) -> None:
    """/healthz answers 200 "ok" when health() reports no problem."""
    server = serve(health=list)
    assert get(f"{server.url}/healthz") == (200, "text/plain; charset=utf-8", "ok\n")


def test_healthz_lists_the_problems(serve: Callable[..., MetricsServer]) -> None:
    """/healthz answers 503 with one line per problem, asked afresh on each request."""
    problems: list[str] = ["jkt: no successful poll for 190 s (3 x 60 s allowed)"]
    server = serve(health=lambda: list(problems))
    assert get(f"{server.url}/healthz") == (503, "text/plain; charset=utf-8", f"{problems[0]}\n")
    problems.append("sby: no successful poll yet\n(3 x 30 s allowed)")  # a line break inside stays one line
    status, _, body = get(f"{server.url}/healthz")
    assert status == 503
    assert body.splitlines() == [problems[0], "sby: no successful poll yet (3 x 30 s allowed)"]
    problems.clear()
    assert get(f"{server.url}/healthz")[0] == 200


def test_healthz_when_health_raises(serve: Callable[..., MetricsServer], capfd: pytest.CaptureFixture[str]) -> None:
    """A health() that raises answers 500, never 200, and the server goes on serving."""

    def broken() -> list[str]:
        raise KeyError("jkt")

    server = serve(health=broken)
    assert get(f"{server.url}/healthz") == (500, "text/plain", "health check failed: KeyError\n")
    assert get(f"{server.url}/metrics")[0] == 200
    assert capfd.readouterr().err == ""


def test_other_paths_are_404(serve: Callable[..., MetricsServer]) -> None:
    """Any path but /metrics and /healthz is a 404."""
    server = serve()
    for path in ("/", "/metrics/", "/healthz/x", "/favicon.ico"):
        assert get(f"{server.url}{path}")[0] == 404


def test_ipv6_loopback() -> None:
    """::1 is accepted, and served when the host has IPv6."""
    server = MetricsServer(Metrics(), "::1", 0, list)
    try:
        server.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert get(f"{server.url}/healthz")[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "", "::", "10.0.0.1", "192.168.1.10", "example.com", "[::1]", "::ffff:127.0.0.1"]
)
def test_non_loopback_host_refused(host: str) -> None:
    """A host outside 127.0.0.0/8, ::1 and localhost is a ValueError, before anything is bound."""
    with pytest.raises(ValueError, match="loopback"):
        MetricsServer(Metrics(), host, 0, list)


@pytest.mark.parametrize(
    ("host", "bound"),
    [("127.0.0.1", "127.0.0.1"), ("127.1.2.3", "127.1.2.3"), ("::1", "::1"), ("LocalHost", "127.0.0.1")],
)
def test_loopback_hosts_accepted(host: str, bound: str) -> None:
    """127.0.0.0/8, ::1 and localhost (bound as 127.0.0.1) are accepted."""
    assert loopback_host(host) == bound


def test_start_stop(serve: Callable[..., MetricsServer]) -> None:
    """stop() closes the socket and may be called twice (or before start); a second start() is an error."""
    MetricsServer(Metrics(), "127.0.0.1", 0, list).stop()
    server = serve()
    with pytest.raises(RuntimeError):
        server.start()
    url = f"{server.url}/healthz"
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        get(url)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("localhost:9464", ("localhost", 9464)), ("[::1]:1", ("::1", 1))],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    """A listen setting is host:port, an IPv6 address in brackets."""
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    "value", ["9464", ":9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "::1:9464", "0.0.0.0:9464"]
)
def test_parse_listen_refuses(value: str) -> None:
    """No port, a port out of range, an IPv6 address without brackets or a non-loopback host is a ValueError."""
    with pytest.raises(ValueError, match="metrics"):
        parse_listen(value)


def test_stale_boundary_is_three_intervals() -> None:
    """Exactly 3 intervals since the last success is still healthy; a moment more is stale."""
    intervals = {"jkt": 60.0}
    assert stale_mailboxes({"jkt": 1000.0}, intervals, now=1180.0) == []
    assert stale_mailboxes({"jkt": 1000.0}, intervals, now=1180.5) == [
        "jkt: no successful poll for 180 s (3 x 60 s allowed)"
    ]
    assert stale_mailboxes({"jkt": 1000.0}, intervals, now=1190.0) == [
        "jkt: no successful poll for 190 s (3 x 60 s allowed)"
    ]


def test_stale_never_polled() -> None:
    """A mailbox never polled (absent, or 0.0 as MailboxHealth starts) is stale; one not configured is ignored."""
    intervals = {"jkt": 60.0, "sby": 0.5, "mdn": 30.0}
    problems = stale_mailboxes({"sby": 0.0, "mdn": 999.0, "gone": 1.0}, intervals, now=1000.0)
    assert problems == [
        "jkt: no successful poll yet (3 x 60 s allowed)",
        "sby: no successful poll yet (3 x 0.5 s allowed)",
    ]


def test_stale_never_polled_after_start() -> None:
    """With `started`, a mailbox that never polled gets 3 intervals from the start, boundary included."""
    assert stale_mailboxes({}, {"jkt": 60.0}, now=1180.0, started=1000.0) == []
    assert stale_mailboxes({}, {"jkt": 60.0}, now=1181.0, started=1000.0) == [
        "jkt: no successful poll yet (3 x 60 s allowed)"
    ]
