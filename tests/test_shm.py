"""Shared-memory segments: described in-process, seen from two real processes
and joined by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import peeps
from peeps._config import STATE
from peeps.analysis._crossproc import join_cross_process


def segments(graph: Any) -> list[Any]:
    return [n for n in graph["nodes"] if n["kind"] == "shm_segment"]


def test_created_and_attached_segments_are_nodes_until_collected() -> None:
    seg = peeps.shm(create=True, size=4096, purpose="frames")
    try:
        other = peeps.shared_memory.SharedMemory(seg.name)
        graph = peeps.collect_graph()
        nodes = {n["attrs"]["role"]: n for n in segments(graph) if n["label"] == seg.name}
        creator, attached = nodes["creator"], nodes["attached"]
        assert creator["attrs"]["size"] >= 4096
        assert creator["attrs"]["creator_pid"] == STATE.pid == creator["attrs"]["pid"]
        assert attached["attrs"]["creator_pid"] is None
        assert creator["attrs"]["meta"]["purpose"] == "frames"
        assert creator["attrs"]["meta"]["ctx.location"].split(":")[0].endswith("test_shm.py")
        assert creator["attrs"]["provider"] == "shared_memory"
        other.close()
        attached = next(n for n in segments(peeps.collect_graph())
                        if n["attrs"]["role"] == "attached" and n["label"] == seg.name)
        assert attached["attrs"]["closed"] is True
        del other
    finally:
        seg.close()
        seg.unlink()
    [creator] = [n for n in segments(peeps.collect_graph()) if n["label"] == seg.name]
    assert creator["attrs"]["closed"] and creator["attrs"]["unlinked"]
    name = seg.name
    del seg
    assert not [n for n in segments(peeps.collect_graph()) if n["label"] == name]


def test_disabled_shm_is_the_standard_class() -> None:
    from multiprocessing import shared_memory

    STATE.enabled = False
    try:
        seg = peeps.shm(create=True, size=16)
    finally:
        STATE.enabled = True
    try:
        assert type(seg) is shared_memory.SharedMemory
    finally:
        seg.close()
        seg.unlink()


ATTACHER = textwrap.dedent("""
    import json, sys
    import peeps
    peeps.init("shm-attacher")
    seg = peeps.shm(sys.argv[1], track=False)
    seg.buf[0] = 42
    graph = peeps.collect_graph()
    seg.close()
    print(json.dumps(graph))
""")


def test_a_segment_seen_from_two_processes_is_joined_by_name() -> None:
    seg = peeps.shm(create=True, size=1024)
    try:
        out = subprocess.run([sys.executable, "-c", ATTACHER, seg.name], check=True,
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PEEPS_DASHBOARD=""))
        child = json.loads(out.stdout)
        assert seg.buf[0] == 42
        parent = peeps.collect_graph()
    finally:
        seg.close()
        seg.unlink()
    nodes = [dict(n, proc_key=g["proc_key"]) for g in (parent, child) for n in segments(g)
             if n["label"] == seg.name]
    assert {n["attrs"]["role"] for n in nodes} == {"creator", "attached"}
    joined_nodes, joined_edges = join_cross_process(nodes, [])
    procs = sorted([parent["proc_key"], child["proc_key"]])
    assert all(n["attrs"]["attached_in"] == procs for n in joined_nodes)
    attached = next(n for n in joined_nodes if n["attrs"]["role"] == "attached")
    assert attached["attrs"]["creator_pid"] == os.getpid()
    assert attached["attrs"]["pid"] == child["pid"] != os.getpid()
    [edge] = joined_edges
    assert edge["kind"] == "touches" and edge["attrs"]["cross_process"] is True
