#!/usr/bin/env python3
"""coproc's benchmark report: coproc, its Python peers and the raw limits, side by side.

Usage (normally through ``./x bench [--quick]``)::

    python3 bench/run.py --build BUILD_DIR [--quick] [--reps N] [--only GROUP ...]

Protocol. Every contender is a program run as ``PROGRAM GROUP [--quick] [extra args]``
that prints one JSON object per line::

    {"metric": "rtt_p50", "contender": "Pool.apply_async", "value": 168.6,
     "unit": "us", "better": "lower"}

``better`` is "lower" or "higher". Optional fields: ``quantiles`` (a list of
latency quantile points, metric names ending in ``_dist``, used for the plot),
``kind`` ("coproc", "peer" or "limit": overrides the kind of the program, for
example a reference memcpy printed by a coproc program), and anything else
(kept in latest.json). Lines that are not JSON are ignored; a program that is
missing, fails or times out contributes nothing, so its cells read "not
measured": nothing in the report is estimated or carried over.

Interleaving. For each repetition r, every group runs every one of its
contenders once, in an order rotated by r, so slow drift of the machine (other
load, frequency) spreads evenly over the contenders instead of biasing one.
Each cell is the median over repetitions, with the spread (max-min)/median.

Placement. The "rtt" group runs twice: pinned to CPU 0 (the process is pinned
before exec, so every child it forks inherits it) and with free placement.

Outputs: bench/results/latest.csv, latest.json, PNG plots in bench/results/,
and docs/BENCHMARKS.md (a hand-written introduction above a marker line is
kept; everything below the marker is regenerated). --quick writes everything to
bench/results/quick/ instead, so a harness check never overwrites the published report,
and exits 1 when any contender is missing, fails or prints nothing (CI runs it).
"""

import argparse
import csv
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
PEERS = os.path.join(BENCH, "peers")

# ---------------------------------------------------------------------------
# What runs: groups and their contenders.


def nproc():
    return len(os.sched_getaffinity(0))


class Contender:
    def __init__(self, kind, program, argv_tail=(), label=None, python=False, text=None,
                 env=None, group=None, suffix=""):
        self.kind = kind  # coproc | peer | limit
        self.env = env  # extra environment variables
        self.group = group  # the program's own group argument, when not the run's group
        self.suffix = suffix  # appended to every metric's row (the backend group)
        self.program = program  # path of an executable or of a Python script
        self.argv_tail = list(argv_tail)
        self.python = python
        # A program that predates the protocol: text = (argv(quick) -> arguments,
        # parse(stdout) -> JSON-line dicts). It gets no group argument.
        self.text = text
        self.label = label or os.path.basename(program) + (
            " " + " ".join(argv_tail) if argv_tail else "")

    def available(self):
        return os.path.isfile(self.program) and (self.python or os.access(self.program, os.X_OK))

    def missing(self):
        """What to name when available() is false."""
        return os.path.relpath(self.program, ROOT)

    def argv(self, group, quick):
        head = [sys.executable, self.program] if self.python else [self.program]
        if self.text:
            return head + self.text[0](quick)
        return head + [self.group or group] + (["--quick"] if quick else []) + self.argv_tail


class MpiContender(Contender):
    """bench_mpi under ``mpirun -np N`` (rank 0 measures process_pool and mpi_pool
    with as many workers; the other ranks serve): one machine, shared-memory
    transport. N = 3 for the group mpi, 2 for its one-worker-rank layout."""

    def __init__(self, program, ranks=3, group=None):
        super().__init__("coproc", program, label=f"mpirun -np {ranks} bench_mpi", group=group)
        self.ranks = ranks
        self.mpirun = shutil.which("mpirun")

    def available(self):
        return self.mpirun is not None and super().available()

    def missing(self):
        return "mpirun (not on PATH)" if self.mpirun is None else super().missing()

    def argv(self, group, quick):
        # 3 ranks on fewer CPUs need --oversubscribe; root needs --allow-run-as-root.
        flags = ["--oversubscribe", "--mca", "btl", "self,vader"]
        if os.geteuid() == 0:
            flags.insert(0, "--allow-run-as-root")
        return [self.mpirun, *flags, "-np", str(self.ranks)] + super().argv(group, quick)


def _line(metric, contender, value, unit, better, kind):
    return {"metric": metric, "contender": contender, "value": value, "unit": unit,
            "better": better, "kind": kind}


def parse_codec(out):
    """bench_codec: "NAME  X ms  Y GB/s  Zx memcpy" lines -> a 64 MiB round trip
    through the codec (encode + decode) against two warm memcpys."""
    ms = {}
    for raw in out.splitlines():
        m = re.match(r"(.+?)\s+([0-9.]+) ms\s+[0-9.]+ GB/s", raw)
        if m:
            ms[m.group(1).strip()] = float(m.group(2))
    lines = []
    if "encode + decode" in ms:
        lines.append(_line("codec_64MiB", "encode + decode vector<double>",
                           ms["encode + decode"], "ms", "lower", "coproc"))
    if "memcpy into a warm buffer" in ms:
        lines.append(_line("codec_64MiB", "2 x memcpy (warm)",
                           2 * ms["memcpy into a warm buffer"], "ms", "lower", "limit"))
    return lines


