"""Two threads take two plain threading locks in opposite orders and deadlock.

No peeps import: run it under ``python -m peeps run`` to see the cycle.
"""

import threading

accounts_lock = threading.Lock()
ledger_lock = threading.Lock()
both_hold_one = threading.Barrier(2)


def transfer(first: threading.Lock, second: threading.Lock) -> None:
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
both_hold_one_done = threading.Event()
print("thread-deadlock: stuck", flush=True)
both_hold_one_done.wait()
