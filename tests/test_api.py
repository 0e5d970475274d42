"""Probes and /metrics: Health alone on a fake clock, then the real app over real HTTP."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from trio.testing import MockClock

from ftp_pooler.service.api import Health, bind_api_socket, create_app, serve_api
from ftp_pooler.errors import ErrorCode, PoolerError
from ftp_pooler.ftp.pool import ConnectionStats
from ftp_pooler.metrics import Metrics

HOST = "127.0.0.1"


# --- Health, pure state (autojump_clock: no real waiting) --------------------------------


async def test_alive_without_components() -> None:
    assert Health().alive(1.0) == (True, {"status": "ok", "components": {}})


async def test_heartbeat_goes_stale_and_recovers(autojump_clock: MockClock) -> None:
    health = Health()
    health.heartbeat("poller")
    health.heartbeat("committer")
    await trio.sleep(20)
    health.heartbeat("committer")
    assert health.alive(30)[0]

    await trio.sleep(15)
    ok, report = health.alive(30)
    assert not ok
    assert report["status"] == "unhealthy"
    assert report["components"]["poller"] == {"status": "stale", "age_seconds": 35.0}
    assert report["components"]["committer"] == {"status": "ok", "age_seconds": 15.0}

    health.heartbeat("poller")
    assert health.alive(30)[0]


async def test_a_long_drain_does_not_fail_liveness(autojump_clock: MockClock) -> None:
    health = Health()
    health.heartbeat("poller")
    health.start_draining()
    await trio.sleep(120)
    assert health.alive(30)[0]


async def test_failed_component_stays_dead() -> None:
    health = Health()
    health.heartbeat("poller")
    health.component_failed("producer", "broker unreachable")
    health.heartbeat("producer")
    ok, report = health.alive(30)
    assert not ok
    assert report["components"]["producer"]["status"] == "failed"
    assert report["components"]["producer"]["reason"] == "broker unreachable"
    assert report["components"]["poller"]["status"] == "ok"


async def test_results_waiting_too_long_without_an_ack_fail_liveness(
    autojump_clock: MockClock,
) -> None:
    health = Health()
    health.waiting("results", "results waiting, none acknowledged by Kafka")
    await trio.sleep(200)
    assert health.alive(30, 300) == (
        True, {"status": "ok", "components": {"results": {"status": "ok", "age_seconds": 200.0}}},
    )  # fmt: skip
    health.progressed("results")  # some got through: the others wait since now
    await trio.sleep(300.5)
    ok, report = health.alive(30, 300)
    assert not ok and report["status"] == "unhealthy"
    assert report["components"]["results"] == {
        "status": "stalled",
        "age_seconds": 300.5,
        "reason": "results waiting, none acknowledged by Kafka for 300 s (limit 300 s)",
    }
    health.progressed("results")
    assert health.alive(30, 300)[0]
    await trio.sleep(400)
    health.done_waiting("results")  # none waits: nothing to acknowledge
    assert health.alive(30, 300) == (True, {"status": "ok", "components": {}})
    health.waiting("results", "results waiting, none acknowledged by Kafka")
    await trio.sleep(400)
    health.start_draining()  # shutdown is bounded by itself
    assert health.alive(30, 300)[0]


async def test_ready_needs_joined_and_producer_and_not_draining() -> None:
    health = Health()
    assert health.ready() == (
        False,
        {
            "status": "not ready",
            "joined": False,
            "producer_ready": False,
            "draining": False,
            "troubles": {},
        },
    )
    health.set_joined(True)
    assert not health.ready()[0]
    health.set_producer_ready(True)
    assert health.ready()[0]
    health.set_joined(False)
    assert not health.ready()[0]
    health.set_joined(True)
    health.start_draining()
    ok, report = health.ready()
    assert not ok
    assert report["draining"] is True


async def test_a_trouble_a_restart_would_not_cure_is_degraded_alive_and_not_ready() -> None:
    """A poll that cannot decode a record: /health says so but stays 200 (a liveness
    restart would meet the same record: a crash loop); /ready is 503 meanwhile."""
    health = Health()
    health.heartbeat("poller")
    health.set_joined(True)
    health.set_producer_ready(True)
    health.troubled("poller", "poll failing: UnsupportedCodecError: no lz4")
    ok, report = health.alive(30)
    assert ok and report["status"] == "ok"
    poller = report["components"]["poller"]
    assert (poller["status"], poller["reason"]) == (
        "degraded",
        "poll failing: UnsupportedCodecError: no lz4",
    )
    ok, ready = health.ready()
    assert not ok
    assert ready["troubles"] == {"poller": "poll failing: UnsupportedCodecError: no lz4"}
    health.troubled("poller", None)
    assert health.ready()[0]
    assert health.alive(30)[1]["components"]["poller"]["status"] == "ok"


# --- The app over HTTP (real clock, real sockets on loopback) ------------------------------


Response = tuple[int, dict[str, str], bytes]
"""Status, headers (names lower-cased), body."""


async def _get(port: int, path: str, method: str = "GET") -> Response:
    """One request on a fresh connection, which the server must close after the response."""
    async with await trio.open_tcp_stream(HOST, port) as stream:
        response = await _request(stream, path, method, keep_alive=False)
        with trio.fail_after(5):  # closed at all is the claim, not how fast on a busy machine
            assert await stream.receive_some() == b""
    return response


async def _request(
    stream: trio.SocketStream, path: str, method: str = "GET", *, keep_alive: bool = True
) -> Response:
    """One HTTP/1.1 request on ``stream``; the body is read by Content-Length."""
    connection = "keep-alive" if keep_alive else "close"
    request = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: {connection}\r\n\r\n"
    with trio.fail_after(5):
        await stream.send_all(request.encode("ascii"))
        data = b""
        while b"\r\n\r\n" not in data:
            data += await _receive(stream)
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        while len(body) < int(headers["content-length"]):
            body += await _receive(stream)
    return int(status_line.split()[1]), headers, body


async def _receive(stream: trio.SocketStream) -> bytes:
    chunk = await stream.receive_some()
    if not chunk:
        raise AssertionError("the server closed the connection before a whole response")
    return bytes(chunk)


async def _get_json(port: int, path: str) -> tuple[int, Any]:
    status, headers, body = await _get(port, path)
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


@asynccontextmanager
async def _serving(
    health: Health, metrics: Metrics, *, max_age: float = 30.0, max_unacked: float = 300.0
) -> AsyncIterator[int]:
    shutdown = trio.Event()
    app = create_app(
        health, metrics, liveness_max_age=max_age, liveness_waiting=max_unacked
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_api, app, bind_api_socket(HOST, 0), shutdown=shutdown)
        )
        try:
            yield port
        finally:
            shutdown.set()


async def test_ready_flips_when_draining_starts() -> None:
    health = Health()
    async with _serving(health, Metrics()) as port:
        assert port > 0
        status, report = await _get_json(port, "/ready")
        assert (status, report["joined"], report["producer_ready"]) == (503, False, False)

        health.set_joined(True)
        health.set_producer_ready(True)
        status, report = await _get_json(port, "/ready")
        assert (status, report["status"]) == (200, "ready")

        health.start_draining()
        status, report = await _get_json(port, "/ready")
        assert (status, report["draining"]) == (503, True)


async def test_health_flips_when_a_heartbeat_goes_stale() -> None:
    health = Health()
    health.heartbeat("poller")
    async with _serving(health, Metrics(), max_age=0.2) as port:
        status, report = await _get_json(port, "/health")
        assert (status, report["status"]) == (200, "ok")

        await trio.sleep(0.3)
        status, report = await _get_json(port, "/health")
        assert (status, report["components"]["poller"]["status"]) == (503, "stale")

        health.heartbeat("poller")
        assert (await _get_json(port, "/health"))[0] == 200

        health.component_failed("committer", "commit loop crashed")
        status, report = await _get_json(port, "/health")
        assert status == 503
        assert report["components"]["committer"]["reason"] == "commit loop crashed"


async def test_health_fails_on_unacknowledged_results_and_logs_each_change_once() -> None:
    health = Health()
    health.waiting("results", "results waiting, none acknowledged by Kafka")
    with capture_logs() as logs:
        async with _serving(health, Metrics(), max_unacked=0.2) as port:
            assert (await _get_json(port, "/health"))[0] == 200
            await trio.sleep(0.3)
            for _ in range(3):
                status, report = await _get_json(port, "/health")
                assert status == 503
            assert report["components"]["results"]["status"] == "stalled"
            assert "none acknowledged by Kafka" in report["components"]["results"]["reason"]
            health.progressed("results")
            for _ in range(2):
                assert (await _get_json(port, "/health"))[0] == 200
    events = [(entry["event"], entry["log_level"]) for entry in logs]
    assert events == [("health.failing", "error"), ("health.recovered", "info")]
    assert logs[0]["components"]["results"]["status"] == "stalled"


async def test_metrics_endpoint_serves_prometheus_text() -> None:
    metrics = Metrics()
    metrics.watch_pool(lambda: {"partner-a": ConnectionStats(2, 1, 1, 0, 0, 0, 3, 2, 0, 0.5, 4)})
    metrics.commit_succeeded()
    async with _serving(Health(), metrics) as port:
        status, headers, body = await _get(port, "/metrics")
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE_LATEST
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("ftp_pooler_kafka_commits_total", ())] == 1
    assert samples[("ftp_pooler_sessions_opened_total", (("connection", "partner-a"),))] == 3


async def test_nothing_else_is_served() -> None:
    async with _serving(Health(), Metrics()) as port:
        for path in ("/", "/static/x", "/metrics/", "/admin"):
            assert (await _get(port, path))[0] == 404, path
        assert (await _get(port, "/health", method="POST"))[0] == 405


async def test_server_stops_within_a_second_of_shutdown() -> None:
    shutdown = trio.Event()
    app = create_app(Health(), Metrics())
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_api, app, bind_api_socket(HOST, 0), shutdown=shutdown)
            )
            kept_alive = await trio.open_tcp_stream(HOST, port)
            assert (await _request(kept_alive, "/health"))[0] == 200
            assert (await _request(kept_alive, "/ready"))[0] == 503
            silent = await trio.open_tcp_stream(HOST, port)  # connects, never sends
            shutdown.set()
    for stream in (kept_alive, silent):
        with trio.fail_after(1):
            assert await stream.receive_some() == b""  # closed by the server
        await stream.aclose()
    try:
        await trio.open_tcp_stream(HOST, port)
    except OSError:
        return
    raise AssertionError("still listening after shutdown")


def test_an_address_that_cannot_be_bound_is_an_invalid_config() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PoolerError) as raised:
            bind_api_socket(HOST, port)
    assert raised.value.code is ErrorCode.INVALID_CONFIG
    assert raised.value.message == f"api: cannot listen on {HOST}:{port}: Address already in use"
    with pytest.raises(PoolerError, match="cannot listen on 192.0.2.1:8080"):
        bind_api_socket("192.0.2.1", 8080)  # TEST-NET-1: not an address of this machine