def parse_pipe_pingpong(out):
    """bench_pipe_pingpong: per placement, "blocking median X us ... ring median Y us", then
    "bare ring+epoll median Z us" (the floor of the bridge, reported as a limit)."""
    lines = []
    for raw in out.splitlines():
        m = re.match(r"(cpu0|free)\s+blocking median\s+([0-9.]+) us.*ring median\s+([0-9.]+) us",
                     raw)
        if m:
            place = m.group(1)
            lines.append(_line(f"ring_pipe_rtt_{place}", "pipe_reader/pipe_writer (ring, 8 B)",
                               float(m.group(3)), "us", "lower", "coproc"))
            lines.append(_line(f"ring_pipe_rtt_{place}", "blocking read/write (8 B)",
                               float(m.group(2)), "us", "lower", "limit"))
        m = re.match(r"(cpu0|free)\s+bare ring\+epoll median\s+([0-9.]+) us", raw)
        if m:
            lines.append(_line(f"ring_pipe_rtt_{m.group(1)}",
                               "bare ring bridged into bare epoll (no library, 8 B)",
                               float(m.group(2)), "us", "lower", "limit"))
    return lines


# Each group: (name the programs see, placement, contenders). The placement
# tag becomes part of the row name only where a group runs in two placements.
def build_groups(build):
    b = os.path.join(build, "bench")

    def limits():
        return Contender("limit", os.path.join(b, "bench_limits"))

    def cxx(name):
        return Contender("coproc", os.path.join(b, name))

    def peer(script, *tail):
        return Contender("peer", os.path.join(PEERS, script), tail, python=True)

    def http_load(kind, *tail):
        return Contender(kind, os.path.join(BENCH, "http_load.py"), tail, python=True,
                         label=f"http_load.py {tail[1]}")

    def on_backend(name, group, backend):
        return Contender("coproc", os.path.join(b, name), env={"COPROC_IO_BACKEND": backend},
                         group=group, suffix=backend, label=f"{name} {group} ({backend})")

    def both_backends(name, group):
        return [on_backend(name, group, "uring"), on_backend(name, group, "epoll")]

    pool_peers = [peer("cf_peer.py"), peer("mp_pool_peer.py")]
    ready = [cxx("bench_pool"), limits()]
    for method in ("fork", "forkserver", "spawn"):
        ready += [peer("cf_peer.py", "--start-method", method),
                  peer("mp_pool_peer.py", "--start-method", method)]
    return [
        ("rtt", "cpu0", [cxx("bench_pool"), limits(), *pool_peers, peer("asyncio_peer.py")]),
        ("rtt", "free", [cxx("bench_pool"), limits(), *pool_peers, peer("asyncio_peer.py")]),
        ("tput", "", [cxx("bench_pool"), limits(), *pool_peers, peer("asyncio_peer.py")]),
        ("payload", "", [cxx("bench_pool"), limits(), *pool_peers, peer("asyncio_peer.py")]),
        ("speedup", "", [cxx("bench_pool"), limits(), *pool_peers]),
        ("ready", "", ready),
        ("memory", "", [cxx("bench_pool"), limits(), *pool_peers]),
        ("queue", "", [cxx("bench_queue"), limits(), peer("mpq_peer.py")]),
        ("pipe", "", [cxx("bench_pipe"), limits(), peer("mpq_peer.py")]),
        ("lock", "", [cxx("bench_lock"), peer("lock_peer.py")]),
        # Parent loop's doorbell: eventfd vs futex on the ring (both placements in one run).
        ("doorbell", "", [cxx("bench_doorbell")]),
        # Programs that print text, not JSON lines: parsed here.
        ("codec", "", [Contender("coproc", os.path.join(b, "bench_codec"),
                                 text=(lambda quick: [], parse_codec))]),
        ("ringpipe", "", [Contender("coproc", os.path.join(b, "bench_pipe_pingpong"),
                                    text=(lambda quick: ["2000", "2"] if quick else [],
                                          parse_pipe_pingpong))]),
        # wrk against examples/http_server and bench/peers/http_peer.py (bench/http_load.py).
        ("http", "", [http_load("coproc", "--server", "coproc", "--build", build),
                      http_load("peer", "--server", "python")]),
        # The rows that wait in the loop, once on each io backend (issue: epoll
        # backend): rows gain "[uring]" / "[epoll]", placement first for rtt.
        ("backend", "cpu0", both_backends("bench_pool", "rtt")),
        ("backend", "free", both_backends("bench_pool", "rtt")),
        ("backend", "", both_backends("bench_pipe", "pipe") + both_backends("bench_queue", "queue")
         + both_backends("bench_lock", "lock")),
        # mpi_pool through MPI ranks next to process_pool, in one program (bench/mpi.cpp).
        ("mpi", "", [MpiContender(os.path.join(b, "bench_mpi")),
                     MpiContender(os.path.join(b, "bench_mpi"), ranks=2, group="mpi_one_rank")]),
        # The parent's cost per task against the worker count (bench/sweep.cpp).
        ("sweep", "", [cxx("bench_sweep")]),
        # map_unordered's stream consumed three ways, next to map (bench/stream.cpp).
        ("stream", "", [cxx("bench_stream")]),
        # A streaming task's values (pool.stream) against the pool's own map,
        # beside Python's queue workarounds (bench/emit.cpp, peers/emit_peer.py).
        ("emit", "cpu0", [cxx("bench_emit"), peer("emit_peer.py")]),
        ("emit", "free", [cxx("bench_emit"), peer("emit_peer.py")]),
        # A task summing / filling a 64 MiB shared_buffer against the same in-process
        # (the limit rows come from bench_shared_buffer), beside Python's shared_memory.
        ("shbuf", "", [cxx("bench_shared_buffer"), peer("shbuf_peer.py")]),
    ]


