"""Thread entities: one per live thread ident, named after its Thread, kept
through the thread's start and end and replaced when a new thread reuses the
ident (pthread idents are reused at once)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import peeps
from peeps import _lockdep, _threads


def test_a_thread_between_its_start_and_threading_active_is_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``Thread._bootstrap_inner`` wakes ``start()`` before it enters
    ``threading._active``; an entity made in between gets the Thread from
    ``threading._limbo`` (else it had no name and no report for good: the
    collector's thread node once lost its ``collector`` attrs that way)."""
    starting = threading.Thread(target=lambda: None, name="t.starting")
    fake_ident = 0x5EED_1DE7
    monkeypatch.setattr(starting, "_ident", fake_ident)
    monkeypatch.setitem(threading._limbo, starting, starting)  # type: ignore[attr-defined]
    assert _threads._active_thread(fake_ident) is starting
    entity = _threads.entity_for_ident(fake_ident)
    try:
        assert entity is not None and entity.thread() is starting
        assert entity.name == "t.starting"
    finally:
        if entity is not None:
            _threads._forget(entity)


def test_an_ending_thread_keeps_its_entity_and_its_ident_reused_gets_a_new_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After ``Thread._delete`` the ending thread is in neither ``_active`` nor
    ``_limbo``; the sampler still sees its frames.  Its entity stays (a nameless
    one made then would be inherited by the next thread with that ident, as the
    collector's once was), and a new Thread with the ident gets a new entity."""
    release = threading.Event()
    ending = threading.Thread(target=release.wait, name="t.ending", daemon=True)
    ending.start()
    sampler = _threads.Sampler(mode="thread", hz=100, window_s=1.0)
    entities: list[_threads.ThreadEntity] = []
    try:
        ident = ending.ident
        assert ident is not None
        entity = _threads.entity_for_ident(ident)
        assert entity is not None and entity.thread() is ending
        entities.append(entity)
        monkeypatch.delitem(threading._active, ident)  # type: ignore[attr-defined]
        assert _threads.entity_for_ident(ident) is entity
        sampler._sample_all()
        assert _threads._BY_IDENT.get(ident) is entity and not entity.exited

        # A thread first seen in its last moments gets a nameless entity ...
        _threads._forget(entity)
        sampler._sample_all()
        nameless = _threads._BY_IDENT.get(ident)
        assert nameless is not None and nameless.thread() is None
        entities.append(nameless)
        assert nameless.name == f"thread-{ident}"

        # ... which a new Thread reusing the ident does not inherit.
        reusing = threading.Thread(target=lambda: None, name="t.reusing")
        monkeypatch.setattr(reusing, "_ident", ident)
        monkeypatch.setitem(threading._active, ident, reusing)  # type: ignore[attr-defined]
        fresh = _threads.entity_for_ident(ident)  # the new thread's first call into peeps
        assert fresh is not None and fresh is not nameless and nameless.exited
        entities.append(fresh)
        assert fresh.name == "t.reusing" and fresh.thread() is reusing
        sampler._sample_all()
        assert _threads._BY_IDENT.get(ident) is fresh and not fresh.exited
    finally:
        monkeypatch.undo()  # ``ending`` back in threading._active before it ends
        release.set()
        ending.join(5)
        for made in entities:
            _threads._forget(made)


def test_a_loop_driven_tick_does_not_record_its_thread_into_a_stale_entity() -> None:
    """A nameless entity left for the loop thread's ident (a thread that ended
    before one reusing its ident started) is replaced at the loop's own tick."""
    ident = threading.get_ident()
    real = _threads._BY_IDENT.get(ident)
    stale = _threads.ThreadEntity(ident, None, 64)
    _threads._BY_IDENT[ident] = stale
    recorded: list[_threads.ThreadEntity | None] = []

    async def tick() -> None:  # runs under BaseEventLoop._run_once, as a loop-driven tick
        _threads._record_running_loop(ident, time.monotonic_ns(), time.thread_time_ns())
        recorded.append(_threads._BY_IDENT.get(ident))

    try:
        asyncio.run(tick())
        [entity] = recorded
        assert entity is not None and entity is not stale and stale.exited
        assert entity.thread() is threading.current_thread()
        assert entity.last_sample is not None  # the loop's sample went to it
        assert stale.last_sample is None
    finally:
        for made in {stale, *recorded} - {real, None}:
            assert made is not None
            _threads._forget(made)
        if real is not None and not real.exited:
            _threads._BY_IDENT[ident] = real


def test_forgetting_an_entity_drops_the_lock_chain_of_an_ended_thread_only() -> None:
    """A thread's held-lock chain lives in its ``threading.local`` and, for the
    sampler that times holds, in ``CHAINS``.  Replacing the entity of a thread
    that runs (a reused ident) must leave its chain in ``CHAINS``, or its holds
    go untimed for good; an ended thread's chain goes with its entity."""
    lock = peeps.ThreadLock("t.entities.chain")
    ident = threading.get_ident()
    with lock:
        chain = _lockdep.chain_here()
    assert _lockdep.CHAINS.get(ident) is chain
    entity = _threads.entity_for_ident(ident)
    assert entity is not None
    _threads._forget(entity)
    assert _lockdep.CHAINS.get(ident) is chain

    ended: list[_threads.ThreadEntity | None] = []

    def take_and_end() -> None:
        with lock:
            ended.append(_threads.current_thread_entity())

    thread = threading.Thread(target=take_and_end)
    thread.start()
    thread.join(5)
    [gone] = ended
    assert gone is not None and thread.ident is not None
    assert thread.ident in _lockdep.CHAINS
    _threads._forget(gone)
    assert thread.ident not in _lockdep.CHAINS
