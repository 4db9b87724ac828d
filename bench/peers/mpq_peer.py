"""Peer: multiprocessing.Queue and multiprocessing.Pipe (queue and pipe rows)."""
import multiprocessing as mp
import os
import time

import peer_common as pc


def produce(q, n):
    for i in range(n):
        q.put(i)


def produce_pages(q, n):
    # 4 KiB bytes items, as bench_queue's std::string(4096) items (a new
    # object per put, as the C++ producer builds a new string per item).
    for i in range(n):
        q.put(bytes([97 + i % 26]) * 4096)


def echo_queue(inq, outq, n):
    for _ in range(n):
        outq.put(inq.get())


def echo_conn(conn, n):
    for _ in range(n):
        conn.send(conn.recv())


def send_conn(conn, n):
    for i in range(n):
        conn.send(i)


def echo_conn_on(cpu, conn, n):
    os.sched_setaffinity(0, {cpu})
    echo_conn(conn, n)


def send_big(conn, reps):
    # One 64 MiB bytes message per "go", as bench_pipe's 64 MiB row.
    big = b"b" * (64 << 20)
    for _ in range(reps):
        conn.recv()
        conn.send_bytes(big)


def round_trips(send, recv, msg, n):
    """n timed round trips (us, sorted) after one that warms both ends."""
    send(msg)
    recv()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        send(msg)
        recv()
        samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return samples


def group_queue(args):
    n = 20_000 if args.quick else 200_000
    q = mp.Queue()
    p = mp.Process(target=produce, args=(q, n))
    t0 = time.perf_counter()
    p.start()
    for _ in range(n):
        q.get()
    secs = time.perf_counter() - t0
    p.join()
    pc.emit("queue_tput", "multiprocessing.Queue", n / secs, "items/s", "higher", items=n)

    n = 20_000 if args.quick else 200_000
    q = mp.Queue()
    p = mp.Process(target=produce_pages, args=(q, n))
    t0 = time.perf_counter()
    p.start()
    for _ in range(n):
        q.get()
    secs = time.perf_counter() - t0
    p.join()
    pc.emit("queue_tput_4KiB", "multiprocessing.Queue (4 KiB bytes)", n / secs, "items/s",
            "higher", items=n)

    n = 300 if args.quick else 5000
    inq, outq = mp.Queue(), mp.Queue()
    p = mp.Process(target=echo_queue, args=(inq, outq, n + 1))
    p.start()
    samples = round_trips(inq.put, outq.get, 0, n)
    p.join()
    pc.emit("queue_rtt_p50", "multiprocessing.Queue (2 queues)", pc.percentile(samples, 0.5),
            "us", "lower")


def group_pipe(args):
    n = 300 if args.quick else 5000
    a, b = mp.Pipe()
    p = mp.Process(target=echo_conn, args=(b, n + 1))
    p.start()
    samples = round_trips(a.send, a.recv, 0, n)
    p.join()
    pc.emit("pipe_rtt_p50", "multiprocessing.Pipe", pc.percentile(samples, 0.5), "us", "lower")
    pc.emit("pipe_rtt_p99", "multiprocessing.Pipe", pc.percentile(samples, 0.99), "us", "lower")

    a, b = mp.Pipe()
    p = mp.Process(target=echo_conn, args=(b, n + 1))
    p.start()
    samples = round_trips(a.send, a.recv, b"p" * 4096, n)
    p.join()
    pc.emit("pipe_rtt_4KiB_p50", "multiprocessing.Pipe (4 KiB bytes)",
            pc.percentile(samples, 0.5), "us", "lower")

    if pc.nproc() > 1:
        # This process on CPU 0, the echo child on CPU 1 (bench_pipe's fixed
        # cross-CPU placement); the affinity is restored afterwards.
        saved = os.sched_getaffinity(0)
        a, b = mp.Pipe()
        p = mp.Process(target=echo_conn_on, args=(1, b, n + 1))
        p.start()
        os.sched_setaffinity(0, {0})
        samples = round_trips(a.send, a.recv, 0, n)
        os.sched_setaffinity(0, saved)
        p.join()
        pc.emit("pipe_rtt_cross_cpu_p50", "multiprocessing.Pipe, CPUs 0|1",
                pc.percentile(samples, 0.5), "us", "lower")

    reps = 2 if args.quick else 5
    a, b = mp.Pipe()
    p = mp.Process(target=send_big, args=(b, reps))
    p.start()
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a.send(0)
        a.recv_bytes()
        ms.append((time.perf_counter() - t0) * 1e3)
    p.join()
    ms.sort()
    pc.emit("pipe_64MiB_ms", "multiprocessing.Pipe (one 64 MiB bytes message)",
            pc.percentile(ms, 0.5), "ms", "lower")

    n = 20_000 if args.quick else 200_000
    a, b = mp.Pipe(duplex=False)
    p = mp.Process(target=send_conn, args=(b, n))
    t0 = time.perf_counter()
    p.start()
    for _ in range(n):
        a.recv()
    secs = time.perf_counter() - t0
    p.join()
    pc.emit("pipe_tput", "multiprocessing.Pipe (one way)", n / secs, "msgs/s", "higher", msgs=n)


if __name__ == "__main__":
    pc.main({"queue": group_queue, "pipe": group_pipe})