# Rows the report always shows, in order, even when nothing was measured:
# (row key, title). issue_rows() are the rows the benchmark report promises
# (coproc, best peer and limit each); MORE_ROWS measure coproc's own
# mechanisms and extras, where a Python peer or a raw limit may not exist
# (NOT_APPLICABLE says which). Metrics listed nowhere are appended to MORE_ROWS.
def issue_rows(cpus):
    rows = [
        ("rtt_p50 [cpu0]", "submit round trip p50, one core"),
        ("rtt_p99 [cpu0]", "submit round trip p99, one core"),
        ("rtt_p50 [free]", "submit round trip p50, free placement"),
        ("rtt_p99 [free]", "submit round trip p99, free placement"),
        ("noop_tput_submit", "no-op tasks/s, single submits in flight"),
        ("noop_tput_map", "no-op tasks/s, map"),
        ("noop_tput_map_first", "no-op tasks/s, map, first call on a new pool"),
        ("payload_rtt_8B", "payload round trip 8 B"),
        ("payload_rtt_4KiB", "payload round trip 4 KiB"),
        ("payload_rtt_1MiB", "payload round trip 1 MiB"),
        ("payload_rtt_64MiB", "payload round trip 64 MiB"),
    ]
    rows += [(f"speedup_w{w}", f"CPU-bound speedup, {w} worker(s) vs serial")
             for w in range(1, cpus + 1)]
    rows += [
        ("ready_ms", "construct pool to first result"),
        ("idle_worker_pss", "idle worker PSS"),
        ("idle_worker_private_dirty", "idle worker private dirty"),
        ("queue_tput", "queue items/s, one producer process"),
        ("queue_tput_4KiB", "queue items/s, 4 KiB items, one producer process"),
        ("queue_rtt_p50", "queue round trip p50"),
        ("pipe_rtt_p50", "pipe round trip p50"),
        ("pipe_rtt_p99", "pipe round trip p99"),
        ("pipe_rtt_4KiB_p50", "pipe round trip p50, 4 KiB"),
        ("pipe_tput", "pipe messages/s, one way"),
        ("lock_uncontended", "lock+unlock pairs/s, one process"),
        ("lock_contended", "lock+unlock pairs/s, 2 processes on one lock"),
        ("lock_contended_overlap", "share of that span both processes ran at once"),
    ]
    return rows


MORE_ROWS = [
    ("memcpy_64MiB", "memcpy 64 MiB (the payload target's yardstick)"),
    ("pipe_rtt_cross_cpu_p50", "pipe round trip p50, peers pinned to CPUs 0 and 1"),
    ("pipe_64MiB_ms", "pipe, one 64 MiB message"),
    ("lock_async_uncontended", "async_lock+unlock pairs/s, one process"),
    ("http_compute_rps", "HTTP compute endpoint requests/s (wrk, loopback)"),
    ("http_compute_p99", "HTTP compute endpoint p99"),
    ("http_cheap_p99_saturated", "HTTP cheap endpoint p99, every worker busy"),
    ("http_cheap_rps_saturated", "HTTP cheap endpoint requests/s, every worker busy"),
    ("http_cheap_p99_idle", "HTTP cheap endpoint p99, no compute load"),
    ("doorbell_rtt_cpu0", "loop doorbell round trip, one core"),
    ("doorbell_rtt_free", "loop doorbell round trip, free placement"),
    ("codec_64MiB", "codec encode+decode 64 MiB vector<double>"),
    ("ring_pipe_rtt_cpu0", "pipe ping-pong through the ring, one core"),
    ("ring_pipe_rtt_free", "pipe ping-pong through the ring, free placement"),
    # coproc = mpi_pool over 2 ranks with 1 worker each, limit = process_pool
    # with 2 workers.
    ("mpi_rtt_p50", "mpi_pool round trip p50 (limit: process_pool)"),
    ("mpi_rtt_p99", "mpi_pool round trip p99 (limit: process_pool)"),
    ("mpi_noop_tput", "mpi_pool no-op tasks/s, map chunk 1 (limit: process_pool)"),
    # The same with 2 workers per rank (4 workers on 2 ranks).
    ("mpi_rtt_p50_2w", "mpi_pool round trip p50, 2 workers per rank (limit: process_pool)"),
    ("mpi_rtt_p99_2w", "mpi_pool round trip p99, 2 workers per rank (limit: process_pool)"),
    ("mpi_noop_tput_2w", "mpi_pool no-op tasks/s, 2 workers per rank (limit: process_pool)"),
    # CPU-bound map, serial time / pool time, 2 workers in both layouts: 3
    # ranks (rank 0 + 2 worker ranks x 1 worker) against 2 ranks (rank 0 + 1
    # worker rank x 2 workers); on 2 cores with rank 0's loop: oversubscribed.
    ("mpi_cpu_speedup_3x1", "mpi_pool CPU-bound speedup, 3 ranks x 1 worker (limit: process_pool)"),
    ("mpi_cpu_speedup_2x2", "mpi_pool CPU-bound speedup, 2 ranks x 2 workers (limit: process_pool)"),
    ("payload_rtt_64MiB_cold", "payload round trip 64 MiB vector<double>, first call on a fresh pool"),
    ("payload_64MiB_copy_ratio", "64 MiB vector<double> round trip / one memcpy, same run (target 5)"),
    ("payload_64MiB_cold_ratio", "64 MiB vector<double> round trip, first call / warm (target 2)"),
    ("shbuf_sum_64MiB", "task sums a 64 MiB shared_buffer, warm (limit: in-process)"),
    ("shbuf_sum_64MiB_cold", "task sums a 64 MiB shared_buffer, first call"),
    ("shbuf_fill_64MiB", "task fills and returns a new 64 MiB buffer, warm (limit: in-process)"),
    ("shbuf_fill_64MiB_cold", "task fills and returns a new 64 MiB buffer, first call"),
    ("shbuf_map_item_bytes", "bytes one map item (buffer, first, last) sends"),
    # One streaming task's values (pool.stream); the yardstick of the target
    # (within 2x): the pool's no-op map items/s per worker, same run.
    ("emit_tput [cpu0]", "streamed 8-byte values/s from one task, one core"),
    ("emit_tput [free]", "streamed 8-byte values/s from one task, free placement"),
    ("emit_map_per_worker [free]", "no-op map items/s per worker, default pool (emit yardstick)"),
    ("emit_map_one_worker [free]", "no-op map items/s, 1-worker pool"),
    ("emit_latency_p50 [cpu0]", "out(v) in the task to next() p50, one core"),
    ("emit_latency_p50 [free]", "out(v) in the task to next() p50, free placement"),
    ("emit_latency_p99 [free]", "out(v) in the task to next() p99, free placement"),
    ("emit_latency_cold [free]", "out(v) to next(), first value of a fresh pool"),
]


