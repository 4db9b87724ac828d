#!/usr/bin/env python3
"""Python reference for bench/lock.cpp: multiprocessing.Lock (standard library only).

    python3 lock_peer.py lock [--quick]

Prints one JSON line per metric (bench/run.py protocol):
lock_uncontended (acquire+release pairs per second, one process) and
lock_contended (pairs per second summed over 2 processes hammering one lock,
over the span from the first child's start to the last child's end).
"""
import argparse
import json
import multiprocessing as mp
import time


def emit(metric, value, unit="Mops/s", kind="peer"):
    print(json.dumps({"metric": metric, "contender": "multiprocessing.Lock", "value": value,
                      "unit": unit, "better": "higher", "kind": kind}), flush=True)


def hammer(lock, counter, n, start, times, k):
    start.wait()
    acquire, release = lock.acquire, lock.release
    # Each child times itself (perf_counter is CLOCK_MONOTONIC on Linux, one
    # clock for all processes): the parent may return from the barrier late.
    times[2 * k] = time.perf_counter()
    for _ in range(n):
        acquire()
        counter.value += 1  # counter is a lock=False Value: the lock protects it
        release()
    times[2 * k + 1] = time.perf_counter()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("group", nargs="?", default="lock")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.group != "lock":
        return
    ctx = mp.get_context("fork")
    n = 200_000 if args.quick else 1_000_000

    lock = ctx.Lock()
    acquire, release = lock.acquire, lock.release
    t0 = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    emit("lock_uncontended", n / (time.perf_counter() - t0) / 1e6)

    nc = n // 4
    counter = ctx.Value("q", 0, lock=False)
    start = ctx.Barrier(2)
    times = ctx.Array("d", 4, lock=False)
    procs = [ctx.Process(target=hammer, args=(lock, counter, nc, start, times, k))
             for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert counter.value == 2 * nc, counter.value
    elapsed = max(times[1], times[3]) - min(times[0], times[2])
    emit("lock_contended", 2 * nc / elapsed / 1e6)
    # How much of the span both children ran at once (1 = all of it).
    both = min(times[1], times[3]) - max(times[0], times[2])
    emit("lock_contended_overlap", max(both, 0.0) / elapsed, "fraction")


if __name__ == "__main__":
    main()
