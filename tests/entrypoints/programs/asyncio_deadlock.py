"""Two tasks take two plain asyncio locks in opposite orders and deadlock.

No peeps import: run it under ``python -m peeps run`` to see the cycle.
"""

import asyncio


async def transfer(name: str, first: asyncio.Lock, second: asyncio.Lock,
                   both_hold_one: asyncio.Barrier) -> None:
    async with first:
        await both_hold_one.wait()
        async with second:
            print(f"{name}: done", flush=True)


async def main() -> None:
    accounts_lock = asyncio.Lock()
    ledger_lock = asyncio.Lock()
    both_hold_one = asyncio.Barrier(2)
    first = asyncio.create_task(transfer("debit", accounts_lock, ledger_lock, both_hold_one),
                                name="debit")
    second = asyncio.create_task(transfer("credit", ledger_lock, accounts_lock, both_hold_one),
                                 name="credit")
    await asyncio.sleep(0.1)
    print("asyncio-deadlock: stuck", flush=True)
    await asyncio.gather(first, second)


asyncio.run(main())