def known_rows(cpus):
    return issue_rows(cpus) + MORE_ROWS


# Cells that have no contender by design (row prefix -> kinds): shown as
# "n/a", so that "not measured" always means a program failed or is missing.
NOT_APPLICABLE = {
    "noop_tput_map_first": ("peer", "limit"),  # coproc's own first call, beside its warm map
    "memcpy_64MiB": ("coproc", "peer"),  # a reference figure only
    "lock_async_uncontended": ("peer",),  # multiprocessing has no awaitable lock
    "lock_contended_overlap": ("limit",),  # a check on the contended run, not a rate
    "http_": ("limit",),  # a whole server: no raw floor to compare with
    "doorbell_": ("peer",),  # the parent loop's wake-up path: coproc's own
    "codec_": ("peer",),
    "ring_pipe_": ("peer",),
    "mpi_": ("peer",),  # Python's standard library has no MPI
    "shbuf_fill_": ("peer",),  # the Python peer only sums
    "payload_rtt_64MiB_cold": ("peer", "limit"),  # coproc's own first call
    "payload_64MiB_": ("peer", "limit"),  # ratios of coproc's own rows
    "shbuf_map_": ("peer", "limit"),
    "emit_": ("limit",),  # the yardstick rows are coproc's own map
    "emit_map_": ("peer", "limit"),
    "emit_latency_cold": ("peer", "limit"),
}


def not_applicable(key, kind):
    return any(key.startswith(prefix) and kind in kinds
               for prefix, kinds in NOT_APPLICABLE.items())


# Rows where higher is better when nothing was measured to say so.
def higher_is_better(key):
    return any(w in key for w in ("tput", "speedup", "memcpy", "rps", "lock_"))

# ---------------------------------------------------------------------------
# Running.


# --fifo: every contender (and each process it forks) runs under SCHED_FIFO,
# so builds and other ordinary (CFS) work on a shared machine cannot take its
# CPU. The kernel's RT throttling still leaves 5% of each CPU to the rest.
# Not for the one-core placement: there FIFO turns off wakeup preemption,
# which changes the mechanism measured (a worker woken by the parent no longer
# runs at once; coproc's one-core round trip went from 6.0 to 7.9 us, and
# multiprocessing.Pool's helper threads starved each other until the timeout).
# Nor for groups that run more busy processes than CPUs (no-op throughput,
# HTTP under load: a FIFO worker is never preempted, so the loop answering
# /ping waited 38 ms at p99; multiprocessing.Queue with its feeder thread),
# or that pin themselves (doorbell, ringpipe).
FIFO_PRIORITY = 0
FIFO_GROUPS = {"rtt", "payload", "speedup", "ready", "memory", "pipe", "lock", "codec",
               "mpi"}


def prepare_child(group, placement):
    def prepare():
        if placement == "cpu0":
            os.sched_setaffinity(0, {0})
        elif FIFO_PRIORITY and group in FIFO_GROUPS:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
    return prepare


def run_one(contender, group, placement, quick, timeout, log):
    """Runs one contender once; returns its parsed JSON lines (maybe empty)."""
    argv = contender.argv(group, quick)
    t0 = time.monotonic()
    try:
        env = dict(os.environ, **contender.env) if contender.env else None
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=prepare_child(group, placement), cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        log.append(f"{shlex.join(argv)}: timed out after {timeout} s")
        return []
    lines = []
    raws = [json.dumps(o) for o in contender.text[1](proc.stdout)] if contender.text else \
        proc.stdout.splitlines()
    for raw in raws:
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict) and "metric" in obj and isinstance(
                obj.get("value"), (int, float)):
            lines.append(obj)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        log.append(f"{shlex.join(argv)}: exit {proc.returncode} ({tail})")
    elif not lines:
        log.append(f"{shlex.join(argv)}: printed no result line")
    dt = time.monotonic() - t0
    print(f"  {group:8} {placement or '-':5} {contender.kind:6} "
          f"{contender.label:42.42} {dt:6.2f} s  {len(lines)} lines", flush=True)
    return lines


# Groups run in both placements whose rows keep them apart ("[cpu0]", "[free]").
PLACED_GROUPS = ("rtt", "emit")


