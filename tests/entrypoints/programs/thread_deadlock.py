"""Two threads take two locks in opposite orders and deadlock.

``peeps.patch()`` covers asyncio primitives only, so the locks are
``peeps.ThreadLock`` (a drop-in ``threading.Lock``); nothing else in the
program knows about peeps.  Run it under ``python -m peeps run``.
"""

import threading

import peeps

accounts_lock = peeps.ThreadLock("accounts_lock")
ledger_lock = peeps.ThreadLock("ledger_lock")
both_hold_one = threading.Barrier(2)


def transfer(first: peeps.ThreadLock, second: peeps.ThreadLock) -> None:
    with first:
        both_hold_one.wait()
        with second:
            print(f"{threading.current_thread().name}: done", flush=True)


debit = threading.Thread(target=transfer, args=(accounts_lock, ledger_lock), name="debit",
                         daemon=True)
credit = threading.Thread(target=transfer, args=(ledger_lock, accounts_lock), name="credit",
                          daemon=True)
debit.start()
credit.start()
print("thread-deadlock: stuck", flush=True)
threading.Event().wait()
