"""Taking a snapshot: ask every connected process at once, record every outcome.

Each asked process ends as ``responded``, ``timeout`` (no answer within
``snapshot_timeout_ms``), ``disconnected`` (went away before answering) or
``error`` (answered with something that is not a graph).  A snapshot is
``complete`` when all responded, ``partial`` otherwise — never silently missing.

Concurrency: one snapshot is in flight at a time.  A request that arrives while
one is in flight *joins* it and gets its result (a jump-now during a periodic
snapshot returns that snapshot, which is at most ``snapshot_timeout_ms`` old).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ._config import ServerConfig
from ._ingest import IngestServer, ProcessConnection
from ._staging import STAGED_SCHEMA, StagedReply, store_staged_reply
from ._store import Store, begin_snapshot, finish_snapshot, store_reply
from ._validate import ProtocolError, ValidatedGraph, validate_graph

log = logging.getLogger("peeps.web.snapshots")


class SnapshotResult(TypedDict):
    snapshot_id: int
    captured_at_ns: int
    status: str
    requested: int
    responded: int
    timed_out: int
    disconnected: int
    errored: int


@dataclass
class _InFlight:
    snapshot_id: int
    started_at_ns: int
    timeout_ms: int
    asked: dict[str, ProcessConnection]
    pending: set[str]
    outcomes: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    #: (proc_key, the write of its reply)
    store_jobs: list[tuple[str, asyncio.Future[None]]] = field(default_factory=list)
    all_answered: asyncio.Event = field(default_factory=asyncio.Event)

    def settle(self, proc_key: str, status: str, error: str | None) -> None:
        if proc_key in self.pending:
            self.pending.discard(proc_key)
            self.outcomes[proc_key] = (status, error)
            if not self.pending:
                self.all_answered.set()


class SnapshotCoordinator:
    def __init__(self, config: ServerConfig, store: Store, ingest: IngestServer) -> None:
        self.config = config
        self.store = store
        self.ingest = ingest
        ingest.coordinator = self
        self._current: asyncio.Future[SnapshotResult] | None = None
        self._in_flight: _InFlight | None = None
        self.last_snapshot_id: int | None = None
        self._periodic: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[Any] | None = None

    # -- public ------------------------------------------------------------------

    def progress(self) -> dict[str, Any]:
        flight = self._in_flight
        in_flight: dict[str, Any] | None = None
        if flight is not None:
            in_flight = {
                "snapshot_id": flight.snapshot_id,
                "requested": len(flight.asked),
                "responded": sum(1 for s, _ in flight.outcomes.values() if s == "responded"),
                "pending": sorted(flight.pending),
                "started_at_ns": flight.started_at_ns,
            }
        return {"in_flight": in_flight, "last_snapshot_id": self.last_snapshot_id}

    async def take_snapshot(self, trigger: str) -> SnapshotResult:
        """Snapshot every connected process; joins a snapshot already in flight."""
        if self._current is not None:
            return await asyncio.shield(self._current)
        loop = asyncio.get_running_loop()
        current: asyncio.Future[SnapshotResult] = loop.create_future()
        self._current = current
        self._runner = asyncio.current_task()
        try:
            result = await self._run(trigger)
        except BaseException as exc:
            if not current.done():
                if isinstance(exc, asyncio.CancelledError):
                    current.cancel()
                else:
                    current.set_exception(exc)
                # Joined waiters retrieve it; avoid "exception never retrieved" noise.
                current.exception() if not current.cancelled() else None
            raise
        else:
            current.set_result(result)
            return result
        finally:
            self._current = None
            self._in_flight = None
            self._runner = None

    def start_periodic(self) -> None:
        if self.config.snapshot_interval_s > 0:
            self._periodic = asyncio.create_task(self._periodic_loop(), name="peeps-web-periodic")

    async def stop(self) -> None:
        if self._periodic is not None:
            self._periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._periodic
        current, runner = self._current, self._runner
        if current is not None and runner is not None:
            # Shutting down: do not wait out the snapshot timeout.  The snapshot is
            # recorded as incomplete (see _run).
            runner.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(current), 5)

    # -- called by the ingest server ----------------------------------------------------

    def on_disconnect(self, conn: ProcessConnection, error: str | None) -> None:
        flight = self._in_flight
        if flight is None or conn.proc_key is None or flight.asked.get(conn.proc_key) is not conn:
            return
        flight.settle(conn.proc_key, "disconnected",
                      error or "process disconnected before answering")

    async def on_reply(self, conn: ProcessConnection,
                       message: dict[str, Any] | StagedReply) -> None:
        """A graph reply: decoded (``validate_graph`` checks it) or already staged by SQLite."""
        staged: StagedReply | None = None
        snapshot_id: object
        if isinstance(message, StagedReply):
            staged, snapshot_id = message, message.snapshot_id
        else:
            snapshot_id = message.get("snapshot_id")
        flight = self._in_flight
        proc_key = conn.proc_key
        assert proc_key is not None
        if (flight is None or snapshot_id != flight.snapshot_id or isinstance(snapshot_id, bool)
                or flight.asked.get(proc_key) is not conn or proc_key not in flight.pending):
            if staged is not None:
                staged.close()
            detail = f"ignored a reply for snapshot {str(snapshot_id)[:32]} not awaited from it"
            log.info("ingest %s (%s): %s", conn.peer, proc_key, detail)
            self.store.record_ingest_event("late_reply", proc_key=proc_key, peer=conn.peer,
                                           detail=detail)
            return
        if staged is not None:
            # Staged only when every entry passed its checks: nothing was skipped.
            flight.settle(proc_key, "responded", None)
            flight.store_jobs.append((proc_key, asyncio.ensure_future(
                self._store_staged(flight.snapshot_id, proc_key, staged))))
            return
        assert not isinstance(message, StagedReply)
        graph = message.get("graph")
        try:
            listed = graph.get("nodes") if isinstance(graph, dict) else None
            if isinstance(listed, list) and len(listed) > 2000:
                validated = await asyncio.to_thread(validate_graph, graph)
            else:
                validated = validate_graph(graph)
        except ProtocolError as exc:
            flight.settle(proc_key, "error", f"invalid graph_reply: {exc}")
            raise
        if self._in_flight is not flight or proc_key not in flight.pending:
            return  # the deadline passed while we validated off-loop
        flight.settle(proc_key, "responded", validated.error)
        if validated.error:
            log.warning("snapshot %d: %s: %s", flight.snapshot_id, proc_key, validated.error)
            self.store.record_ingest_event("invalid_entries", proc_key=proc_key, peer=conn.peer,
                                           detail=validated.error)
        flight.store_jobs.append((proc_key, asyncio.ensure_future(
            self._store_reply(flight.snapshot_id, proc_key, validated))))

    # -- internals ---------------------------------------------------------------------

    async def _store_reply(self, snapshot_id: int, proc_key: str, graph: ValidatedGraph) -> None:
        responded_at_ns = time.time_ns()
        await self.store.write(lambda conn: store_reply(
            conn, snapshot_id=snapshot_id, proc_key=proc_key, responded_at_ns=responded_at_ns,
            captured_at_ns=graph.captured_at_ns, error=graph.error, nodes=graph.nodes,
            edges=graph.edges, events=graph.events))

    async def _store_staged(self, snapshot_id: int, proc_key: str, staged: StagedReply) -> None:
        responded_at_ns = time.time_ns()
        try:
            await self.store.write(lambda conn: store_staged_reply(
                conn, snapshot_id=snapshot_id, proc_key=proc_key,
                responded_at_ns=responded_at_ns, staged=staged),
                attach=(staged.uri, STAGED_SCHEMA))
        finally:
            staged.close()

    async def _run(self, trigger: str) -> SnapshotResult:
        asked = {c.proc_key: c for c in self.ingest.processes() if c.proc_key is not None}
        started_at_ns = time.time_ns()
        timeout_ms = self.config.snapshot_timeout_ms
        procs = [(k, c.hello.process_name, c.hello.pid) for k, c in asked.items()
                 if c.hello is not None]
        snapshot_id = await self.store.write(lambda conn: begin_snapshot(
            conn, trigger=trigger, requested_at_ns=started_at_ns, processes=procs))
        flight = _InFlight(snapshot_id, started_at_ns, timeout_ms, asked, set(asked))
        self._in_flight = flight
        log.info("snapshot %d (%s): asking %d process(es)", snapshot_id, trigger, len(asked))
        request = {"type": "snapshot_request", "snapshot_id": snapshot_id, "timeout_ms": timeout_ms}
        for proc_key, conn in asked.items():
            if conn.closing or not conn.send(request):
                flight.settle(proc_key, "disconnected", conn.close_reason or "connection closed")
        if flight.pending:
            try:
                await asyncio.wait_for(flight.all_answered.wait(), timeout_ms / 1000)
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                await self._abandon(flight)
                raise
        for proc_key in list(flight.pending):
            flight.settle(proc_key, "timeout", f"no reply within {timeout_ms} ms")
        self._in_flight = None
        for proc_key, job in flight.store_jobs:
            try:
                await job
            except Exception as exc:  # a store failure must not lose the outcome record
                log.error("snapshot %d: storing %s's reply failed: %r", snapshot_id, proc_key, exc)
                flight.outcomes[proc_key] = ("error", f"storing the reply failed: {exc!r:.500}")
        completed_at_ns = time.time_ns()
        outcomes = dict(flight.outcomes)
        counts = await self.store.write(lambda conn: finish_snapshot(
            conn, snapshot_id=snapshot_id, completed_at_ns=completed_at_ns, outcomes=outcomes,
            retain=self.config.retain_snapshots,
            retain_ingest_events=self.config.retain_ingest_events))
        self.last_snapshot_id = snapshot_id
        log.info("snapshot %d: %s (%d requested, %d responded, %d timeout, %d disconnected, "
                 "%d error) in %.0f ms", snapshot_id, counts["status"], counts["requested"],
                 counts["responded"], counts["timeout"], counts["disconnected"], counts["error"],
                 (completed_at_ns - started_at_ns) / 1e6)
        return SnapshotResult(
            snapshot_id=snapshot_id, captured_at_ns=started_at_ns, status=counts["status"],
            requested=counts["requested"], responded=counts["responded"],
            timed_out=counts["timeout"], disconnected=counts["disconnected"],
            errored=counts["error"])

    async def _abandon(self, flight: _InFlight) -> None:
        """Record a snapshot cut short by shutdown as ``incomplete``."""
        self._in_flight = None
        for _proc_key, job in flight.store_jobs:
            with contextlib.suppress(Exception):
                await job
        snapshot_id = flight.snapshot_id

        def record(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE snapshot_processes SET status = 'incomplete', "
                         "error = 'server stopped before this process answered' "
                         "WHERE snapshot_id = ? AND status = 'pending'", (snapshot_id,))
            conn.execute("UPDATE snapshots SET status = 'incomplete', completed_at_ns = ? "
                         "WHERE snapshot_id = ?", (time.time_ns(), snapshot_id))

        with contextlib.suppress(Exception):
            await self.store.write(record)
        log.warning("snapshot %d: interrupted by shutdown, recorded as incomplete", snapshot_id)

    async def _periodic_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.snapshot_interval_s)
            if not self.ingest.processes():
                continue
            try:
                await self.take_snapshot("periodic")
            except Exception:
                log.exception("periodic snapshot failed")