def collect(groups, reps, quick, timeout, log):
    """{(row, contender): record} with the values of every repetition."""
    results = {}
    for r in range(reps):
        print(f"repetition {r + 1}/{reps}", flush=True)
        for group, placement, contenders in groups:
            present = [c for c in contenders if c.available()]
            k = r % len(present) if present else 0
            for c in present[k:] + present[:k]:
                for line in run_one(c, group, placement, quick, timeout, log):
                    row = line["metric"] + (f" [{placement}]" if group in PLACED_GROUPS else "")
                    if c.suffix:
                        row = line["metric"] + " [" + ", ".join(
                            p for p in (placement, c.suffix) if p) + "]"
                        line = dict(line, contender=f"{line['contender']} ({c.suffix})")
                    key = (row, line["contender"])
                    rec = results.setdefault(key, {
                        "row": row, "metric": line["metric"], "placement": placement,
                        "contender": line["contender"],
                        "kind": line.get("kind", c.kind), "unit": line.get("unit", ""),
                        "better": line.get("better", "lower"), "values": [],
                        "quantiles": [], "program": os.path.relpath(c.program, ROOT),
                    })
                    rec["values"].append(float(line["value"]))
                    if "quantiles" in line:
                        rec["quantiles"].append(line["quantiles"])
    for rec in results.values():
        v = rec["values"]
        rec["median"] = statistics.median(v)
        rec["min"], rec["max"] = min(v), max(v)
        rec["spread"] = (max(v) - min(v)) / rec["median"] if rec["median"] else 0.0
    return results


# ---------------------------------------------------------------------------
# Summarising.


def best(records, better):
    if not records:
        return None
    pick = min if better == "lower" else max
    return pick(records, key=lambda r: r["median"])


BACKENDS = ("uring", "epoll")


def backend_of(rec):
    """The io backend a record of the backend group ran on, or None."""
    tail = rec["row"].rsplit("[", 1)[-1].rstrip("]").split(", ")[-1]
    return tail if rec["row"].endswith("]") and tail in BACKENDS else None


def waits_in_loop(rec):
    """Rows whose operation runs through an io_context (pool submits, async_*
    calls): the only ones the backend can change. The backend group's programs
    also print blocking rows (plain system calls, no loop), which differ
    between the two runs only by noise."""
    return re.search(r"async|submit", rec["metric"] + " " + rec["contender"]) is not None


def backend_lines(results, markdown):
    """The backend group side by side: each (metric, contender) that waits in
    the loop, on uring and on epoll, and epoll's median over uring's (below 1
    is faster where lower is better, above 1 where higher is)."""
    pairs = {}
    for rec in results.values():
        b = backend_of(rec)
        if b is None or rec["metric"].endswith("_dist") or not waits_in_loop(rec):
            continue
        row = rec["row"].replace(f", {b}]", "]").replace(f" [{b}]", "")
        contender = rec["contender"].replace(f" ({b})", "")
        pairs.setdefault((row, contender), {})[b] = rec
    head = ["row", "contender", "uring", "epoll", "epoll / uring"]
    out = []
    for (row, contender), by in sorted(pairs.items()):
        u, e = by.get("uring"), by.get("epoll")
        unit = (u or e)["unit"]
        out.append([row, contender, fmt_cell(u, unit), fmt_cell(e, unit),
                    fmt_ratio(e, u) if u and e else ""])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in out]
        return lines
    return ["  ".join(head)] + ["  ".join(r) for r in out]


SWEEP = (("sweep_submit", "single submits/s"), ("sweep_cpu_per_task", "parent CPU per task"),
         ("sweep_map", "map items/s"), ("sweep_ready", "construct to first result"))


def sweep_of(rec):
    """(metric prefix, workers) of a sweep record, or None."""
    m = re.match(r"(sweep_[a-z_]+)_w([0-9]+)$", rec["metric"])
    return (m.group(1), int(m.group(2))) if m else None


def sweep_lines(results, markdown):
    """The sweep group: one row per worker count, one column per metric, and
    the parent CPU per task relative to 2 workers (issue: per-task cost)."""
    cells = {}
    for rec in results.values():
        key = sweep_of(rec)
        if key:
            cells.setdefault(key[1], {})[key[0]] = rec
    if not cells:
        return []
    head = ["workers"] + [title for _, title in SWEEP] + ["CPU per task / 2 workers"]
    base = cells.get(2, {}).get("sweep_cpu_per_task")
    out = []
    for w in sorted(cells):
        by = cells[w]
        row = [str(w)]
        for metric, _ in SWEEP:
            rec = by.get(metric)
            row.append(fmt_cell(rec, rec["unit"]) if rec else "")
        cpu = by.get("sweep_cpu_per_task")
        row.append(fmt_ratio(cpu, base) if cpu and base else "")
        out.append(row)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return lines + ["| " + " | ".join(r) + " |" for r in out]
    return ["  ".join(head)] + ["  ".join(r) for r in out]


def summarise(results, cpus):
    by_row = {}
    for rec in results.values():
        if rec["metric"].endswith("_dist") or backend_of(rec) or sweep_of(rec):
            continue
        by_row.setdefault(rec["row"], []).append(rec)
    order = [k for k, _ in known_rows(cpus)]
    titles = dict(known_rows(cpus))
    issue_keys = {k for k, _ in issue_rows(cpus)}
    extra = sorted(k for k in by_row if k not in titles)
    rows = []
    for key in order + extra:
        recs = by_row.get(key, [])
        better = recs[0]["better"] if recs else ("higher" if higher_is_better(key) else "lower")
        row = {"row": key, "title": titles.get(key, key), "better": better,
               "unit": recs[0]["unit"] if recs else "",
               "issue": key in issue_keys}
        for kind in ("coproc", "peer", "limit"):
            row[kind] = best([r for r in recs if r["kind"] == kind], better)
        rows.append(row)
    return rows


