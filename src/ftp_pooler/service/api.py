"""Liveness and readiness probes and the Prometheus endpoint, served over HTTP.

:class:`Health` is plain state, written by the worker's components and read by
the probes. :func:`create_app` answers ``GET /health``, ``GET /ready`` and
``GET /metrics`` (404 for anything else) and :func:`serve_api` runs it with
Hypercorn inside the caller's nursery until a :class:`trio.Event` is set, on a
socket :func:`bind_api_socket` bound beforehand (so a port already taken is a
one-line error at start-up, not a traceback from deep inside Hypercorn).
"""

from __future__ import annotations

import logging
import math
import socket
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from quart import Response
from quart_trio import QuartTrio

from ftp_pooler.errors import ErrorCode, PoolerError
from ftp_pooler.metrics import Metrics

log = structlog.get_logger(__name__)


@dataclass
class Health:
    """What the probes report; no I/O, only Trio's clock.

    Liveness: every long-running component calls :meth:`heartbeat` regularly;
    the worker is dead when one has not for too long, or called
    :meth:`component_failed`. A failure is final: the pod should be restarted.
    The worker is dead too when work has waited on the broker too long with no
    progress (:meth:`waiting`, :meth:`progressed`, :meth:`done_waiting`):
    results with none acknowledged (the publisher could not recover by
    itself), finished offsets with no commit succeeding. A restart hands its
    partitions to workers that may make progress.

    Readiness: the consumer has joined its group, the producer is ready, and
    the worker is not draining. Joined, not "has partitions": a group with
    more members than partitions legitimately leaves some members without any,
    and they are still healthy standbys.
    """

    joined: bool = False
    producer_ready: bool = False
    draining: bool = False
    _beats: dict[str, float] = field(default_factory=dict, init=False)
    """Component name -> trio.current_time() of its last heartbeat."""
    _failures: dict[str, str] = field(default_factory=dict, init=False)
    """Component name -> why it failed."""
    _waits: dict[str, tuple[float, str]] = field(default_factory=dict, init=False)
    """Name -> since when its work has waited with no progress, and what progress is missing."""
    _troubles: dict[str, str] = field(default_factory=dict, init=False)
    """Component name -> a failure a restart would not cure (see :meth:`troubled`)."""

    def heartbeat(self, name: str) -> None:
        """Record that component ``name`` is alive now (and register it on first call)."""
        self._beats[name] = trio.current_time()

    def component_failed(self, name: str, reason: str) -> None:
        """Mark component ``name`` dead for good; ``reason`` appears in ``/health``."""
        self._failures[name] = reason

    def troubled(self, name: str, reason: str | None) -> None:
        """Component ``name`` fails in a way a restart would not cure (``reason``), or no
        longer (None): e.g. a poll that cannot decode a record. ``/health`` shows it as
        ``degraded`` and stays 200 (a liveness restart would only loop on the same record);
        ``/ready`` is 503 meanwhile, so that ``kubectl get pods`` shows it."""
        if reason is None:
            self._troubles.pop(name, None)
        else:
            self._troubles[name] = reason

    def waiting(self, name: str, what: str) -> None:
        """Work of ``name`` waits on the broker from now (if it did not already): ``what``
        describes the missing progress, e.g. ``"results waiting, none acknowledged by Kafka"``."""
        self._waits.setdefault(name, (trio.current_time(), what))

    def progressed(self, name: str) -> None:
        """``name`` made progress: the work still waiting waits since now."""
        if name in self._waits:
            self._waits[name] = (trio.current_time(), self._waits[name][1])

    def done_waiting(self, name: str) -> None:
        """Nothing of ``name`` waits any more."""
        self._waits.pop(name, None)

    def set_joined(self, joined: bool) -> None:
        """Whether the consumer is a member of its group (with or without partitions)."""
        self.joined = joined

    def set_producer_ready(self, ready: bool) -> None:
        self.producer_ready = ready

    def start_draining(self) -> None:
        """Report not-ready from now on: the worker is shutting down."""
        self.draining = True

    def alive(self, max_age: float, max_waiting: float = math.inf) -> tuple[bool, dict[str, Any]]:
        """Whether every component beat within ``max_age`` seconds, none failed, and no
        work waited more than ``max_waiting`` seconds without progress.

        Returns:
            The verdict and a report: ``{"status": "ok" | "unhealthy",
            "components": {name: {"status": "ok" | "stale" | "failed" | "stalled",
            "age_seconds": ..., "reason": ...}}}``; a waiting name is there while
            its work waits (``age_seconds``: since its last progress, or since
            the work started to wait).
        """
        now = trio.current_time()
        components: dict[str, dict[str, Any]] = {}
        for name, beat in self._beats.items():
            age = now - beat
            # While draining, the poller has stopped on purpose: a drain longer
            # than max_age must not get the pod killed by its liveness probe.
            status = "ok" if age <= max_age or self.draining else "stale"
            components[name] = {"status": status, "age_seconds": round(age, 3)}
        for name, (since, what) in self._waits.items():
            age = now - since
            waits: dict[str, Any] = {"status": "ok", "age_seconds": round(age, 3)}
            if age > max_waiting and not self.draining:
                waits["status"] = "stalled"
                waits["reason"] = f"{what} for {age:.0f} s (limit {max_waiting:g} s)"
            components[name] = waits
        for name, reason in self._troubles.items():
            components.setdefault(name, {}).update(status="degraded", reason=reason)
        for name, reason in self._failures.items():
            components.setdefault(name, {}).update(status="failed", reason=reason)
        ok = all(c["status"] in ("ok", "degraded") for c in components.values())
        return ok, {"status": "ok" if ok else "unhealthy", "components": components}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Whether to take work: joined, producer ready, not draining, nothing troubled."""
        ok = self.joined and self.producer_ready and not self.draining and not self._troubles
        return ok, {
            "status": "ready" if ok else "not ready",
            "joined": self.joined,
            "producer_ready": self.producer_ready,
            "draining": self.draining,
            "troubles": dict(self._troubles),
        }


def create_app(
    health: Health,
    metrics: Metrics,
    *,
    liveness_max_age: float = 30.0,
    liveness_waiting: float = math.inf,
) -> QuartTrio:
    """The probe and metrics app.

    Args:
        health: Read by ``/health`` and ``/ready`` (200, or 503 with the reasons).
            ``/health`` logs one line when its verdict changes (``health.failing``
            with the report, ``health.recovered``), none per probe.
        metrics: Rendered by ``/metrics``, on the Trio thread: the pool
            collector reads pool state.
        liveness_max_age: Seconds a component may go without a heartbeat.
        liveness_waiting: Seconds work may wait on the broker without progress.
    """
    app = QuartTrio(__name__, static_folder=None)
    verdict = [True]

    @app.get("/health")
    async def health_probe() -> tuple[dict[str, Any], int]:
        ok, report = health.alive(liveness_max_age, liveness_waiting)
        if ok != verdict[0]:
            verdict[0] = ok
            if ok:
                log.info("health.recovered")
            else:
                log.error("health.failing", components=report["components"])
        return report, 200 if ok else 503

    @app.get("/ready")
    async def ready_probe() -> tuple[dict[str, Any], int]:
        ok, report = health.ready()
        return report, 200 if ok else 503

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    return app


def bind_api_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: any free port), for :func:`serve_api`.

    Raises:
        PoolerError: INVALID_CONFIG when the address cannot be bound (taken,
            not local, unknown host).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PoolerError(
            ErrorCode.INVALID_CONFIG,
            f"api: cannot listen on {host}:{port}: {exc.strerror or exc}",
        ) from exc
    return sock


async def serve_api(
    app: QuartTrio,
    sock: socket.socket,
    *,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``sock`` (see :func:`bind_api_socket`) until ``shutdown`` is set.

    Requests still running then get one second to finish. Hypercorn's access
    log is off and its error log goes to the standard ``hypercorn.error``
    logger (Hypercorn would otherwise install its own stderr handler).

    Args:
        sock: A bound socket; Hypercorn takes it over (and closes it).
        task_status: Receives the port listened on, once listening.
    """
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(serve, _shield_sends(app), config, shutdown_trigger=shutdown.wait, mode="asgi")
        )
        task_status.started(int(binds[0].rsplit(":", 1)[1]))


def _shield_sends(app: QuartTrio) -> ASGIFramework:
    """``app`` with each ASGI ``send`` shielded from cancellation.

    Hypercorn's Trio worker finishes a response inside the app's ``send``:
    after the last body chunk it closes the connection (``Connection: close``)
    or arms the keep-alive timer. quart-trio cancels its request task as soon
    as Hypercorn reports the stream closed, which is in the middle of that
    ``send``: the socket then stays open until the client closes it, idle
    keep-alive connections never time out, and every shutdown waits the full
    graceful timeout for them. Hypercorn already shields its socket writes,
    so the shield adds no new way to hang.
    """

    async def shielded_app(
        scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        async def shielded_send(message: ASGISendEvent) -> None:
            with trio.CancelScope(shield=True):
                await send(message)

        await app(scope, receive, shielded_send)

    return shielded_app
