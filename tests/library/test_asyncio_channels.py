"""Channels under real waits: join accounting, closing, oneshot and watch."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from typing import Any

import pytest

import peeps
from graph_support import edges, node, settle
from peeps._tasks import entity_for_task


def task_id(task: asyncio.Task[Any]) -> str:
    entity = entity_for_task(task)
    assert entity is not None
    return entity.id


def test_join_blocked_needs_channel_with_unfinished_tasks() -> None:
    async def scenario() -> None:
        jobs: Any = peeps.channel("test.jobs")
        for i in range(3):
            jobs.put_nowait(i)
        for _ in range(3):
            await jobs.get()
        jobs.task_done()  # one of three finished
        joiner = peeps.tasks.spawn_tracked("joiner", jobs.join())
        await settle()
        g = peeps.collect_graph()
        (needs,) = edges(g, "needs", dst=jobs._peeps_id)
        assert needs["src"] == task_id(joiner)
        assert needs["attrs"]["op"] == "join" and needs["attrs"]["unfinished_tasks"] == 2
        attrs = node(g, jobs._peeps_id)["attrs"]
        assert attrs["unfinished_tasks"] == 2 and attrs["tasks_done"] == 1
        assert attrs["blocked_joiners"] == 1 and attrs["depth"] == 0
        assert any(e["name"] == "channel.join.blocked" for e in g["events"])
        jobs.task_done()
        jobs.task_done()
        await asyncio.wait_for(joiner, 1)
        assert not edges(peeps.collect_graph(), "needs", dst=jobs._peeps_id)
        await jobs.join()  # nothing unfinished: returns at once

    asyncio.run(scenario())


def test_blocked_send_and_recv_edges_vanish_when_unblocked() -> None:
    async def scenario() -> None:
        ch: Any = peeps.channel("test.bounded", 1)
        await ch.send("a")
        sender = peeps.tasks.spawn_tracked("sender", ch.send("b"))
        await settle()
        g = peeps.collect_graph()
        (needs,) = edges(g, "needs", dst=ch._peeps_id)
        assert needs["src"] == task_id(sender) and needs["attrs"]["op"] == "send"
        assert node(g, ch._peeps_id)["attrs"]["depth"] == 1
        assert await ch.recv() == "a"
        await sender
        assert await ch.recv() == "b"
        receiver = peeps.tasks.spawn_tracked("receiver", ch.recv())
        await settle()
        (needs,) = edges(peeps.collect_graph(), "needs", dst=ch._peeps_id)
        assert needs["src"] == task_id(receiver) and needs["attrs"]["op"] == "recv"
        ch.send_nowait("c")
        assert await receiver == "c"
        assert not edges(peeps.collect_graph(), "needs", dst=ch._peeps_id)
        stats = ch.statistics()
        assert stats.sent == 3 and stats.received == 3

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["asyncio.Queue", "peeps.channel"])
def test_waiting_receivers_cancelled_like_asyncio_queue(kind: str) -> None:
    """The channel's inlined wait keeps the stdlib's hand-offs: a cancelled
    waiting receiver leaves no getter behind, and one woken for an item but
    cancelled before it ran passes the item to the next receiver."""

    async def scenario() -> None:
        ch: Any = asyncio.Queue() if kind == "asyncio.Queue" else peeps.channel("test.handoff")
        first = asyncio.create_task(ch.get())
        second = asyncio.create_task(ch.get())
        await settle()
        gone = asyncio.create_task(ch.get())
        await settle()
        gone.cancel()  # waiting, never woken
        await asyncio.gather(gone, return_exceptions=True)
        assert gone.cancelled() and len(ch._getters) == 2
        ch.put_nowait("item")  # wakes first ...
        first.cancel()  # ... which is cancelled before it runs: second gets it
        assert await asyncio.wait_for(second, 1) == "item"
        assert first.cancelled() and ch.empty() and not ch._getters
        if kind == "peeps.channel":
            assert not edges(peeps.collect_graph(), "needs", dst=ch._peeps_id)
            assert ch.statistics().received == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["asyncio.Queue", "peeps.channel"])
def test_blocked_senders_cancelled_like_asyncio_queue(kind: str) -> None:
    """The send side of the same: a cancelled blocked sender leaves no putter
    and puts nothing; one woken for a slot but cancelled before it ran passes
    the slot to the next sender."""

    async def scenario() -> None:
        ch: Any = (asyncio.Queue(1) if kind == "asyncio.Queue"
                   else peeps.channel("test.handoff", capacity=1))
        ch.put_nowait("held")
        first = asyncio.create_task(ch.put("first"))
        second = asyncio.create_task(ch.put("second"))
        await settle()
        gone = asyncio.create_task(ch.put("gone"))
        await settle()
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        assert gone.cancelled() and len(ch._putters) == 2
        assert ch.get_nowait() == "held"  # wakes first ...
        first.cancel()  # ... which is cancelled before it runs: second puts
        await asyncio.wait_for(second, 1)
        assert first.cancelled() and not ch._putters
        assert ch.get_nowait() == "second" and ch.empty()
        if kind == "peeps.channel":
            g = peeps.collect_graph()
            assert not edges(g, "needs", dst=ch._peeps_id)
            names = [e["name"] for e in g["events"]]
            assert "channel.send.blocked" in names

    asyncio.run(scenario())


def test_close_fails_blocked_senders_and_clears_their_edges() -> None:
    async def scenario() -> None:
        ch: Any = peeps.channel("test.closing.full", 1)
        ch.send_nowait(0)
        sender = peeps.tasks.spawn_tracked("sender", ch.send(1))
        await settle()
        assert edges(peeps.collect_graph(), "needs", dst=ch._peeps_id)
        ch.close("shutting down")
        with pytest.raises(peeps.ChannelClosed):
            await asyncio.wait_for(sender, 1)
        assert not edges(peeps.collect_graph(), "needs", dst=ch._peeps_id)
        assert await ch.recv() == 0  # what was sent before the close drains
        with pytest.raises(peeps.ChannelClosed):
            await asyncio.wait_for(ch.recv(), 1)

    asyncio.run(scenario())


def test_close_wakes_receivers_and_records_cause() -> None:
    async def scenario() -> None:
        ch: Any = peeps.channel("test.closing", 4)
        receiver = peeps.tasks.spawn_tracked("receiver", ch.recv())
        await settle()

        async def closer() -> None:
            ch.close("upstream finished")

        c = peeps.tasks.spawn_tracked("closer", closer())
        await c
        with pytest.raises(peeps.ChannelClosed):
            await asyncio.wait_for(receiver, 1)
        with pytest.raises(peeps.ChannelClosed):
            await ch.send(1)
        g = peeps.collect_graph()
        attrs = node(g, ch._peeps_id)["attrs"]
        assert attrs["closed"] is True
        assert attrs["close_cause"] == "upstream finished"
        assert attrs["closed_by"] == task_id(c)
        assert any(e["name"] == "channel.closed" and e["attrs"]["cause"] == "upstream finished"
                   for e in g["events"])
        assert not edges(g, "needs", dst=ch._peeps_id)

    asyncio.run(scenario())


def test_close_lets_receivers_drain_first() -> None:
    async def scenario() -> None:
        ch: Any = peeps.channel("test.drain")
        ch.send_nowait(1)
        ch.close()
        assert await ch.recv() == 1
        with pytest.raises(peeps.ChannelClosed):
            await ch.recv()

    asyncio.run(scenario())


@pytest.mark.skipif(sys.version_info < (3, 13), reason="Queue.shutdown is 3.13+")
def test_shutdown_is_recorded_as_close() -> None:
    async def scenario() -> None:
        ch: Any = peeps.channel("test.shutdown")
        ch.shutdown(immediate=True)
        attrs = node(peeps.collect_graph(), ch._peeps_id)["attrs"]
        assert attrs["closed"] is True and attrs["close_cause"] == "shutdown(immediate=True)"

    asyncio.run(scenario())


def test_channel_garbage_collected_leaves_graph() -> None:
    async def scenario() -> None:
        ch: Any = peeps.channel("test.gc", 2)
        ref, ch_id = weakref.ref(ch), ch._peeps_id
        assert ch_id in {n["id"] for n in peeps.collect_graph()["nodes"]}
        del ch
        gc.collect()
        assert ref() is None
        assert ch_id not in {n["id"] for n in peeps.collect_graph()["nodes"]}

    asyncio.run(scenario())


def test_oneshot_delivers_once() -> None:
    async def scenario() -> None:
        tx, rx = peeps.oneshot("test.reply")
        receiver = peeps.tasks.spawn_tracked("receiver", rx.recv())
        await settle()
        core = rx._core
        g = peeps.collect_graph()
        (needs,) = edges(g, "needs", dst=core._peeps_id)
        assert needs["src"] == task_id(receiver) and needs["attrs"]["op"] == "recv"
        attrs = node(g, core._peeps_id)["attrs"]
        assert attrs["state"] == "pending" and attrs["sender_alive"] is True
        assert tx.send(42) is True
        assert tx.send(43) is False
        assert await receiver == 42
        g = peeps.collect_graph()
        assert not edges(g, "needs", dst=core._peeps_id)
        assert node(g, core._peeps_id)["attrs"]["state"] == "received"

    asyncio.run(scenario())


def test_oneshot_sender_held_by_a_task_is_resolvable() -> None:
    async def scenario() -> None:
        tx, rx = peeps.oneshot("test.held")
        gate = asyncio.Event()

        async def responder(sender: Any) -> None:
            await gate.wait()
            sender.send("done")

        resp = peeps.tasks.spawn_tracked("responder", responder(tx))
        del tx
        receiver = peeps.tasks.spawn_tracked("receiver", rx.recv())
        await settle()
        attrs = node(peeps.collect_graph(), rx._core._peeps_id)["attrs"]
        assert attrs["sender_held_by"] == [task_id(resp)]
        assert attrs["resolvable"] is True
        gate.set()
        assert await receiver == "done"
        await resp

    asyncio.run(scenario())


def test_oneshot_sender_parked_in_a_dict_is_not_resolvable() -> None:
    async def scenario() -> None:
        pending: dict[str, Any] = {}
        tx, rx = peeps.oneshot("test.lost")
        pending["wrong-key"] = tx
        del tx
        receiver = peeps.tasks.spawn_tracked("receiver", rx.recv())
        await settle()
        attrs = node(peeps.collect_graph(), rx._core._peeps_id)["attrs"]
        assert attrs["sender_alive"] is True
        assert attrs["sender_held_by"] is None
        assert attrs["resolvable"] is False
        assert attrs["receiver_waiting"] is True
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)

    asyncio.run(scenario())


def test_oneshot_sender_dropped_closes_it() -> None:
    async def scenario() -> None:
        tx, rx = peeps.oneshot("test.dropped")

        async def forgetful(sender: Any) -> None:
            await asyncio.sleep(0)
            # returns without sending: the sender dies with this frame

        receiver = peeps.tasks.spawn_tracked("receiver", rx.recv())
        f = peeps.tasks.spawn_tracked("forgetful", forgetful(tx))
        del tx
        await f
        gc.collect()
        with pytest.raises(peeps.OneshotClosed, match="sender_dropped"):
            await asyncio.wait_for(receiver, 1)
        g = peeps.collect_graph()
        core_id = rx._core._peeps_id
        attrs = node(g, core_id)["attrs"]
        assert attrs["state"] == "closed" and attrs["close_cause"] == "sender_dropped"
        assert attrs["resolvable"] is False and attrs["sender_alive"] is False
        (closed_by,) = edges(g, "closed_by", src=core_id)
        assert closed_by["dst"] == task_id(f)

    asyncio.run(scenario())


def test_oneshot_leaves_graph_when_both_halves_are_gone() -> None:
    async def scenario() -> None:
        tx, rx = peeps.oneshot("test.gone")
        core_id = rx._core._peeps_id
        tx.send(1)
        assert await rx == 1
        del tx, rx
        gc.collect()
        assert core_id not in {n["id"] for n in peeps.collect_graph()["nodes"]}

    asyncio.run(scenario())


def test_watch_latest_value_and_waiters() -> None:
    async def scenario() -> None:
        w = peeps.watch("v0", name="test.watch")
        rx = w.subscribe()
        assert rx.borrow() == "v0"
        waiter = peeps.tasks.spawn_tracked("watcher", rx.changed())
        await settle()
        g = peeps.collect_graph()
        (needs,) = edges(g, "needs", dst=w._peeps_id)
        assert needs["src"] == task_id(waiter) and needs["attrs"]["op"] == "changed"
        w.send("v1")
        w.send("v2")  # a watch keeps only the latest
        assert await waiter == "v2"
        g = peeps.collect_graph()
        assert not edges(g, "needs", dst=w._peeps_id)
        attrs = node(g, w._peeps_id)["attrs"]
        assert attrs["version"] == 2 and attrs["receivers"] == 1
        w.close()
        with pytest.raises(peeps.ChannelClosed):
            await rx.changed()

    asyncio.run(scenario())
