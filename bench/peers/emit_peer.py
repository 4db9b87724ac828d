"""Peer: results out of a running task, the Python workaround (see peer_common.py).

Python's pools return a task's result only when it ends. A task that
reports values while it runs writes them into a queue its caller reads:
a Manager queue passed as an argument (a proxy: every put is a round trip to
the manager process), or a multiprocessing.Queue handed to the workers by
the pool's initializer (it cannot be passed as an argument). Both bounded
like coproc's stream (1024 values). Rows: emit_tput (values/s, 8-byte
ints) and emit_latency (us from put() in the task to get() returning, values
200 us apart, time.monotonic_ns on both sides: CLOCK_MONOTONIC).
"""
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import peer_common as pc

BOUND = 1024
_queue = None  # the worker's multiprocessing.Queue, set by the initializer


def _set_queue(q):
    global _queue
    _queue = q


def count_into(q, n):
    for i in range(n):
        q.put(i)
    q.put(None)


def stamps_into(q, n, pause_s):
    for _ in range(n):
        q.put(time.monotonic_ns())
        time.sleep(pause_s)
    q.put(None)


def count_into_global(n):
    count_into(_queue, n)


def stamps_into_global(n, pause_s):
    stamps_into(_queue, n, pause_s)


def read_all(q):
    n = 0
    while q.get() is not None:
        n += 1
    return n


def read_latency(q):
    samples = []
    while (v := q.get()) is not None:
        samples.append((time.monotonic_ns() - v) / 1e3)
    return samples


def measure(name, q, ex, count_fn, stamps_fn, n, n_latency, with_queue):
    args = (q,) if with_queue else ()
    ex.submit(count_fn, *args, 100).result()  # warm: the worker is up
    read_all(q)
    t0 = time.perf_counter()
    fut = ex.submit(count_fn, *args, n)
    got = read_all(q)
    took = time.perf_counter() - t0
    fut.result()
    if got != n:
        raise RuntimeError(f"{name}: {got} of {n} values")
    pc.emit("emit_tput", name, n / took, "values/s", "higher", values=n)
    fut = ex.submit(stamps_fn, *args, n_latency, 200e-6)
    samples = read_latency(q)
    fut.result()
    pc.emit_latency("emit_latency", name, samples)


def group_emit(args):
    n_latency = 300 if args.quick else 3000
    with multiprocessing.Manager() as m, ProcessPoolExecutor(1) as ex:
        measure("ProcessPoolExecutor task into a Manager().Queue", m.Queue(BOUND), ex, count_into,
                stamps_into, 5_000 if args.quick else 50_000, n_latency, True)
    q = multiprocessing.Queue(BOUND)
    with ProcessPoolExecutor(1, initializer=_set_queue, initargs=(q,)) as ex:
        measure("ProcessPoolExecutor task into a multiprocessing.Queue (initializer)", q, ex,
                count_into_global, stamps_into_global, 50_000 if args.quick else 500_000,
                n_latency, False)


if __name__ == "__main__":
    pc.main({"emit": group_emit})
