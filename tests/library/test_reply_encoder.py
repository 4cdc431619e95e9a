"""The collector's low-stall reply encoder against the simple reference path
(``encode_frame``): same bytes, same cap, GC state restored."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

import peeps
from peeps import _reply_encoder
from peeps._reply_encoder import SLICE, encode_reply_frame, gc_paused, release_in_slices
from peeps.types import FrameError, decode_body, encode_frame


def _messages() -> list[dict[str, object]]:
    async def build() -> dict[str, object]:
        async def waiter(ch: asyncio.Queue[int]) -> None:
            await ch.get()

        chans = [peeps.channel(f"c{i}", capacity=1) for i in range(3 * SLICE + 7)]
        tasks = [peeps.tasks.spawn_tracked(f"t{i}", waiter(c)) for i, c in enumerate(chans)]
        await asyncio.sleep(0)
        graph = peeps.collect_graph()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return {"type": "graph_reply", "snapshot_id": 7, "process": "p", "pid": 1,
                "graph": graph}

    odd = {"type": "x", "a": list(range(SLICE * 2)), "b": {"c": [{"d": object()}] * (SLICE + 1),
                                                          1: 2},
           "e": [], "f": [[1, "é\u2028"]] * (SLICE + 1), "g": [None] * SLICE, "h": 1.5}
    return [asyncio.run(build()), odd]


@pytest.mark.parametrize("message", _messages())
def test_same_bytes_as_encode_frame(message: dict[str, object]) -> None:
    assert encode_reply_frame(message) == encode_frame(message)
    decode_body(encode_reply_frame(message)[4:])


def test_frame_cap_is_enforced() -> None:
    message = {"type": "x", "a": ["y" * 100] * (SLICE * 3)}
    with pytest.raises(FrameError):
        encode_reply_frame(message, max_frame_bytes=1000)


def test_gc_paused_restores_state() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: left off
    finally:
        gc.enable()


def test_release_in_slices_empties_lists() -> None:
    graph = {"nodes": [{"id": i} for i in range(SLICE * 3 + 1)], "edges": [1], "events": None}
    release_in_slices(graph)
    assert graph["nodes"] == [] and graph["edges"] == []


def test_hand_offs_are_paced_by_time_not_by_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slice hands the GIL away only once HANDOFF_NS of work were done since
    the last hand-off: a few quick slices make one hand-off, or none."""
    sleeps: list[float] = []
    monkeypatch.setattr(_reply_encoder.time, "sleep", sleeps.append)
    message = {"type": "x", "a": list(range(SLICE * 4))}  # four slices, microseconds of work
    monkeypatch.setattr(_reply_encoder, "_due_ns", time.perf_counter_ns() + 10**10)
    assert encode_reply_frame(message) == encode_frame(message)
    assert sleeps == []  # none due
    monkeypatch.setattr(_reply_encoder, "_due_ns", 0)
    assert encode_reply_frame(message) == encode_frame(message)
    assert sleeps == [0]  # due at the first slice, then not again within HANDOFF_NS
