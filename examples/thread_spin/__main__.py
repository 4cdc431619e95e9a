"""thread-spin: a worker thread busy-waits on a flag nobody sets and burns a core.

``spin_worker`` polls ``ready`` in a tight loop (no sleep, no wait) instead
of waiting on an event; ``idle_worker`` waits properly on a
``threading.Event``.  Within about a second the sampler gives ``spin_worker``
the verdict ``spinning`` (one frame region, ~full CPU) with its loop line as
``dominant_frame``, and ``idle_worker`` the verdict ``blocked`` (same frame,
no CPU) at its ``wait`` call.

Run:  PEEPS_DASHBOARD=127.0.0.1:9119 python examples/thread_spin
or:   scripts/run-example thread-spin
"""

from __future__ import annotations

import contextlib
import threading

import peeps

ready = False
stop = threading.Event()


def spin_worker() -> None:
    spins = 0
    while not ready:  # the bug: busy-waiting instead of waiting on an Event
        spins += 1
        if stop.is_set():
            return


def idle_worker() -> None:
    stop.wait()


def main() -> None:
    peeps.init("thread-spin", sampler="thread", sampler_hz=100)
    workers = [threading.Thread(target=spin_worker, name="spin_worker", daemon=True),
               threading.Thread(target=idle_worker, name="idle_worker", daemon=True)]
    for worker in workers:
        worker.start()
    print("thread-spin: running (Ctrl+C to stop)", flush=True)
    try:
        for worker in workers:
            worker.join()  # spin_worker never finishes: Ctrl+C ends the example
    finally:
        stop.set()
        for worker in workers:
            worker.join(2)
        peeps.shutdown()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
