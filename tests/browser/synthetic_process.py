"""A synthetic instrumented process: speaks the real wire protocol to peeps-web
and answers every snapshot request with a large, realistic-looking graph.

Used by the browser tests and ``bench/bench_ui.py`` to put a 2,000-node
snapshot through the real server and the real UI without writing a program
that really has 2,000 entities.  It is a plain TCP client (4-byte big-endian
length + JSON frames, ``peeps.types._wire``) — nothing in it talks to the
server any other way.

    python tests/browser/synthetic_process.py --dashboard 127.0.0.1:9119 --nodes 2000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import sys
import time
from typing import Any

HEADER = struct.Struct(">I")
PROTOCOL_VERSION = 1


def build_graph(n_nodes: int, pid: int, *, threads: int = 3, seed: int = 7) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Worker groups (a group task spawning tasks that share a channel, a lock
    and a semaphore) until ``n_nodes`` nodes exist.  Deterministic for a seed;
    durations are relative so the caller adds the capture time."""
    rnd = random.Random(seed)
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    counter = 0
    src = "/srv/app/worker/pipeline.py"

    def node(kind: str, label: str, **attrs: Any) -> str:
        nonlocal counter
        counter += 1
        nid = f"{kind}:{pid}:{counter}"
        line = rnd.randint(20, 900)
        attrs.setdefault("meta", {"ctx.location": f"{src}:{line}"})
        attrs.setdefault("age_ns", rnd.randint(1, 600) * 10**9)
        nodes.append({"id": nid, "kind": kind, "label": label, "attrs": attrs})
        return nid

    def edge(src_id: str, dst_id: str, kind: str, **attrs: Any) -> None:
        edges.append({"src": src_id, "dst": dst_id, "kind": kind, "attrs": attrs})

    def stack(func: str) -> list[str]:
        return [
            f"/srv/app/main.py:{rnd.randint(10, 80)} in main",
            f"{src}:{rnd.randint(100, 400)} in run_group",
            f"{src}:{rnd.randint(400, 900)} in {func}",
        ]

    main = node("task", "main", state="pending", coro="main", stack=stack("main"))
    for t in range(threads):
        node("thread", f"worker-thread-{t}", verdict=("blocked", "spinning", "idle")[t % 3],
             cpu_share=(0.0, 0.97, 0.01)[t % 3], samples=50,
             verdict_ns=(12 * 10**9, 3 * 10**9, None)[t % 3],
             dominant_frames=[{"frame": f"{src}:{200 + t} in poll", "share": 0.8},
                              {"frame": f"{src}:{300 + t} in handle", "share": 0.2}])
    g = 0
    while len(nodes) < n_nodes:
        g += 1
        group = node("group", f"workers[{g}]")
        edge(main, group, "spawned")
        cap = 32
        full = g % 7 == 0
        depth = cap if full else rnd.randint(0, cap - 1)
        chan = node("channel", f"pipeline.stage{g}.queue", capacity=cap, depth=depth,
                    sent=depth + 100, received=100, blocked_senders=2 if full else 0,
                    blocked_receivers=0, closed=False)
        lock = node("lock", f"stage{g}.state_lock", locked=True, waiters=2)
        sem = node("semaphore", f"stage{g}.db_pool", permits_total=4,
                   permits_available=0 if g % 5 == 0 else 2, bounded=True)
        req = node("request", f"GET /stage/{g}", method="GET", state="in_flight")
        resp = node("response", f"response to GET /stage/{g}", state="pending",
                    ghost=g % 11 == 0)
        edge(req, resp, "needs", op="await", waited_ns=rnd.randint(1, 30) * 10**8)
        tasks = []
        roles = []
        # Groups differ in size and in what their tasks wait on, like a real
        # service's worker pools do.
        for t in range(rnd.randint(4, 12)):
            task = node("task", f"stage{g}.worker{t}", state="pending",
                        coro=f"worker{t}", tracked=True, source="spawn_tracked",
                        stack=stack(f"worker{t}"), steps=rnd.randint(1, 500),
                        busy_ns=rnd.randint(1, 900) * 10**6,
                        longest_step_ns=rnd.randint(1, 90) * 10**6)
            tasks.append(task)
            edge(group, task, "spawned")
            waited = rnd.randint(1, 120) * 10**8
            role = 0 if t == 0 else rnd.randrange(6)
            roles.append(role)
            if role == 0:
                edge(task, chan, "needs", op="send" if full else "recv", waited_ns=waited)
            elif role == 1:
                edge(task, lock, "needs", op="acquire", waited_ns=waited)
            elif role == 2:
                edge(task, sem, "needs", op="acquire", waited_ns=waited)
            elif role == 3:
                sl = node("sleep", f"stage{g}.backoff", duration_ns=5 * 10**9,
                          remaining_ns=rnd.randint(1, 5) * 10**9)
                edge(task, sl, "needs", op="sleep", waited_ns=waited)
            elif role == 4:
                edge(task, req, "needs", op="await", waited_ns=waited)
            else:
                fut = node("future", f"future in worker{t}", type="Future")
                edge(task, fut, "needs", op="await", waited_ns=waited)
            if rnd.random() < 0.25:
                edge(task, chan, "touches")
        # The lock and the semaphore are held by tasks that wait on something
        # else (a holder waiting on its own lock would be a deadlock suspect).
        lock_holder = next((tk for tk, r in zip(tasks, roles, strict=True) if r != 1), None)
        if lock_holder:
            edge(lock_holder, lock, "holds", held_ns=rnd.randint(1, 90) * 10**9)
        sem_holder = next((tk for tk, r in zip(reversed(tasks), reversed(roles), strict=True) if r != 2), None)
        if sem_holder:
            edge(sem_holder, sem, "holds", held_ns=rnd.randint(1, 9) * 10**9)
        if g % 9 == 0:
            edge(tasks[-1], group, "closed_by")
        events.append({"id": len(events) + 1, "ts_ns": 0, "entity_id": chan,
                       "name": "channel.send.blocked" if full else "channel.recv.ok",
                       "parent_entity_id": tasks[0], "attrs": {"depth": depth}})
    # Trim overshoot from the last group (and edges that pointed at it).
    keep = {n["id"] for n in nodes[:n_nodes]}
    nodes = nodes[:n_nodes]
    edges = [e for e in edges if e["src"] in keep and e["dst"] in keep]
    events = [e for e in events if e["entity_id"] in keep and e["parent_entity_id"] in keep]
    return nodes, edges, events


