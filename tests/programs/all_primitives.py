"""Every asyncio primitive peeps instruments, each holding a real wait, until
SIGUSR1 releases them all.  Prints "ready" once every wait is in place and
"released" once every waiter has finished."""

import asyncio
import signal
import sys

import peeps


async def main() -> None:
    peeps.init("all-primitives")
    spawn = peeps.tasks.spawn_tracked
    release = peeps.Event("p.release")
    lock = peeps.Lock("p.lock")
    rwlock = peeps.RWLock("p.rwlock")
    sem = peeps.Semaphore(1, name="p.sem")
    bsem = peeps.BoundedSemaphore(1, name="p.bsem")
    notify = peeps.Notify("p.notify")
    cond = peeps.Condition(name="p.cond")
    cell: peeps.OnceCell[int] = peeps.OnceCell("p.cell")
    bounded = peeps.channel("p.bounded", 1)
    unbounded = peeps.channel("p.unbounded")
    tx, rx = peeps.oneshot("p.oneshot")
    latest = peeps.watch(0, "p.watch")
    subscriber = latest.subscribe()
    child = await peeps.io.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(3600)", label="p.subprocess")

    async def hold(primitive: object) -> None:
        async with primitive:  # type: ignore[attr-defined]
            await release.wait()

    async def hold_write() -> None:
        async with rwlock.write():
            await release.wait()

    async def read() -> None:
        async with rwlock.read():
            pass

    async def cond_wait() -> None:
        async with cond:
            await cond.wait()

    async def slow_init() -> int:
        await release.wait()
        return 1

    async def timeout_scope() -> None:
        async with peeps.timeout(3600, label="p.timeout"):
            await release.wait()

    async def ticks() -> None:
        async for _ in peeps.interval(3600, label="p.interval"):
            pass

    await bounded.put(0)
    holders = [spawn("p.lock.holder", hold(lock)), spawn("p.rw.writer", hold_write()),
               spawn("p.sem.holder", hold(sem)), spawn("p.bsem.holder", hold(bsem)),
               spawn("p.cell.init", cell.get_or_init(slow_init))]
    await asyncio.sleep(0.05)  # the holders hold before the waiters arrive
    waiters = [spawn("p.lock.waiter", hold(lock)), spawn("p.rw.reader", read()),
               spawn("p.sem.waiter", hold(sem)), spawn("p.bsem.waiter", hold(bsem)),
               spawn("p.cell.waiter", cell.get_or_init(slow_init)),
               spawn("p.notify.waiter", notify.notified()),
               spawn("p.cond.waiter", cond_wait()),
               spawn("p.sender", bounded.put(1)), spawn("p.receiver", unbounded.get()),
               spawn("p.oneshot.waiter", rx.recv()), spawn("p.watch.waiter", subscriber.changed()),
               spawn("p.proc.waiter", child.wait()),
               spawn("p.peep.waiter", peeps.peep(release.wait(), "p.peep")),
               spawn("p.timeout.task", timeout_scope())]
    endless = [spawn("p.sleeper", peeps.sleep(3600, label="p.sleep")),
               spawn("p.interval.task", ticks())]
    await asyncio.sleep(0.05)
    released = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, released.set)
    print("ready", flush=True)

    await released.wait()
    release.set()
    notify.notify_waiters()
    async with cond:
        cond.notify_all()
    await bounded.get()
    await unbounded.put(1)
    tx.send(1)
    latest.send(1)
    child.kill()
    for task in endless:
        task.cancel()
    await asyncio.gather(*holders, *waiters, *endless, return_exceptions=True)
    print("released", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main())
