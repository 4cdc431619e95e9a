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


@pytest.mark.parametrize("redaction", ["default", "none"])
def test_attributes_json_cannot_take_cost_their_entity_not_the_snapshot(
        redaction: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Task meta comes from the host program.  A dict that contains itself, or
    a tuple used as a key, must neither raise out of ``collect_graph`` nor stop
    the reply from encoding (the collector would then fail every snapshot)."""
    from peeps import _redact

    if redaction == "none":  # no scrub pass at all: the encoder alone must cope
        monkeypatch.setattr(_redact, "REDACTOR", _redact.Redactor(()))
    looped: dict[str, object] = {"name": "cfg"}
    looped["self"] = looped

    async def build() -> dict[str, object]:
        gate = asyncio.Event()
        tasks = [peeps.tasks.spawn_tracked("enc.looped", gate.wait(), cfg=looped),
                 peeps.tasks.spawn_tracked("enc.tuple_key", gate.wait(), cfg={(1, 2): "x"}),
                 peeps.tasks.spawn_tracked("enc.fine", gate.wait(), shard=3)]
        await asyncio.sleep(0)
        graph = peeps.collect_graph()
        gate.set()
        await asyncio.gather(*tasks)
        return {"type": "graph_reply", "snapshot_id": 1, "process": "p", "pid": 1,
                "graph": graph}

    message = asyncio.run(build())
    monkeypatch.setattr(_reply_encoder, "_warned_unencodable", False)
    decoded = decode_body(bytes(encode_reply_frame(message))[4:])
    encode_reply_frame(message)  # again: the warning is given once
    warnings = [r.getMessage() for r in caplog.records if "encoded as JSON" in r.getMessage()]
    assert len(warnings) == 1 and "peeps_error" in warnings[0], warnings
    by_label = {n["label"]: n for n in decoded["graph"]["nodes"]}
    assert by_label["enc.fine"]["attrs"]["meta"]["shard"] == 3
    assert "not encodable" in by_label["enc.tuple_key"]["attrs"]["peeps_error"]
    looped_attrs = by_label["enc.looped"]["attrs"]
    if redaction == "none":
        assert "Circular reference" in looped_attrs["peeps_error"]
    else:  # the redaction pass stops at MAX_DEPTH (attrs 0, meta 1, cfg 2, ...)
        cfg = looped_attrs["meta"]["cfg"]
        for _ in range(_redact.MAX_DEPTH - 2):
            assert cfg["name"] == "cfg"
            cfg = cfg["self"]
        assert cfg["self"] == _redact.TOO_DEEP


def test_items_encoded_once_are_written_as_they_are_among_the_others() -> None:
    """A finished task's node and edge are encoded once (``Encoded``) and then
    written as they are, wherever they fall in a slice: the frame is the same
    bytes as encoding every item afresh, and an item JSON cannot take next to
    them costs only itself."""
    from peeps._reply_encoder import Encoded

    def item(i: int) -> dict[str, object]:
        return {"id": f"n{i}", "kind": "task", "attrs": {"i": i, "s": "é"}}

    nodes: list[dict[str, object]] = []
    for i in range(3 * SLICE + 5):  # runs of both kinds, at the ends of slices too
        encoded = Encoded.of(item(i)) if (i % 7 in (0, 1, 2) or i % SLICE == SLICE - 1) else None
        nodes.append(encoded if encoded is not None else item(i))
    assert {type(n) for n in nodes} == {dict, Encoded}
    assert type(nodes[0]) is Encoded and type(nodes[SLICE - 1]) is Encoded
    message = {"type": "graph_reply", "graph": {"nodes": nodes, "edges": []}}
    assert encode_reply_frame(message) == encode_frame(message)

    assert Encoded.of({"id": "bad", "attrs": {(1, 2): "x"}}) is None
    mixed = [Encoded.of(item(0)), {"id": "bad", "attrs": {(1, 2): "x"}}, Encoded.of(item(1))]
    sent = decode_body(bytes(encode_reply_frame({"type": "x", "nodes": mixed}))[4:])["nodes"]
    assert [n["id"] for n in sent] == ["n0", "bad", "n1"]
    assert "not encodable" in sent[1]["attrs"]["peeps_error"]
    assert sent[0] == item(0) and sent[2] == item(1)
    # An item with no attrs to replace is left out: no empty element either.
    lost = [Encoded.of(item(0)), {(1, 2): "x"}, Encoded.of(item(1))]
    sent = decode_body(bytes(encode_reply_frame({"type": "x", "nodes": lost}))[4:])["nodes"]
    assert sent == [item(0), item(1)]