def build_fan_in(n_nodes: int, pid: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The worst case for a layered layout: every task waits on one lock."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    loc = {"meta": {"ctx.location": "/srv/app/pool.py:42"}, "age_ns": 30 * 10**9}
    nodes.append({"id": f"task:{pid}:1", "kind": "task", "label": "main",
                  "attrs": {**loc, "state": "pending"}})
    nodes.append({"id": f"lock:{pid}:2", "kind": "lock", "label": "pool.lock",
                  "attrs": {**loc, "locked": True, "waiters": n_nodes - 3}})
    nodes.append({"id": f"task:{pid}:3", "kind": "task", "label": "fanin.holder",
                  "attrs": {**loc, "state": "pending"}})
    edges.append({"src": f"task:{pid}:3", "dst": f"lock:{pid}:2", "kind": "holds",
                  "attrs": {"held_ns": 30 * 10**9}})
    for i in range(4, n_nodes + 1):
        tid = f"task:{pid}:{i}"
        nodes.append({"id": tid, "kind": "task", "label": f"fanin.worker{i}",
                      "attrs": {**loc, "state": "pending",
                                "stack": [f"/srv/app/pool.py:{100 + i % 7} in work"]}})
        edges.append({"src": f"task:{pid}:1", "dst": tid, "kind": "spawned", "attrs": {}})
        edges.append({"src": tid, "dst": f"lock:{pid}:2", "kind": "needs",
                      "attrs": {"op": "acquire", "waited_ns": 20 * 10**9}})
    return nodes, edges, []


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    sock.sendall(HEADER.pack(len(body)) + body)


def recv(sock: socket.socket) -> dict[str, Any] | None:
    header = _read_exact(sock, HEADER.size)
    if header is None:
        return None
    (length,) = HEADER.unpack(header)
    body = _read_exact(sock, length)
    if body is None:
        return None
    message: dict[str, Any] = json.loads(body)
    return message


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboard", default=os.environ.get("PEEPS_DASHBOARD", "127.0.0.1:9119"))
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--name", default="synthetic")
    parser.add_argument("--threads", type=int, default=3, help="thread nodes to include")
    parser.add_argument("--shape", choices=("groups", "fan-in"), default="groups",
                        help="worker groups (default) or every task waiting on one lock")
    parser.add_argument("--mute", action="store_true",
                        help="say hello, then never answer (the server records a timeout)")
    args = parser.parse_args()
    host, _, port = args.dashboard.rpartition(":")
    pid = os.getpid()
    proc_key = f"{args.name}-{pid}"
    if args.shape == "fan-in":
        nodes, edges, events = build_fan_in(args.nodes, pid)
    else:
        nodes, edges, events = build_graph(args.nodes, pid, threads=args.threads)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.settimeout(None)
    send(sock, {"type": "hello", "protocol_version": PROTOCOL_VERSION, "process_name": args.name,
                "pid": pid, "proc_key": proc_key, "peeps_version": "synthetic"})
    print(f"synthetic: connected as {proc_key} with {len(nodes)} nodes, {len(edges)} edges",
          flush=True)
    while True:
        message = recv(sock)
        if message is None:
            return 0
        if message.get("type") != "snapshot_request":
            print(f"synthetic: server said {message}", file=sys.stderr, flush=True)
            return 1
        if args.mute:
            continue
        now = time.time_ns()
        for ev in events:
            ev["ts_ns"] = now - 2 * 10**9
            ev["proc_key"] = proc_key
        send(sock, {"type": "graph_reply", "snapshot_id": message["snapshot_id"],
                    "process": args.name, "pid": pid,
                    "graph": {"process_name": args.name, "proc_key": proc_key, "pid": pid,
                              "captured_at_ns": now, "nodes": nodes, "edges": edges,
                              "events": events}})


if __name__ == "__main__":
    sys.exit(main())
