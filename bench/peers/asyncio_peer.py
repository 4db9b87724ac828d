"""Peer: asyncio's loop.run_in_executor over a ProcessPoolExecutor."""
import asyncio
import time
from concurrent.futures import ProcessPoolExecutor

import peer_common as pc

NAME = "asyncio run_in_executor"


async def warmed(ex, w):
    loop = asyncio.get_running_loop()
    await asyncio.gather(*[loop.run_in_executor(ex, pc.sleep_then_pid, 0.05)
                           for _ in range(2 * w)])


async def rtt(args):
    n = 300 if args.quick else 5000
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(pc.nproc()) as ex:
        await warmed(ex, pc.nproc())
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            await loop.run_in_executor(ex, pc.noop, 1)
            samples.append((time.perf_counter() - t0) * 1e6)
    pc.emit_latency("rtt", NAME, samples)


async def tput(args):
    n = 2000 if args.quick else 20000
    window = 256
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(pc.nproc()) as ex:
        await warmed(ex, pc.nproc())
        sem = asyncio.Semaphore(window)

        async def one(i):
            async with sem:
                return await loop.run_in_executor(ex, pc.noop, i)

        t0 = time.perf_counter()
        await asyncio.gather(*[one(i) for i in range(n)])
        pc.emit("noop_tput_submit", f"{NAME} ({window} in flight)",
                n / (time.perf_counter() - t0), "tasks/s", "higher", tasks=n)


async def payload(args):
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(pc.nproc()) as ex:
        await warmed(ex, pc.nproc())
        for label, size in pc.PAYLOAD_SIZES:
            data = bytes(size)
            samples = []
            for _ in range(pc.payload_iterations(size, args.quick)):
                t0 = time.perf_counter()
                await loop.run_in_executor(ex, pc.echo, data)
                samples.append((time.perf_counter() - t0) * 1e6)
            samples.sort()
            pc.emit("payload_rtt_" + label, NAME + "(bytes)",
                    pc.percentile(samples, 0.5), "us", "lower")


def runner(coro):
    return lambda args: asyncio.run(coro(args))


if __name__ == "__main__":
    pc.main({"rtt": runner(rtt), "tput": runner(tput), "payload": runner(payload)})
