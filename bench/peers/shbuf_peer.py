"""Peer: multiprocessing.shared_memory + a numpy-free memoryview sum in a
ProcessPoolExecutor task, beside coproc's shared_buffer (bench/shared_buffer.cpp).

Rows (ms): shbuf_sum_64MiB (warm median, with cold_ms and warm_spread) and
shbuf_sum_64MiB_cold: the task attaches the segment by name, sums it as
doubles through memoryview.cast('d'), and detaches.
"""
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import shared_memory

import peer_common as pc

NAME = "ProcessPoolExecutor + shared_memory (memoryview sum)"
SIZE = 64 << 20


def sum_shared(name):
    shm = shared_memory.SharedMemory(name=name)
    try:
        view = shm.buf.cast("d")
        try:
            return sum(view)
        finally:
            view.release()
    finally:
        shm.close()


def group_shbuf(args):
    reps = 3 if args.quick else 11
    shm = shared_memory.SharedMemory(create=True, size=SIZE)
    try:
        view = shm.buf.cast("d")
        for i in range(len(view)):
            view[i] = float(i)
        view.release()
        with ProcessPoolExecutor(pc.nproc()) as ex:
            list(ex.map(pc.sleep_then_pid, [0.05] * (2 * pc.nproc())))  # workers up
            samples = []
            for _ in range(reps):
                t0 = time.perf_counter()
                ex.submit(sum_shared, shm.name).result()
                samples.append((time.perf_counter() - t0) * 1e3)
    finally:
        shm.close()
        shm.unlink()
    warm = sorted(samples[1:])
    median = statistics.median(warm)
    pc.emit("shbuf_sum_64MiB", NAME, median, "ms", "lower", cold_ms=samples[0],
            warm_spread=(warm[-1] - warm[0]) / median, warm_n=len(warm))
    pc.emit("shbuf_sum_64MiB_cold", NAME, samples[0], "ms", "lower")


if __name__ == "__main__":
    pc.main({"shbuf": group_shbuf})