def fmt_value(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def fmt_cell(rec, unit, na=False):
    if rec is None:
        return "n/a" if na else "not measured"
    return f"{fmt_value(rec['median'])} {unit} {fmt_spread(rec)}"


def fmt_spread(rec):
    # One pathological repetition (a spinning peer descheduled on a busy
    # machine) can exceed the median many times over: say so plainly.
    half = rec["spread"] * 50
    return f"±{half:.0f}%" if half < 1000 else f"(max {fmt_value(rec['max'])})"


def fmt_ratio(a, b):
    if a is None or b is None or not b["median"]:
        return "-"
    r = a["median"] / b["median"]
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"  # 0.0044, not 0.00


def table_lines(rows, markdown):
    head = ["row", "better", "coproc", "best peer", "limit", "coproc/peer", "coproc/limit"]
    body = []
    for r in rows:
        peer = r["peer"]
        limit = r["limit"]
        na = {kind: not_applicable(r["row"], kind) for kind in ("coproc", "peer", "limit")}
        body.append([
            r["title"], r["better"], fmt_cell(r["coproc"], r["unit"], na["coproc"]),
            fmt_cell(peer, r["unit"], na["peer"]) + (f" ({peer['contender']})" if peer else ""),
            fmt_cell(limit, r["unit"], na["limit"]) + (f" ({limit['contender']})" if limit else ""),
            fmt_ratio(r["coproc"], peer), fmt_ratio(r["coproc"], limit),
        ])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in b) + " |" for b in body]
        return out
    widths = [min(60, max(len(x[i]) for x in [head] + body)) for i in range(len(head))]
    fmt = "  ".join("{:%d.%d}" % (w, w) for w in widths)
    return [fmt.format(*head)] + [fmt.format(*b) for b in body]


# ---------------------------------------------------------------------------
# Environment and outputs.


def sh(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# The Debian packages coproc builds on and its peers run on, as installed.
PACKAGES = ["libasio-dev", "liburing-dev", "libcereal-dev", "libopenmpi-dev",
            "python3-matplotlib", "wrk"]


def package_versions():
    found = []
    for pkg in PACKAGES:
        version = sh(["dpkg-query", "-W", "-f", "${Version}", pkg])
        if version:
            found.append(f"{pkg} {version}")
    return ", ".join(found)


def machine_info(args):
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    rev = sh(["git", "rev-parse", "--short", "HEAD"])
    if sh(["git", "status", "--porcelain", "--untracked-files=no"]):
        rev += " (with uncommitted changes)"
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(nproc()),
        "cpu": model or platform.processor() or "unknown",
        "kernel": platform.release(),
        "gxx": sh(["g++", "--version"]).splitlines()[0] if sh(["g++", "--version"]) else "?",
        "python": f"{platform.python_version()} ({sys.executable})",
        "coproc": rev or "?",
        "packages": package_versions(),
        "command": os.environ.get("COPROC_BENCH_COMMAND")
        or shlex.join([sys.executable] + sys.argv),
        "reps": str(args.reps),
        "load_start": load,
    }


