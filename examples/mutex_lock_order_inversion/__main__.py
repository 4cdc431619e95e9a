"""mutex-lock-order-inversion: two threads take two locks in opposite orders and deadlock.

``worker_left_first`` takes ``demo.shared.left`` then ``demo.shared.right``;
``worker_right_first`` takes them the other way round.  A barrier makes both
take their first lock before either asks for its second, so they deadlock every
time.  The graph shows the wait-for cycle

    thread worker_left_first --needs--> demo.shared.right --held by--> worker_right_first
    thread worker_right_first --needs--> demo.shared.left --held by--> worker_left_first

and a ``lockdep`` node reports the inversion with both acquisition sites
(``lock.order.inversion`` event), raised just before the second thread blocks.

Run:  PEEPS_DASHBOARD=127.0.0.1:9119 python examples/mutex_lock_order_inversion
or:   scripts/run-example mutex-lock-order-inversion
"""

from __future__ import annotations

import contextlib
import threading
import time

import peeps

both_hold_one = threading.Barrier(2)


def worker_left_first(left: peeps.ThreadLock, right: peeps.ThreadLock) -> None:
    with left:
        both_hold_one.wait()
        with right:  # deadlock: worker_right_first holds right and wants left
            print("worker_left_first: got both (not expected)", flush=True)


def worker_right_first(left: peeps.ThreadLock, right: peeps.ThreadLock) -> None:
    with right:
        both_hold_one.wait()
        time.sleep(0.05)  # let worker_left_first block first: the order is deterministic
        with left:  # lock-order inversion: right -> left here, left -> right above
            print("worker_right_first: got both (not expected)", flush=True)


def main() -> None:
    peeps.init("mutex-lock-order-inversion")
    left = peeps.ThreadLock("demo.shared.left")
    right = peeps.ThreadLock("demo.shared.right")
    workers = [
        threading.Thread(target=worker_left_first, args=(left, right),
                         name="worker_left_first", daemon=True),
        threading.Thread(target=worker_right_first, args=(left, right),
                         name="worker_right_first", daemon=True),
    ]
    for worker in workers:
        worker.start()
    print("mutex-lock-order-inversion: running (Ctrl+C to stop)", flush=True)
    try:
        for worker in workers:
            worker.join()  # never returns: the workers are deadlocked (Ctrl+C ends it)
    finally:
        peeps.shutdown()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
