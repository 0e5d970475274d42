"""Pools of logged-in FTP sessions, one per connection id, under per-server and per-pod caps.

Every decision (which session a borrower gets, which idle one to evict, how
far to lower a server's cap after a 421) is made in a synchronous step on
plain data; opening and closing sockets happens outside it, and closing is
shielded from cancellation. A borrower's slot is a token of two
:class:`trio.CapacityLimiter` objects, always taken in the same order (the
connection's, then the pod's), so a cancelled waiter or a failed transfer
can never leak one.

Each connection also has a circuit breaker
(:mod:`ftp_pooler.scheduling.breaker`): after consecutive failures to open a
session the server is marked down and no session is opened to it until one
probe at a time finds it back. :meth:`SessionPool.allowance` tells the
scheduler, as plain data, how many tasks a connection can take now.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import structlog
import trio

from ftp_pooler.errors import ErrorCode, FTPError, PoolerError
from ftp_pooler.ftp.config import FTPConfig
from ftp_pooler.ftp.opening import OpeningPolicy
from ftp_pooler.ftp.session import FTPSession, SessionFactory
from ftp_pooler.scheduling.breaker import Breaker, BreakerPolicy, BreakerState
from ftp_pooler.scheduling.scheduler import Allowance

log = structlog.get_logger(__name__)

DOWN_ERRORS = frozenset({ErrorCode.CONNECTION_ERROR, ErrorCode.TIMEOUT, ErrorCode.PROTOCOL_ERROR})
"""Failures to open a session that count towards a server's breaker: it did not
answer, or not in FTP. A refused login, a full server (421) or a TLS
certificate problem means the server is up."""

_OPEN_FAILURES = frozenset({ErrorCode.SERVER_BUSY, ErrorCode.CONNECTION_ERROR, ErrorCode.TIMEOUT})
"""Failed opens that make the pool open fewer sessions at once (:class:`OpeningPolicy`)."""


@dataclass(frozen=True)
class PoolLimits:
    """How many sessions, and for how long.

    Attributes:
        max_sessions_per_pod: Open sessions over all connections.
        max_sessions_per_connection: Open sessions to one connection id (a
            connection's own ``max_sessions`` wins when set).
        session_timeout_seconds: An idle session older than this is closed.
        noop_after_seconds: An idle session older than this is checked with
            NOOP before it is handed out.
        cap_recovery_seconds: After a 421 lowered a server's cap, the cap goes
            back up by one for every such quiet period without another 421.
        max_busy_retries: 421s in a row one borrower sits through (waiting for
            a session to free up) before it gives up with SERVER_BUSY.
        max_concurrent_opens: Sessions being opened (connect and login) to one
            connection at once, to begin with. Servers take new connections
            through a short listen backlog (pure-ftpd: 3 + max clients / 8); a
            burst of connects beyond it waits for TCP retransmits, 1 s, 3 s,
            7 s..., sometimes past the connect timeout. From there it adapts
            per connection (:class:`~ftp_pooler.ftp.opening.OpeningPolicy`):
            one more after each quick connect, half after a stalled or failed one.
        breaker_failures: Consecutive failed session opens (connect refused or
            timed out, no FTP greeting) that mark a server down.
        breaker_open_seconds: How long a server marked down gets no new session
            before one probe may try; doubled after each failed probe...
        breaker_max_open_seconds: ...up to this.
    """

    max_sessions_per_pod: int = 64
    max_sessions_per_connection: int = 8
    session_timeout_seconds: float = 300.0
    noop_after_seconds: float = 15.0
    cap_recovery_seconds: float = 30.0
    max_busy_retries: int = 3
    max_concurrent_opens: int = 4
    breaker_failures: int = 5
    breaker_open_seconds: float = 5.0
    breaker_max_open_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.max_sessions_per_pod < 1 or self.max_sessions_per_connection < 1:
            raise ValueError("session caps must be at least 1")
        if self.max_concurrent_opens < 1:
            raise ValueError("max_concurrent_opens must be at least 1")
        self.breaker_policy()  # refuses inconsistent breaker settings

    def breaker_policy(self) -> BreakerPolicy:
        """The breaker settings as a :class:`BreakerPolicy`.

        Raises:
            ValueError: ``breaker_failures`` below 1, or the open periods not
                0 < open <= max open.
        """
        return BreakerPolicy(
            self.breaker_failures, self.breaker_open_seconds, self.breaker_max_open_seconds
        )


@dataclass(frozen=True)
class ConnectionStats:
    """A snapshot of one connection's sessions, for metrics."""

    cap: int
    open: int
    idle: int
    busy: int
    opening: int
    waiters: int
    opened_total: int
    closed_total: int
    refused_total: int
    """Connects the server answered with 421 (too many sessions)."""
    wait_seconds_total: float
    wait_count: int
    breaker: BreakerState = BreakerState.CLOSED


@dataclass(eq=False)
class _Connection:
    """Pool state for one connection id; only the pool touches it."""

    conn_id: str
    factory: SessionFactory
    configured_cap: int
    limiter: trio.CapacityLimiter
    opener: trio.CapacityLimiter
    """Bounds the sessions being opened at once (see PoolLimits.max_concurrent_opens),
    set by ``opening_policy`` after each open."""
    opening_policy: OpeningPolicy
    idle: list[FTPSession] = field(default_factory=list)
    """Idle sessions, most recently used last (handed out LIFO)."""
    busy: int = 0
    opening: int = 0
    waiters: int = 0
    opened_total: int = 0
    closed_total: int = 0
    refused_total: int = 0
    wait_seconds_total: float = 0.0
    wait_count: int = 0
    last_refusal: float = float("-inf")
    breaker: Breaker = field(default_factory=Breaker)
    retired: bool = False
    """Removed or replaced by :meth:`SessionPool.reconfigure`: its sessions close when returned."""

    @property
    def cap(self) -> int:
        return int(self.limiter.total_tokens)

    @property
    def open(self) -> int:
        return len(self.idle) + self.busy


def _snapshot(c: _Connection, now: float) -> ConnectionStats:
    """``c``'s state as :meth:`SessionPool.stats` reports it (``now``: the pool's clock)."""
    return ConnectionStats(
        cap=c.cap,
        open=c.open,
        idle=len(c.idle),
        busy=c.busy,
        opening=c.opening,
        waiters=c.waiters,
        opened_total=c.opened_total,
        closed_total=c.closed_total,
        refused_total=c.refused_total,
        wait_seconds_total=c.wait_seconds_total,
        wait_count=c.wait_count,
        breaker=c.breaker.state(now),
    )


class SessionPool:
    """Hands out logged-in sessions: ``async with pool.session("conn") as s: ...``.

    Use :func:`open_session_pool`, which also runs the idle-session reaper and
    closes everything on exit.
    """

    def __init__(
        self,
        factories: Mapping[str, SessionFactory],
        limits: PoolLimits = PoolLimits(),
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._pod = trio.CapacityLimiter(limits.max_sessions_per_pod)
        self._connections = {
            conn_id: self._new_connection(conn_id, factory)
            for conn_id, factory in factories.items()
        }
        self._closed = False
        self._closing = 0
        self._retired: set[_Connection] = set()
        """Connections removed or replaced by :meth:`reconfigure`, until their sessions close."""

    def __repr__(self) -> str:
        return f"<SessionPool connections={sorted(self._connections)} open={self.open_sessions}>"

    @property
    def open_sessions(self) -> int:
        """Sessions open, being opened or being closed, over all connections."""
        connections = [*self._connections.values(), *self._retired]
        return self._closing + sum(c.open + c.opening for c in connections)

    def stats(self) -> dict[str, ConnectionStats]:
        """Per connection id: cap, open/idle/busy/opening sessions, waiters, counters, breaker.

        Sessions still out from a version :meth:`reconfigure` retired count too:
        under their id's current version when it was changed, and under the
        removed id (cap 0) until they are returned and closed.
        """
        now = self._clock()
        stats = {conn_id: _snapshot(c, now) for conn_id, c in self._connections.items()}
        for old in self._retired:
            if old.open + old.opening == 0:
                continue
            now_stats = stats.get(old.conn_id)
            if now_stats is None:  # removed
                stats[old.conn_id] = replace(_snapshot(old, now), cap=0, idle=0, waiters=0)
            else:
                stats[old.conn_id] = replace(
                    now_stats,
                    open=now_stats.open + old.open,
                    busy=now_stats.busy + old.busy,
                    opening=now_stats.opening + old.opening,
                )
        return stats

    def allowance(self, conn_id: str) -> Allowance:
        """How many tasks ``conn_id`` can take now, for the scheduler (plain data).

        Its current cap while its breaker is closed; one probe when half-open
        (none while the probe is out); none while open, until the probe time.
        An unknown connection id (removed by :meth:`reconfigure` while tasks
        were queued for it) gets room for them all: each attempt fails at once.
        """
        conn = self._connections.get(conn_id)
        if conn is None:
            return Allowance(self.limits.max_sessions_per_pod)
        breaker = conn.breaker
        if breaker.open_until is None:
            return Allowance(conn.cap)
        now = self._clock()
        if now < breaker.open_until:
            return Allowance(0, down=True, retry_at=breaker.open_until)
        return Allowance(0 if breaker.probing else 1, down=True)

    def _connection(self, conn_id: str) -> _Connection:
        try:
            return self._connections[conn_id]
        except KeyError:
            raise PoolerError(
                ErrorCode.INVALID_CONFIG, f"unknown connection id {conn_id!r}"
            ) from None

    @asynccontextmanager
    async def session(self, conn_id: str | PinnedConnection) -> AsyncIterator[FTPSession]:
        """Borrow a session to ``conn_id`` (or a :meth:`pinned <pin>` one) for the block.

        Waits while the connection or the pod is at its cap. A session that
        broke while borrowed is closed on return, never reused.

        Raises:
            PoolerError: INVALID_CONFIG for an unknown connection id.
            FTPError: From connecting or logging in; SERVER_BUSY when the server
                kept refusing sessions (421) and none of ours was left to wait for.
        """
        conn = self._connection(conn_id) if isinstance(conn_id, str) else conn_id._conn
        borrower = object()
        session = await self._acquire(conn, borrower)
        try:
            yield session
        finally:
            await self._release(conn, session, borrower)

    async def _acquire(self, conn: _Connection, borrower: object) -> FTPSession:
        refusals = 0
        started = self._clock()
        while True:
            self._maybe_raise_cap(conn)
            conn.waiters += 1
            try:
                await _acquire(conn.limiter, borrower)
                try:
                    await _acquire(self._pod, borrower)
                except BaseException:
                    conn.limiter.release_on_behalf_of(borrower)
                    raise
            finally:
                conn.waiters -= 1
            try:
                session = await self._checkout(conn)
            except FTPError as exc:
                self._release_tokens(conn, borrower)
                if exc.code is not ErrorCode.SERVER_BUSY:
                    raise
                refusals += 1
                if not self._lower_cap(conn) or refusals > self.limits.max_busy_retries:
                    raise
                continue
            except BaseException:
                self._release_tokens(conn, borrower)
                raise
            conn.wait_seconds_total += self._clock() - started
            conn.wait_count += 1
            return session

    def _release_tokens(self, conn: _Connection, borrower: object) -> None:
        self._pod.release_on_behalf_of(borrower)
        conn.limiter.release_on_behalf_of(borrower)

    async def _checkout(self, conn: _Connection) -> FTPSession:
        """With both tokens held: reuse an idle session (checked if stale) or open one."""
        if self._closed:
            raise PoolerError(ErrorCode.CONNECTION_ERROR, "session pool is closed")
        while conn.idle:
            session = conn.idle.pop()
            if await self._usable(conn, session):
                conn.busy += 1
                session.reused = True
                return session
        await self._make_room()
        conn.opening += 1
        try:
            async with conn.opener:
                probe = self._breaker_opening(conn)
                session = await self._open(conn, probe)
        finally:
            conn.opening -= 1
        conn.opened_total += 1
        conn.busy += 1
        return session

    def _breaker_opening(self, conn: _Connection) -> bool:
        """Let one open through the breaker, or refuse at once; whether it is the probe.

        Raises:
            FTPError: CONNECTION_ERROR while the server is marked down (its
                breaker is open, or half-open with its probe out).
        """
        now = self._clock()
        breaker = conn.breaker
        if not breaker.may_open(now):
            until = breaker.open_until
            wait = "" if breaker.probing or until is None else f"; next try in {until - now:.1f} s"
            raise FTPError(
                ErrorCode.CONNECTION_ERROR,
                f"server marked down after {breaker.failures} failed connects{wait}",
            )
        conn.breaker, probe = breaker.opening(now)
        return probe

    async def _open(self, conn: _Connection, probe: bool) -> FTPSession:
        """Open a session, telling the breaker how it went (see :data:`DOWN_ERRORS`)."""
        try:
            session = await conn.factory.open()
        except FTPError as exc:
            if exc.code is ErrorCode.SERVER_BUSY:
                conn.refused_total += 1
            if exc.code in _OPEN_FAILURES:
                conn.opener.total_tokens = conn.opening_policy.failed()
            if exc.code in DOWN_ERRORS:
                self._breaker_failed(conn, probe, exc)
            else:
                self._breaker_succeeded(conn)
            raise
        except BaseException:
            conn.breaker = conn.breaker.abandoned(probe=probe)
            raise
        conn.opener.total_tokens = conn.opening_policy.opened(session.connect_seconds)
        self._breaker_succeeded(conn)
        return session

    def _breaker_failed(self, conn: _Connection, probe: bool, exc: FTPError) -> None:
        now = self._clock()
        before = conn.breaker
        conn.breaker = before.failed(now, probe=probe)
        if conn.breaker.open_until != before.open_until:
            log.warning(
                "breaker.opened",
                connection=conn.conn_id,
                failures=conn.breaker.failures,
                open_seconds=conn.breaker.open_seconds,
                probe=probe,
                error_code=exc.code.value,
            )

    def _breaker_succeeded(self, conn: _Connection) -> None:
        if conn.breaker.open_until is not None:
            log.info("breaker.closed", connection=conn.conn_id, failures=conn.breaker.failures)
        conn.breaker = conn.breaker.succeeded()

    async def _usable(self, conn: _Connection, session: FTPSession) -> bool:
        """Whether an idle session taken off the stack still works; closes it if not.

        First, with no round trip, whatever the server sent while it sat idle
        is read (:meth:`FTPSession.check_idle`): an EOF or a ``421`` there
        (vsftpd's ``idle_session_timeout``, a server shutting down) means the
        server closed it, however short the idle time. Past
        ``noop_after_seconds`` a NOOP also proves the server still answers.
        """
        try:
            alive = await session.check_idle()
            if alive and self._clock() - session.last_used >= self.limits.noop_after_seconds:
                with trio.move_on_after(session.config.timeouts.reply):
                    await session.noop()
        except FTPError:
            pass
        except BaseException:
            await self._close(conn, session)
            raise
        if session.broken or session.closed:
            await self._close(conn, session)
            return False
        return True

    async def _make_room(self) -> None:
        """While the pod is full, close the least recently used idle session anywhere.

        The caller counts its new session as opening right after this returns,
        with no checkpoint in between, so concurrent borrowers cannot both
        squeeze past the cap.
        """
        while self.open_sessions >= self.limits.max_sessions_per_pod:
            candidates = [(s.last_used, c, s) for c in self._connections.values() for s in c.idle]
            if not candidates:
                return
            _, conn, session = min(candidates, key=lambda item: item[0])
            conn.idle.remove(session)
            await self._close(conn, session)

    def _lower_cap(self, conn: _Connection) -> bool:
        """After a 421: cap the server below what it refused; False if none of ours can free up."""
        conn.last_refusal = self._clock()
        in_use = conn.open + conn.opening
        conn.limiter.total_tokens = max(1, min(conn.cap - 1, in_use))
        return in_use > 0

    def _maybe_raise_cap(self, conn: _Connection) -> None:
        quiet = self._clock() - conn.last_refusal
        if conn.cap < conn.configured_cap and quiet >= self.limits.cap_recovery_seconds:
            conn.limiter.total_tokens = conn.cap + 1
            conn.last_refusal = self._clock()

    async def _release(self, conn: _Connection, session: FTPSession, borrower: object) -> None:
        """Take a session back: idle if it is in step, else closed.

        A session with bytes still unread (a second reply to an over-long
        command line, a late 226) is drained first and closed if that fails
        (:meth:`FTPSession.check_idle`): the next borrower must never read a
        reply meant for an earlier command.
        """
        try:
            keep = not (session.broken or session.closed or self._closed or conn.retired)
            if keep:
                keep = await session.check_idle()
        except BaseException:
            keep = False
            raise
        finally:
            conn.busy -= 1
            try:
                if keep and conn.open < conn.cap:
                    conn.idle.append(session)
                else:
                    await self._close(conn, session)
            finally:
                self._release_tokens(conn, borrower)

    async def _close(self, conn: _Connection, session: FTPSession) -> None:
        self._closing += 1
        try:
            await session.aclose()
        finally:
            self._closing -= 1
            conn.closed_total += 1

    def _take_expired(self) -> list[tuple[_Connection, FTPSession]]:
        deadline = self._clock() - self.limits.session_timeout_seconds
        expired: list[tuple[_Connection, FTPSession]] = []
        for conn in self._connections.values():
            keep = [s for s in conn.idle if s.last_used > deadline]
            expired.extend((conn, s) for s in conn.idle if s.last_used <= deadline)
            conn.idle[:] = keep
        return expired

    async def reap(self) -> int:
        """Close idle sessions older than ``session_timeout_seconds``; returns how many."""
        expired = self._take_expired()
        await self._close_all(expired)
        return len(expired)

    async def _close_all(self, sessions: list[tuple[_Connection, FTPSession]]) -> None:
        """Close sessions concurrently: each QUIT waits up to a second on a dead server."""
        async with trio.open_nursery() as nursery:
            for conn, session in sessions:
                nursery.start_soon(self._close, conn, session)

    async def run_reaper(self) -> None:
        """Reap idle sessions forever (run it in a nursery; cancel it to stop)."""
        period = max(0.5, min(self.limits.session_timeout_seconds / 4, 15.0))
        while True:
            await trio.sleep(period)
            await self.reap()

    async def aclose(self) -> None:
        """Close every idle session; sessions still borrowed close when returned."""
        self._closed = True
        idle = [(conn, session) for conn in self._connections.values() for session in conn.idle]
        for conn in self._connections.values():
            conn.idle = []
        await self._close_all(idle)

    # -- connections changed while running (ftp_pooler.service.reload) -----------------------

    def pin(self, conn_id: str) -> PinnedConnection:
        """``conn_id`` as configured now, for :meth:`session` even after :meth:`reconfigure`.

        Raises:
            PoolerError: INVALID_CONFIG for an unknown connection id.
        """
        return PinnedConnection(self._connection(conn_id))

    def reconfigure(
        self,
        configs: Mapping[str, FTPConfig],
        new_factory: Callable[[FTPConfig], SessionFactory] = SessionFactory,
    ) -> list[tuple[_Connection, FTPSession]]:
        """Switch to a new set of FTP connections in one synchronous step.

        Args:
            configs: Every FTP connection of the new version, by id.
            new_factory: Builds the factory of a connection added or changed.

        Returns:
            The idle sessions taken out of the pool, to close with
            :meth:`close_sessions` (outside this step).

        Raises:
            Exception: Whatever ``new_factory`` raises (a CA file that is not
                PEM: :class:`ssl.SSLError`), before anything has changed.

        A connection whose config is unchanged keeps everything. An added one
        starts empty. A changed or removed one is retired: its idle sessions
        are taken out, and the sessions borrowed from it close when returned.
        A changed one is replaced by a new one with the new factory, a closed
        breaker and its configured cap, sharing the old one's slots (a
        session still out counts towards the cap) and counters. Borrowing by
        id reaches the new version only (a removed id: INVALID_CONFIG
        ``unknown connection id``); a :class:`PinnedConnection` taken before
        keeps borrowing with the old settings.
        """
        fresh = {
            conn_id: new_factory(config)
            for conn_id, config in configs.items()
            if conn_id not in self._connections
            or self._connections[conn_id].factory.config != config
        }
        closing: list[tuple[_Connection, FTPSession]] = []
        self._retired = {c for c in self._retired if c.open + c.opening > 0}
        for conn_id in [c for c in self._connections if c not in configs]:
            self._retire(self._connections.pop(conn_id), closing)
        for conn_id, factory in fresh.items():
            old = self._connections.get(conn_id)
            conn = self._connections[conn_id] = self._new_connection(conn_id, factory)
            if old is not None:
                self._retire(old, closing)
                conn.limiter, conn.opener = old.limiter, old.opener
                conn.limiter.total_tokens = conn.configured_cap
                conn.opened_total, conn.closed_total = old.opened_total, old.closed_total
                conn.refused_total = old.refused_total
                conn.wait_seconds_total, conn.wait_count = old.wait_seconds_total, old.wait_count
        return closing

    def _retire(self, conn: _Connection, closing: list[tuple[_Connection, FTPSession]]) -> None:
        conn.retired = True
        closing.extend((conn, session) for session in conn.idle)
        conn.idle = []
        self._retired.add(conn)

    async def close_sessions(self, sessions: list[tuple[_Connection, FTPSession]]) -> None:
        """Close what :meth:`reconfigure` took out, concurrently and shielded from cancellation."""
        with trio.CancelScope(shield=True):
            await self._close_all(sessions)

    def _new_connection(self, conn_id: str, factory: SessionFactory) -> _Connection:
        cap = factory.config.max_sessions or self.limits.max_sessions_per_connection
        cap = min(cap, self.limits.max_sessions_per_pod)
        return _Connection(
            conn_id,
            factory,
            cap,
            trio.CapacityLimiter(cap),
            trio.CapacityLimiter(self.limits.max_concurrent_opens),
            OpeningPolicy(self.limits.max_concurrent_opens, cap),
            breaker=Breaker(self.limits.breaker_policy()),
        )


@dataclass(frozen=True, eq=False)
class PinnedConnection:
    """One connection id as it was configured when :meth:`SessionPool.pin` was called.

    The transfer engine pins a task's connection when it plans an attempt, so
    the whole attempt borrows sessions with the settings it was planned on,
    even if the connections file changed meanwhile (:mod:`ftp_pooler.service.reload`).
    """

    _conn: _Connection

    @property
    def conn_id(self) -> str:
        """The connection id."""
        return self._conn.conn_id

    @property
    def config(self) -> FTPConfig:
        """The settings its sessions are opened with."""
        return self._conn.factory.config


async def _acquire(limiter: trio.CapacityLimiter, borrower: object) -> None:
    """Take a token, yielding to the scheduler only when one must be waited for.

    ``acquire_on_behalf_of`` always checkpoints twice; a borrower goes on to do
    network I/O (which checkpoints) either way, and this runs for every file.
    """
    try:
        limiter.acquire_on_behalf_of_nowait(borrower)
    except trio.WouldBlock:
        await limiter.acquire_on_behalf_of(borrower)


@asynccontextmanager
async def open_session_pool(
    factories: Mapping[str, SessionFactory], limits: PoolLimits = PoolLimits()
) -> AsyncIterator[SessionPool]:
    """A :class:`SessionPool` with its reaper running; every session is closed on exit."""
    pool = SessionPool(factories, limits)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.run_reaper)
            yield pool
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await pool.aclose()
