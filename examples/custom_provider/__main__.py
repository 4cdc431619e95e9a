"""custom-provider: a diagnostic provider shows a home-grown license pool that peeps does not instrument.

``LicensePool`` is plain Python (an ``asyncio.Condition`` and a dict) handing out
2 licenses.  ``report_a`` and ``report_b`` check one out each and then stall;
``report_c`` waits for a license that never comes back.  Nothing here is a
peeps primitive, so without help the graph would show three tasks waiting on
anonymous futures.  ``LicensePool.describe`` is registered as a provider: every
snapshot it returns the pool as a ``license_pool`` node plus ``holds`` edges
from the holders and a ``needs`` edge from the waiter:

    report_c --needs[checkout]--> license pool (2/2 in use) <--holds-- report_a, report_b

Run:  PEEPS_DASHBOARD=127.0.0.1:9119 python examples/custom_provider
or:   scripts/run-example custom-provider
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import peeps


class LicensePool:
    """N licenses; ``checkout`` waits when none is free."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._cond = asyncio.Condition()
        # Graph node id of the holder -> (holder name, checked out at, monotonic).
        self.holders: dict[str, tuple[str, float]] = {}
        self.waiters: dict[str, float] = {}

    async def checkout(self, who: str) -> None:
        me = peeps.current_node_id() or who
        async with self._cond:
            self.waiters[me] = time.monotonic()
            try:
                await self._cond.wait_for(lambda: len(self.holders) < self.size)
            finally:
                del self.waiters[me]
            self.holders[me] = (who, time.monotonic())

    async def checkin(self) -> None:
        me = peeps.current_node_id()
        async with self._cond:
            self.holders.pop(me or "", None)
            self._cond.notify()

    def describe(self) -> dict[str, Any]:
        """The provider: called on peeps' worker thread at every snapshot.

        Copy what you read (``dict(...)``): the event loop keeps running while
        this runs.  Return plain JSON values only.
        """
        now = time.monotonic()
        holders = dict(self.holders)
        waiters = dict(self.waiters)
        node = {
            "id": "pool",  # peeps namespaces it: license_pool:{pid}:licenses/pool
            "kind": "license_pool",
            "label": f"{self.name} ({len(holders)}/{self.size} in use)",
            "attrs": {"size": self.size, "in_use": len(holders), "waiting": len(waiters),
                      "holders": sorted(name for name, _ in holders.values())},
        }
        edges = [
            {"src": holder_id, "dst": "pool", "kind": "holds",
             "attrs": {"held_ns": int((now - since) * 1e9)}}
            for holder_id, (_, since) in holders.items()
        ] + [
            {"src": waiter_id, "dst": "pool", "kind": "needs",
             "attrs": {"op": "checkout", "waited_ns": int((now - since) * 1e9)}}
            for waiter_id, since in waiters.items()
        ]
        return {"nodes": [node], "edges": edges}


async def report(pool: LicensePool, name: str, stall: asyncio.Event) -> None:
    await pool.checkout(name)
    print(f"{name}: got a license", flush=True)
    await stall.wait()  # the bug: the report stalls while holding its license
    await pool.checkin()


async def main() -> None:
    peeps.init("custom-provider")
    pool = LicensePool("license pool", size=2)
    peeps.register_provider("licenses", pool.describe, timeout_s=0.5)
    stall = asyncio.Event()
    tasks = [peeps.tasks.spawn_tracked(name, report(pool, name, stall))
             for name in ("report_a", "report_b")]
    await asyncio.sleep(0.05)
    tasks.append(peeps.tasks.spawn_tracked("report_c", report(pool, "report_c", stall)))
    print("custom-provider: running (Ctrl+C to stop)", flush=True)
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
