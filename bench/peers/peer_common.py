"""Shared helpers of the Python peers (standard library only).

Every peer is run as ``python3 PEER.py GROUP [--quick] [options]`` and prints
one JSON object per line: {"metric", "contender", "value", "unit", "better"}
plus optional fields ("quantiles" for latency distributions). bench/run.py
documents the protocol and parses it.
"""
import argparse
import json
import os
import sys
import statistics
import time

# Task functions live here, in an importable module, so that the forkserver
# and spawn start methods find them by name in a fresh interpreter.


def noop(x=None):
    return x


def echo(payload):
    return payload


def burn(n):
    """A CPU-bound loop; calibrate_burn() picks n for a given duration."""
    x = 88172645463325252
    m = (1 << 64) - 1
    for _ in range(n):
        x ^= (x << 13) & m
        x ^= x >> 7
        x ^= (x << 17) & m
    return x


def sleep_then_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def calibrate_burn(target_s):
    n = 1000
    while True:
        t0 = time.perf_counter()
        burn(n)
        s = time.perf_counter() - t0
        if s > target_s / 4:
            # The fastest of a few samples: one slowed by other load would
            # make the tasks far shorter than asked.
            for _ in range(3):
                t0 = time.perf_counter()
                burn(n)
                s = min(s, time.perf_counter() - t0)
            return max(1, int(n * target_s / s))
        n *= 2


def paired_speedup(serial_fn, parallel_fn, reps):
    """Speedup of parallel_fn over serial_fn, both timed back to back in each
    repetition (order alternating) so that load from other processes hits
    both sides of each ratio alike. Returns the median ratio and extra fields
    (min, max, median serial and parallel ms)."""
    ratios, serial, parallel = [], [], []
    for r in range(reps):
        runs = [serial_fn, parallel_fn] if r % 2 == 0 else [parallel_fn, serial_fn]
        times = {}
        for fn in runs:
            t0 = time.perf_counter()
            fn()
            times[fn] = time.perf_counter() - t0
        serial.append(times[serial_fn])
        parallel.append(times[parallel_fn])
        ratios.append(times[serial_fn] / times[parallel_fn])
    med = statistics.median
    return med(ratios), {"inner_reps": reps, "ratio_min": min(ratios), "ratio_max": max(ratios),
                         "serial_ms": med(serial) * 1e3, "parallel_ms": med(parallel) * 1e3}


def speedup_setup(quick):
    """(tasks, n, reps): 4 tasks per CPU, one run of all tasks about 80 ms
    serially (20 ms quick), as bench_pool and bench_limits."""
    tasks = 4 * nproc()
    n = calibrate_burn((0.020 if quick else 0.080) / tasks)
    return tasks, n, 3 if quick else 5


def nproc():
    return len(os.sched_getaffinity(0))


PAYLOAD_SIZES = [("8B", 8), ("4KiB", 4096), ("1MiB", 1 << 20), ("64MiB", 64 << 20)]


def payload_iterations(size, quick):
    if size >= 64 << 20:
        return 1 if quick else 5
    if size >= 1 << 20:
        return 10 if quick else 100
    return 100 if quick else 2000


def emit(metric, contender, value, unit, better, **extra):
    line = {"metric": metric, "contender": contender, "value": value,
            "unit": unit, "better": better}
    line.update(extra)
    print(json.dumps(line), flush=True)


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    idx = int(q * (len(sorted_values) - 1) + 0.5)
    return sorted_values[min(idx, len(sorted_values) - 1)]


def emit_latency(prefix, contender, samples_us):
    s = sorted(samples_us)
    emit(prefix + "_p50", contender, percentile(s, 0.50), "us", "lower")
    emit(prefix + "_p99", contender, percentile(s, 0.99), "us", "lower")
    quantiles = [round(percentile(s, i / 199), 3) for i in range(200)]
    emit(prefix + "_dist", contender, percentile(s, 0.50), "us", "lower",
         quantiles=quantiles, n=len(s))


def smaps_rollup(pid):
    """(Pss, Private_Dirty) of a process in kB."""
    pss = dirty = None
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] == "Pss:":
                pss = int(parts[1])
            elif parts[0] == "Private_Dirty:":
                dirty = int(parts[1])
    return pss, dirty


def emit_memory(contender, pids):
    values = [smaps_rollup(pid) for pid in pids]
    pss = sum(v[0] for v in values) / len(values) / 1024
    dirty = sum(v[1] for v in values) / len(values) / 1024
    emit("idle_worker_pss", contender, pss, "MiB", "lower", workers=len(pids))
    emit("idle_worker_private_dirty", contender, dirty, "MiB", "lower", workers=len(pids))


def parse_args(groups):
    p = argparse.ArgumentParser()
    p.add_argument("group", choices=sorted(groups))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--start-method", default=None,
                   help="ready group: fork, forkserver or spawn")
    args = p.parse_args()
    return args


def main(groups):
    args = parse_args(groups)
    groups[args.group](args)
    sys.stdout.flush()