def write_csv(path, results):
    fields = ["row", "metric", "placement", "kind", "contender", "unit", "better", "median",
              "min", "max", "spread", "reps", "values", "program"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for rec in sorted(results.values(), key=lambda r: (r["row"], r["kind"], r["contender"])):
            if rec["metric"].endswith("_dist"):
                continue
            w.writerow([rec["row"], rec["metric"], rec["placement"], rec["kind"],
                        rec["contender"], rec["unit"], rec["better"], f"{rec['median']:.6g}",
                        f"{rec['min']:.6g}", f"{rec['max']:.6g}", f"{rec['spread']:.4f}",
                        len(rec["values"]), ";".join(f"{v:.6g}" for v in rec["values"]),
                        rec["program"]])


def contender_table(results):
    out = ["| row | kind | contender | median | spread | reps |", "|---|---|---|---|---|---|"]
    for rec in sorted(results.values(), key=lambda r: (r["row"], r["kind"], r["contender"])):
        if rec["metric"].endswith("_dist"):
            continue
        out.append(f"| {rec['row']} | {rec['kind']} | {rec['contender']} | "
                   f"{fmt_value(rec['median'])} {rec['unit']} | {fmt_spread(rec)} | "
                   f"{len(rec['values'])} |")
    return out


MARKER = "<!-- Everything below is generated by bench/run.py; edit above this line. -->"

DEFAULT_INTRO = """# coproc benchmarks

(Hand-written introduction: keep it above the marker line; run.py keeps it.)
"""


def write_markdown(path, info, rows, results, plots, log, plot_dir):
    # The hand-written introduction is whatever precedes the marker in the
    # published report; a --quick report borrows it from there too.
    intro = DEFAULT_INTRO
    published = os.path.join(ROOT, "docs", "BENCHMARKS.md")
    for candidate in (path, published):
        if os.path.exists(candidate):
            text = open(candidate).read()
            if MARKER in text:
                intro = text.split(MARKER)[0]
                break
    rel = os.path.relpath(plot_dir, os.path.dirname(path))
    lines = [intro.rstrip(), "", MARKER, "", "## Run", "",
             f"- date: {info['date']}",
             f"- machine: {info['nproc']} CPUs, {info['cpu']}, kernel {info['kernel']}, "
             f"load average at start {info['load_start']}, at end {info['load_end']}",
             f"- versions: {info['gxx']}; Python {info['python']}; coproc {info['coproc']}"
             + (f"; {info['packages']}" if info.get("packages") else ""),
             f"- command: `{info['command']}` ({info['duration_s']} s)",
             f"- repetitions: {info['reps']} per contender, interleaved; cells are medians, "
             "± is half the range (max-min) over repetitions relative to the median"]
    if info.get("scheduling"):
        lines += [f"- scheduling: {info['scheduling']}; a FIFO contender and every process it "
                  "forks keep their CPU against the machine's other ordinary work"]
    if info.get("note"):
        lines += [f"- note: {info['note']}"]
    lines += ["",
             "## Summary", "",
             "\"best peer\" is the best Python contender of the row, \"limit\" the best raw "
             "reference (bench/limits.cpp, or the raw floor a coproc program measures next to "
             "itself). Ratios are coproc's median over theirs: where lower is better, below 1 "
             "means coproc is faster; where higher is better, above 1. \"not measured\" means "
             "a program failed or is missing (see the end of this page).", ""]
    lines += table_lines([r for r in rows if r["issue"]], markdown=True)
    lines += ["", "## coproc's mechanisms and extras", "",
              "The parent loop's wake-up paths, the codec, the ring, MPI, the HTTP example and "
              "the async lock. \"n/a\" marks a column with no counterpart: Python's standard "
              "library has no such mechanism, or a whole server has no raw floor.", ""]
    lines += table_lines([r for r in rows if not r["issue"]], markdown=True)
    lines += ["", "## io backends side by side", "",
              "The rows that wait in the event loop, each program run once with "
              "`COPROC_IO_BACKEND=uring` and once with `COPROC_IO_BACKEND=epoll` in the same "
              "repetition (docs/ARCHITECTURE.md, \"Backends\"). Only rows whose operation runs "
              "through the io_context are shown; the same programs' blocking rows never touch "
              "the backend (they are in latest.csv).", ""]
    lines += backend_lines(results, markdown=True)
    lines += ["", "## The parent's cost against the worker count", "",
              "`bench_sweep` (bench/sweep.cpp): a fresh pool per worker count, 2 x workers "
              "coroutines each awaiting no-op submits, the parent's CPU time (getrusage, every "
              "thread) over them per task, one map of no-op items, and the time from "
              "constructing the pool to its first result. Worker counts past the CPU count "
              "oversubscribe the machine.", ""]
    lines += sweep_lines(results, markdown=True) or ["not measured"]
    lines += [""]
    if plots:
        lines += ["## Plots", ""]
        for name, title in plots:
            lines += [f"### {title}", "", f"![{title}]({rel}/{name})", ""]
    else:
        lines += ["Plots were not generated (matplotlib unavailable).", ""]
    lines += ["## Every contender", ""] + contender_table(results) + [""]
    if log:
        lines += ["## Runs that produced nothing or failed", ""]
        lines += [f"- `{entry}`" for entry in log] + [""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------------------
# Plots (matplotlib; run in a second interpreter if this one lacks it).

PLOTS = [("latency.png", "Submit round-trip latency distribution"),
         ("payload.png", "Round-trip throughput against payload size"),
         ("speedup.png", "CPU-bound speedup against worker count"),
         ("sweep.png", "The parent's cost per task against the worker count")]

SIZES = {"8B": 8, "4KiB": 4096, "1MiB": 1 << 20, "64MiB": 64 << 20}


def make_plots(data_path, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(data_path) as f:
        recs = json.load(f)["results"]
    styles = {"coproc": dict(lw=2.5), "peer": dict(lw=1.2), "limit": dict(lw=1.2, ls="--")}

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, placement in zip(axes, ("cpu0", "free")):
        for rec in recs:
            if rec["metric"] != "rtt_dist" or rec["placement"] != placement:
                continue
            qs = rec["quantiles"]
            curve = [statistics.median(col) for col in zip(*qs)]
            ys = [i / (len(curve) - 1) for i in range(len(curve))]
            ax.plot(curve, ys, label=f"{rec['contender']} ({rec['kind']})",
                    **styles.get(rec["kind"], {}))
        ax.set_xscale("log")
        ax.set_xlabel("round trip (us, log)")
        ax.set_title("one core (cpu 0)" if placement == "cpu0" else "free placement")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("fraction of round trips (CDF)")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "latency.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = {}
    for rec in recs:
        if rec["metric"].startswith("payload_rtt_"):
            size = SIZES.get(rec["metric"][len("payload_rtt_"):])
            if size:
                # Bytes moved per round trip: the payload there and back.
                series.setdefault((rec["contender"], rec["kind"]), []).append(
                    (size, 2 * size / (rec["median"] * 1e-6) / 1e9))
    for (name, kind), pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                label=f"{name} ({kind})", **styles.get(kind, {}))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("payload bytes (log)")
    ax.set_ylabel("GB/s moved (2 x payload / round trip)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "payload.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = {}
    for rec in recs:
        if rec["metric"].startswith("speedup_w"):
            w = int(rec["metric"][len("speedup_w"):])
            series.setdefault((rec["contender"], rec["kind"]), []).append(
                (w, rec["median"], rec["min"], rec["max"]))
    for (name, kind), pts in sorted(series.items()):
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                    yerr=[[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]],
                    marker="o", capsize=3, label=f"{name} ({kind})", **styles.get(kind, {}))
    ax.set_xlabel("workers")
    ax.set_ylabel("speedup over serial in-process (x)")
    ax.set_xticks(sorted({p[0] for pts in series.values() for p in pts}) or [1])
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "speedup.png"), dpi=110)
    plt.close(fig)
    plot_sweep(recs, out_dir, plt)


