#!/usr/bin/env python3
"""Python reference for bench/lock.cpp: multiprocessing.Lock (standard library only).

    python3 lock_peer.py lock [--quick]

Prints one JSON line per metric (bench/run.py protocol):
lock_uncontended (acquire+release pairs per second, one process) and
lock_contended (pairs per second summed over 2 processes hammering one lock).
"""
import argparse
import json
import multiprocessing as mp
import time


def emit(metric, value):
    print(json.dumps({"metric": metric, "contender": "multiprocessing.Lock", "value": value,
                      "unit": "Mops/s", "better": "higher", "kind": "peer"}), flush=True)


def hammer(lock, counter, n, start):
    start.wait()
    acquire, release = lock.acquire, lock.release
    for _ in range(n):
        acquire()
        counter.value += 1  # counter is a lock=False Value: the lock protects it
        release()


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
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=hammer, args=(lock, counter, nc, start)) for _ in range(2)]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    assert counter.value == 2 * nc, counter.value
    emit("lock_contended", 2 * nc / elapsed / 1e6)


if __name__ == "__main__":
    main()
