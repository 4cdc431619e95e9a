"""oneshot-sender-lost: a reply sender is filed under the wrong key; the requester waits forever.

``requester`` makes a oneshot for its reply and files the sender in the
router's pending table under the wrong key (``req-1`` instead of ``req-42``).
``router`` gets the response for ``req-42``, finds no sender, drops the
response and goes back to waiting.  The graph shows: requester
--needs[recv]--> demo.reply(req-42), a oneshot whose sender is alive but held
by no task (``sender_held_by: null``, ``resolvable: false``), and router
--needs[recv]--> demo.responses (idle).

Run:  PEEPS_DASHBOARD=127.0.0.1:9119 python examples/oneshot_sender_lost
or:   scripts/run-example oneshot-sender-lost
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import peeps

PENDING: dict[str, Any] = {}  # request id -> the oneshot sender for its reply


async def requester(responses: asyncio.Queue[tuple[str, Any]]) -> None:
    request_id = "req-42"
    tx, rx = peeps.oneshot(f"demo.reply({request_id})", request_id=request_id)
    PENDING["req-1"] = tx  # the bug: filed under the wrong key
    del tx
    await responses.put((request_id, {"status": 200}))  # the "network" answers at once
    print(f"requester: waiting for the reply to {request_id}", flush=True)
    reply = await rx
    print(f"requester: got {reply} (never printed)", flush=True)


async def router(responses: asyncio.Queue[tuple[str, Any]]) -> None:
    while True:
        request_id, body = await responses.get()
        sender = PENDING.pop(request_id, None)
        if sender is None:
            print(f"router: no pending request {request_id!r}; dropping {body}", flush=True)
            continue
        sender.send(body)


async def main() -> None:
    peeps.init("oneshot-sender-lost")
    responses: asyncio.Queue[tuple[str, Any]] = peeps.channel("demo.responses")
    route = peeps.tasks.spawn_tracked("router", router(responses))
    request = peeps.tasks.spawn_tracked("requester", requester(responses))
    print("oneshot-sender-lost: running (Ctrl+C to stop)", flush=True)
    await asyncio.gather(route, request)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