def plot_sweep(recs, out_dir, plt):
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, (metric, title) in zip(axes, SWEEP[:3]):
        mine = [r for r in recs if sweep_of(r) and sweep_of(r)[0] == metric]
        pts = sorted((sweep_of(r)[1], r["median"], r["min"], r["max"]) for r in mine)
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                        yerr=[[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]],
                        marker="o", capsize=3, lw=2)
            ax.set_ylabel(mine[0]["unit"])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("workers (log)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "sweep.png"), dpi=110)
    plt.close(fig)


def plots_anywhere(data_path, out_dir, log):
    try:
        import matplotlib  # noqa: F401
        make_plots(data_path, out_dir)
        return PLOTS
    except ImportError:
        pass
    # pyenv or a virtualenv may shadow Debian's python3-matplotlib.
    for py in ("/usr/bin/python3", shutil.which("python3")):
        if py and os.path.realpath(py) != os.path.realpath(sys.executable):
            proc = subprocess.run([py, os.path.abspath(__file__), "--plot-only", data_path,
                                   out_dir], capture_output=True, text=True)
            if proc.returncode == 0:
                return PLOTS
            log.append(f"plots with {py}: {proc.stderr.strip().splitlines()[-1:]}")
    log.append("plots: no python3 with matplotlib (apt install python3-matplotlib)")
    return []


# ---------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build"),
                   help="CMake build dir holding bench/bench_* (default: build)")
    p.add_argument("--quick", action="store_true",
                   help="small counts, 2 repetitions, outputs in bench/results/quick/")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 5, quick 2)")
    p.add_argument("--only", nargs="*", default=None, help="run only these groups")
    p.add_argument("--note", default=None,
                   help="a sentence for the Run section (e.g. what else loaded the machine)")
    p.add_argument("--fifo", type=int, nargs="?", const=10, default=0, metavar="PRIORITY",
                   help="run the groups whose busy processes fit the CPUs (not their one-core "
                        "placement) under SCHED_FIFO (needs root or CAP_SYS_NICE): figures "
                        "a busy machine's ordinary work cannot disturb")
    p.add_argument("--plot-only", nargs=2, metavar=("JSON", "DIR"), help=argparse.SUPPRESS)
    p.add_argument("--from-json", metavar="JSON",
                   help="rebuild table, CSV, plots and report from a saved latest.json")
    args = p.parse_args()
    if args.plot_only:
        make_plots(*args.plot_only)
        return 0
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    build = os.path.abspath(args.build)
    results_dir = os.path.join(BENCH, "results")
    if args.quick:
        results_dir = os.path.join(results_dir, "quick")
    os.makedirs(results_dir, exist_ok=True)
    md_path = (os.path.join(results_dir, "BENCHMARKS.md") if args.quick
               else os.path.join(ROOT, "docs", "BENCHMARKS.md"))

    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        info = saved["info"]
        if args.note is not None:
            info["note"] = args.note
        results = {(r["row"], r["contender"]): r for r in saved["results"]}
        log = []
        return report(info, results, results_dir, md_path, log)

    global FIFO_PRIORITY
    if args.fifo:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.fifo))
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError as e:
            print(f"--fifo: cannot use SCHED_FIFO here ({e})", file=sys.stderr)
            return 2
        FIFO_PRIORITY = args.fifo
    info = machine_info(args)
    if args.fifo:
        info["scheduling"] = (f"SCHED_FIFO priority {args.fifo} for the groups "
                              f"{', '.join(sorted(FIFO_GROUPS))}, except their one-core "
                              "placement; the default policy for the rest")
    if args.note:
        info["note"] = args.note
    groups = build_groups(build)
    if args.only:
        groups = [g for g in groups if g[0] in args.only]
    log = []
    for group, placement, contenders in groups:
        missing = [c.missing() for c in contenders if not c.available()]
        if missing:
            print(f"group {group} {placement}: not measured (missing): {', '.join(missing)}")
            log.append(f"group {group} {placement}: missing {', '.join(missing)}")
    t0 = time.monotonic()
    results = collect(groups, args.reps, args.quick, 120 if args.quick else 900, log)
    with open("/proc/loadavg") as f:
        info["load_end"] = " ".join(f.read().split()[:3])
    info["duration_s"] = f"{time.monotonic() - t0:.0f}"
    data_path = os.path.join(results_dir, "latest.json")
    with open(data_path, "w") as f:
        json.dump({"info": info, "results": list(results.values())}, f, indent=1)
    return report(info, results, results_dir, md_path, log, strict=args.quick)


def report(info, results, results_dir, md_path, log, strict=False):
    cpus = int(info["nproc"])
    rows = summarise(results, cpus)
    print()
    print("\n".join(table_lines(rows, markdown=False)))
    print("\nio backends side by side:")
    print("\n".join(backend_lines(results, markdown=False)))
    print("\nworker-count sweep:")
    print("\n".join(sweep_lines(results, markdown=False)))

    data_path = os.path.join(results_dir, "latest.json")
    write_csv(os.path.join(results_dir, "latest.csv"), results)
    plots = plots_anywhere(data_path, results_dir, log)
    write_markdown(md_path, info, rows, results, plots, log, results_dir)
    if log:
        print("\nproblems:\n  " + "\n  ".join(log))
    print(f"\nwrote {os.path.relpath(md_path, ROOT)}, "
          f"{os.path.relpath(results_dir, ROOT)}/latest.csv in {info['duration_s']} s")
    # The quick mode is CI's check of the harness: any contender that failed,
    # printed nothing or is missing fails it. A full report is still written
    # and says "not measured" for those cells.
    if strict and log:
        print(f"--quick: {len(log)} problem(s), see above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
